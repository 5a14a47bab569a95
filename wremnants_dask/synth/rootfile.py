"""Chunked, atomic NanoAOD writing with uproot (Events and Runs trees).

uproot writes the counter of a jagged branch as int32; real NanoAOD counters (``nMuon``) are
uint32, so the counter dtype is switched to uint32 while the tree is declared. Each ``extend``
appends one basket per branch, so memory stays at one chunk whatever the file size.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot
import uproot.writing._cascadetree as _cascadetree

from wremnants_dask.utils.atomic import atomic_path
from wremnants_dask.utils.fast_zlib import zlib_compression

from .chunk import EventChunk, offsets_of

_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def _uint32_counters() -> Iterator[None]:
    """Declare generated counter branches (nX) as uint32, as in CMS NanoAOD."""
    original = _cascadetree.Tree._branch_np

    def branch_np(self, name, btype, bdtype, counter=None, kind="normal"):
        if kind == "counter":
            btype = bdtype = np.dtype(np.uint32)
        return original(self, name, btype, bdtype, counter=counter, kind=kind)

    with _PATCH_LOCK:
        _cascadetree.Tree._branch_np = branch_np
        try:
            yield
        finally:
            _cascadetree.Tree._branch_np = original


def _collection_array(counts: np.ndarray, fields: dict[str, np.ndarray]) -> ak.Array:
    off = ak.index.Index64(offsets_of(counts))
    if list(fields) == [""]:
        content = ak.contents.NumpyArray(fields[""])
    else:
        content = ak.contents.RecordArray(
            [ak.contents.NumpyArray(v) for v in fields.values()], list(fields)
        )
    return ak.Array(ak.contents.ListOffsetArray(off, content))


def chunk_to_uproot(chunk: EventChunk) -> dict[str, Any]:
    data: dict[str, Any] = dict(chunk.scalars)
    for name, (counts, fields) in chunk.collections.items():
        data[name] = _collection_array(counts, fields)
    return data


def _types(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in data.items()}


class NanoAODWriter:
    """Context manager writing one NanoAOD file atomically: ``extend`` Events, ``runs``."""

    def __init__(self, path: str | os.PathLike, compression: Any = None, n_chunks: int = 1) -> None:
        self.path = Path(path)
        # room for one basket per chunk: uproot re-declares the tree when it runs out
        self._capacity = max(10, n_chunks + 1)
        self.compression = compression if compression is not None else zlib_compression(1)
        self._events = None
        self.n_events = 0

    def __enter__(self) -> NanoAODWriter:
        self._atomic = atomic_path(self.path, suffix=".root.tmp")
        tmp = self._atomic.__enter__()
        self._file = uproot.recreate(tmp, compression=self.compression)
        return self

    def _tree(self, name: str, data: dict[str, Any]):
        with _uint32_counters():
            return self._file.mktree(name, _types(data), initial_basket_capacity=self._capacity)

    def extend(self, chunk: EventChunk) -> None:
        """Append a chunk to the Events tree (declared from the first chunk)."""
        data = chunk_to_uproot(chunk)
        if self._events is None:
            self._events = self._tree("Events", data)
        if chunk.n:
            self._events.extend(data)
            self.n_events += chunk.n

    def runs(self, chunk: EventChunk) -> None:
        """Write the Runs tree (one entry per run)."""
        data = chunk_to_uproot(chunk)
        tree = self._tree("Runs", data)
        if chunk.n:
            tree.extend(data)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._file.close()
        finally:
            self._atomic.__exit__(exc_type, exc, tb)
