"""Provenance metadata carried by every output file.

Each output records how it was made (command line, arguments, git state including the diff,
package versions, time, host) and the provenance of its inputs, so that any number can be
traced back to the command chain that produced it.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

_PACKAGES = (
    "wremnants_dask",
    "numpy",
    "scipy",
    "awkward",
    "dask",
    "dask-awkward",
    "distributed",
    "uproot",
    "hist",
    "boost-histogram",
    "jax",
    "jaxlib",
    "pyhf",
    "h5py",
    "correctionlib",
    "numba",  # the compiled fill kernels
    "isal",  # ZLIB of the input baskets and of generated files (fast_zlib)
)

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=_REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_state() -> dict[str, Any]:
    """The git hash, whether the tree is dirty, and the full diff against HEAD."""
    head = _git("rev-parse", "HEAD")
    if head is None:
        return {"hash": None, "dirty": None, "diff": ""}
    diff = _git("diff", "HEAD") or ""
    return {"hash": head.strip(), "dirty": bool(diff.strip()), "diff": diff}


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    versions = {}
    for name in (*_PACKAGES, *extra):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    versions["python"] = platform.python_version()
    return versions


def make_metadata(
    args: dict[str, Any] | None = None,
    *,
    input_files: list[str] | None = None,
    inputs_metadata: list[dict[str, Any]] | None = None,
    stage: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A JSON-serialisable provenance record for one stage of the analysis chain.

    ``inputs_metadata`` holds the records of the files this stage read, so the chain of
    commands that led to an output is kept in the output itself.
    """
    meta: dict[str, Any] = {
        "stage": stage,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "argv": list(sys.argv),
        "args": _jsonable(args or {}),
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "user": _safe_user(),
        "git": git_state(),
        "versions": package_versions(),
        "input_files": list(input_files or []),
    }
    if inputs_metadata:
        meta["inputs"] = inputs_metadata
    meta.update(_jsonable(extra))
    return meta


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes: which input (a payload, a config) a result was made with."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _safe_user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:
        return None


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON, turning paths, numpy scalars and sets into plain values."""
    return json.loads(json.dumps(obj, default=_default))


def _default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "__dict__"):
        return {k: v for k, v in vars(o).items() if not k.startswith("_")}
    return str(o)


def dumps(meta: dict[str, Any]) -> str:
    return json.dumps(meta, indent=1, sort_keys=False, default=_default)
