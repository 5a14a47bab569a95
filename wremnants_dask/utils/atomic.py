"""Atomic file output: write to a temporary file beside the target, then rename.

A crash or an exception mid-write never leaves a half-written output behind, and an
existing file at the target path is only replaced once the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_TMP_TAG = "pid"


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of ``target`` left by writers that no longer run (killed
    runs: ``kill -9`` gives no chance to clean up). Returns what was removed.

    Only files named by ``atomic_path`` for this target whose process id is not alive on this
    machine are removed; a file of a live writer (another run) is left alone."""
    target = Path(target)
    removed = []
    prefix = f".{target.name}.{_TMP_TAG}"
    try:
        candidates = [p for p in target.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for p in candidates:
        pid = p.name[len(prefix) :].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success.

    The caller writes the file at the yielded path with any library (h5py, uproot, json...).
    On an exception the temporary file is removed and the target is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        # the writer's process id in the name: a later run can tell (and remove) what a
        # killed run left behind (see ``remove_stale_temporaries``)
        prefix=f".{target.name}.{_TMP_TAG}{os.getpid()}.",
        suffix=suffix if suffix is not None else ".tmp",
        dir=target.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    # Libraries such as uproot.recreate refuse nothing, but h5py "w-" would: start from no file.
    tmp_path.unlink()
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(target: str | os.PathLike, data: bytes, suffix: str | None = None) -> Path:
    """Write ``data`` to ``target`` atomically (flushed to disk before the rename).

    An error of the file system (full disk, quota, read-only) is an ``OSError`` naming the
    target; the temporary file is removed and an existing target is left untouched."""
    try:
        with atomic_path(target, suffix) as tmp, open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise OSError(
            err.errno, f"{target}: cannot write the output ({err.strerror or err})"
        ) from None
    return Path(target)


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``target`` atomically and return the target path."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)
