"""A content-keyed cache of generated samples.

A generator spec (plus the generator version) is hashed; its output lives in
``<cache>/<label>-<hash>/`` together with a ``manifest.json`` listing the produced files. The
output is built in a hidden temporary folder and renamed into place only when complete, under an
exclusive file lock, so an interrupted run never leaves a half cache and two concurrent runs
never build the same entry twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST", "cache_dir", "cached_build", "spec_key"]

MANIFEST = "manifest.json"
_ENV = "WREMNANTS_DASK_CACHE"
# Read once: os.umask can only be read by setting it, which races with other threads' writes.
_UMASK = os.umask(0)
os.umask(_UMASK)


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache root: ``override``, else ``$WREMNANTS_DASK_CACHE``, else ~/.cache/wremnants_dask."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "wremnants_dask"


def spec_key(spec: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable spec."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def cached_build(
    spec: dict[str, Any],
    build: Callable[[Path], dict[str, Any]],
    *,
    label: str = "sample",
    root: str | os.PathLike | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Return (folder, manifest) of the cache entry for ``spec``, building it on first use.

    ``build(tmpdir)`` writes the outputs into ``tmpdir`` and returns a JSON-serialisable dict
    whose paths are relative to ``tmpdir``; it is stored as the manifest's ``outputs`` next to
    the spec. The entry is valid only once its manifest exists, and the manifest is written last
    before the folder is renamed into place.
    """
    root = cache_dir(root)
    key = spec_key(spec)
    safe_label = re.sub(r"[^A-Za-z0-9_.-]", "_", label)
    final = root / f"{safe_label}-{key}"
    manifest = _read_manifest(final)
    if manifest is not None:
        return final, manifest
    with _locked(root / f".{safe_label}-{key}.lock"):
        manifest = _read_manifest(final)
        if manifest is not None:  # built by another process while we waited
            return final, manifest
        # Leftovers of interrupted builds of this key: nobody else holds the lock, remove them.
        for stale in root.glob(f".{safe_label}-{key}.tmp*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # a folder without manifest: an older, broken entry
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{safe_label}-{key}.tmp", dir=root))
        tmp.chmod(0o777 & ~_UMASK)  # mkdtemp makes it private; a cache may be shared
        try:
            outputs = build(tmp)
            manifest = {"spec": spec, "key": key, "outputs": outputs}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str))
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final, manifest
