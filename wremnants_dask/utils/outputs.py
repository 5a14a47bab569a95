"""Checks of an output location before a long computation: a run whose output cannot be
written must fail in seconds, not after the computation (issue 17: read-only folders, paths
under a regular file and full disks were only found at the end)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from wremnants_dask.utils.atomic import remove_stale_temporaries

__all__ = ["OutputError", "check_free_space", "check_output_location"]

#: Room kept free beyond the estimate (metadata, file system blocks, other writers).
FREE_SPACE_MARGIN = 1.25


class OutputError(OSError):
    """The output cannot be written there; the message names the path."""


def check_output_location(target: str | os.PathLike) -> Path:
    """Make sure a file can be created at ``target``: its folder exists or can be made, is a
    folder, and accepts a new file (probed by creating and removing one; permission bits say
    nothing for root or on read-only mounts). Also removes what killed runs left there."""
    target = Path(target)
    folder = target.parent
    for up in (folder, *folder.parents):
        if up.exists():
            if not up.is_dir():
                raise OutputError(f"{target}: {up} is a file, not a folder")
            break
    if target.is_dir():
        raise OutputError(f"{target}: is a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{target}: cannot write in {folder} ({err.strerror or err})") from None
    with contextlib.suppress(OSError):
        remove_stale_temporaries(target)
    return target


def check_free_space(target: str | os.PathLike, need_bytes: int) -> None:
    """Fail if the file system of ``target`` has less free space than ``need_bytes`` (times a
    margin); ``need_bytes`` is an upper estimate of the output size."""
    target = Path(target)
    free = shutil.disk_usage(target.parent).free
    if free < need_bytes * FREE_SPACE_MARGIN:
        raise OutputError(
            f"{target}: {free / 1e6:.1f} MB free in {target.parent}, the output needs up to "
            f"{need_bytes / 1e6:.1f} MB"
        )
