"""Events with exactly one object passing a per-object cut, on flat numpy buffers.

"Exactly one good muon" written with awkward (a jagged mask from three jagged ufuncs, the
masked collection, ``ak.num``, then ``ak.flatten(mu.x[sel])`` per field) makes about twenty
passes through awkward's broadcasting per chunk; on a light analysis they were most of the
processing time (issue 17, "Scale"). Here the cut runs on the flat contents of the fields
(numpy), the count per event is a cumulative sum read at the offsets, and each field of the
selected object is one gather. Results are exactly those of the awkward code: the same numpy
ufuncs see the same values, and gathers copy values.

The same user code also runs on the column trace and on layouts the fast path does not model
(masked events, option types): ``cut`` then sees the jagged awkward fields and every step is
the awkward expression it replaces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import awkward as ak
import numpy as np

from wremnants_dask.engine.bin_lookup import HAVE_NUMBA
from wremnants_dask.engine.tensorhist import is_typetracer

if HAVE_NUMBA:
    import numba

__all__ = ["Rows", "SingleObject", "as_numpy"]


def as_numpy(x: Any) -> Any:
    """A flat awkward array as a zero-copy numpy array; typetracers and others pass through.

    Event-level arithmetic and masks on numpy skip awkward's per-call dispatch, while the
    column trace (typetracers) still runs the same expression through awkward."""
    if isinstance(x, ak.Array) and not is_typetracer(x) and x.ndim == 1:
        layout = x.layout
        if isinstance(layout, ak.contents.NumpyArray) and layout.data.ndim == 1:
            return np.asarray(layout.data)
    return x


class Rows:
    """The rows of an event mask, found once and applied to several arrays: ``Rows(sel)(x)``
    is ``x[sel]``.

    numpy's boolean indexing of a 200k-event chunk with a scattered mask costs ~3.5 ms per
    array (measured); the row numbers (``flatnonzero``) once and a ``take`` per array give the
    same values in ~0.6 ms. Typetracers and awkward arrays are indexed with the mask itself.
    """

    def __init__(self, sel: Any) -> None:
        self.sel = sel
        mask = as_numpy(sel)
        self.index = np.flatnonzero(mask) if isinstance(mask, np.ndarray) else None

    def __call__(self, x: Any) -> Any:
        if self.index is not None and isinstance(x, np.ndarray):
            return x.take(self.index, axis=0)
        return x[self.sel]


def _flat_parts(arr: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(offsets rebased to 0, content) of a plain jagged numeric array, else None."""
    if not isinstance(arr, ak.Array) or is_typetracer(arr):
        return None
    layout = arr.layout
    if not (
        isinstance(layout, ak.contents.ListOffsetArray)
        and isinstance(layout.content, ak.contents.NumpyArray)
        and layout.content.data.ndim == 1
        and ak.backend(arr) == "cpu"
    ):
        return None
    off = np.asarray(layout.offsets.data)
    content = np.asarray(layout.content.data)[off[0] : off[-1]]
    return (off - off[0] if off[0] else off), content


class _FlatView:
    """Attribute access to the flat contents of a collection's fields (all with one set of
    offsets); records a field that is not a plain jagged array, or has other offsets."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.offsets: np.ndarray | None = None
        self.unsupported = False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        arr = getattr(self._collection, name)
        parts = _flat_parts(arr)
        if parts is None:
            self.unsupported = True
            return arr
        off, content = parts
        if self.offsets is None:
            self.offsets = off
        elif off is not self.offsets and not np.array_equal(off, self.offsets):
            self.unsupported = True
        return content


class SingleObject:
    """The events of a chunk with exactly one object of ``collection`` passing ``cut``.

    ``cut(c)`` builds the per-object mask from ``c.<field>`` with elementwise operations only
    (comparisons, ``abs``, ``&``, ``|``, arithmetic); ``c.<field>`` is the flat numpy content
    on real data and the jagged awkward field otherwise, so the expression means the same in
    both. ``one`` is the event mask; ``values(field, sel)`` is the field of the selected
    object for the events of ``sel`` (a subset of ``one``), i.e.
    ``ak.flatten(collection[good].<field>[sel])``.
    """

    def __init__(self, collection: Any, cut: Callable[[Any], Any]) -> None:
        self._collection = collection
        self._last: tuple[Any, np.ndarray] | None = None  # (event mask, its gather index)
        view = _FlatView(collection)
        try:
            good = cut(view)
        except Exception:
            if not view.unsupported:  # the cut itself is at fault: its own error
                raise
        if view.unsupported or view.offsets is None:
            # the awkward expression (column trace, other layouts); the count of good objects
            # touches only the fields the cut reads
            self._fast = False
            good = cut(collection)
            self._selected = collection[good]
            self.one = ak.sum(good, axis=1) == 1
            return
        self._fast = True
        off = view.offsets
        good = np.asarray(good, dtype=np.bool_)
        self._offsets = off
        self._good = good
        # per event: exactly one good object, and the flat position of its first good one
        self.one, self._first = _one_and_first(off, good)

    @property
    def fast(self) -> bool:
        """True when the flat numpy path is used."""
        return self._fast

    def values(self, field: str, sel: Any) -> Any:
        """``field`` of the selected object for each event of ``sel`` (subset of ``one``)."""
        if not self._fast:
            return ak.flatten(getattr(self._selected, field)[sel])
        index = self._index(sel, field)
        parts = _flat_parts(getattr(self._collection, field))
        if parts is None or not np.array_equal(parts[0], self._offsets):
            good = ak.Array(
                ak.contents.ListOffsetArray(
                    ak.index.Index64(self._offsets), ak.contents.NumpyArray(self._good)
                )
            )
            return ak.flatten(getattr(self._collection, field)[good][sel])
        return parts[1].take(index)

    def _index(self, sel: Any, field: str) -> np.ndarray:
        """Positions of the selected objects in the flat contents, once per event mask."""
        if self._last is not None and self._last[0] is sel:
            return self._last[1]
        mask = np.asarray(as_numpy(sel), dtype=np.bool_)
        if len(mask) != len(self.one) or (mask & ~self.one).any():
            raise ValueError(
                f"SingleObject.values({field!r}): the event mask must select events with "
                "exactly one object (a subset of .one) of this chunk"
            )
        index = self._first.take(np.flatnonzero(mask))
        self._last = (sel, index)  # holds ``sel``: its identity cannot be reused meanwhile
        return index


def _one_and_first_numpy(off: np.ndarray, good: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(exactly one good object, flat position of the first good one or -1) per event."""
    below = np.zeros(len(good) + 1, dtype=np.int64)  # good objects before each position
    np.cumsum(good, out=below[1:])
    at = below.take(off)  # good objects before each event boundary
    n_good = at[1:] - at[:-1]
    positions = np.append(np.flatnonzero(good), -1)  # rank -> position; past the end: -1
    first = np.where(n_good > 0, positions.take(np.minimum(at[:-1], len(positions) - 1)), -1)
    return n_good == 1, first


if HAVE_NUMBA:

    @numba.njit(nogil=True, cache=True)
    def _one_and_first_kernel(off, good, one, first):  # pragma: no cover - compiled
        for e in range(off.shape[0] - 1):
            count = 0
            k = -1
            for j in range(off[e], off[e + 1]):
                if good[j]:
                    count += 1
                    if count == 1:
                        k = j
            one[e] = count == 1
            first[e] = k


def _one_and_first(off: np.ndarray, good: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One pass over the events when numba is there (half the selection's time), else numpy
    (a cumulative sum read at the offsets); both give the same arrays."""
    if not USE_KERNEL:
        return _one_and_first_numpy(off, good)
    n = len(off) - 1
    one, first = np.empty(n, dtype=np.bool_), np.empty(n, dtype=np.int64)
    _one_and_first_kernel(np.ascontiguousarray(off, dtype=np.int64), good, one, first)
    return one, first


# False: the numpy path (also where numba is missing); tests run both.
USE_KERNEL = HAVE_NUMBA


def warm() -> None:
    """Compile (or load from numba's cache) the kernel, as ``bin_lookup.warm`` does."""
    if USE_KERNEL:
        _one_and_first(np.zeros(2, np.int64), np.zeros(0, np.bool_))
