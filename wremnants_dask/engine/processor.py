"""The Processor API: what an analysis writes, and the per-chunk objects it is given.

An analysis subclasses :class:`Processor`, declares its histograms per dataset
(:meth:`Processor.histograms`) and fills them chunk by chunk (:meth:`Processor.process`).
The engine (``engine.py``) calls ``process`` once per chunk of events inside one blockwise
dask-awkward layer, after a trace without data (awkward typetracer) has found the branches the
processor touches; only those are read.

``events`` is an :class:`Events` view over the chunk's flat NanoAOD branches: ``events.Muon.pt``
is the branch ``Muon_pt``, ``events.HLT.IsoMu24`` is ``HLT_IsoMu24``, ``events.genWeight`` is
``genWeight``. Collections are lazy views (no ``ak.zip`` per chunk): masking a collection
(``events.Muon[events.Muon.pt > 25]``) records the mask and applies it to the fields that are
actually used. ``Collection.zip()`` builds a real record array when one is needed.

Code in ``process`` must be vectorised awkward/numpy code without Python branches on data
values, because the column trace runs it on arrays without data (``out.tracing`` is True then).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import awkward as ak
import numpy as np

from wremnants_dask.engine.cutflow import CutFlow
from wremnants_dask.engine.tensorhist import TensorHist, is_typetracer

__all__ = [
    "ChunkOutput",
    "ChunkResult",
    "Collection",
    "Events",
    "Processor",
    "ProcessorError",
    "touch",
]


class ProcessorError(RuntimeError):
    """A processor misbehaved (unknown histogram, failure while tracing); names the processor."""


def touch(*arrays: Any) -> None:
    """Mark awkward arrays as used during the column trace (no-op on real data)."""
    for a in arrays:
        if is_typetracer(a):
            ak.typetracer.touch_data(a)


class Events:
    """Lazy view of one chunk: attribute access maps NanoAOD names to flat branches.

    ``events.X`` is the branch ``X`` if it exists, else the collection of branches ``X_*``.
    ``events[mask]`` applies an event-level mask lazily to everything read afterwards.
    """

    __slots__ = ("_array", "_cache", "_fields", "_masks", "_prefixes", "tracing")

    def __init__(self, array: ak.Array, *, tracing: bool = False, masks: tuple = ()) -> None:
        self._array = array
        self._fields = frozenset(array.fields)
        self._masks = masks
        self._cache: dict[str, Any] = {}
        self._prefixes: set[str] | None = None
        self.tracing = tracing

    @property
    def fields(self) -> list[str]:
        """All branch names in the chunk (the trace sees every branch of the file)."""
        return list(self._array.fields)

    @property
    def array(self) -> ak.Array:
        """The underlying record array of flat branches (masks not applied)."""
        return self._array

    def has(self, name: str) -> bool:
        """True if ``name`` is a branch or a collection prefix present in the file."""
        return name in self._fields or name in self._collection_prefixes()

    def _collection_prefixes(self) -> set[str]:
        if self._prefixes is None:
            self._prefixes = {f.split("_", 1)[0] for f in self._fields if "_" in f}
        return self._prefixes

    def branch(self, name: str) -> Any:
        """The flat branch ``name`` with this view's event masks applied."""
        if name in self._cache:
            return self._cache[name]
        if name not in self._fields:
            raise KeyError(f"no branch {name!r} in the events")
        arr = self._array[name]
        for m in self._masks:
            arr = arr[m]
        self._cache[name] = arr
        return arr

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name in self._fields:
            return self.branch(name)
        if name in self._collection_prefixes():
            return Collection(self, name)
        raise AttributeError(f"no branch or collection {name!r} in the events")

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return getattr(self, key)
        return Events(self._array, tracing=self.tracing, masks=(*self._masks, key))

    def __len__(self) -> int:
        if self.tracing:
            raise TypeError("len(events) is unknown while tracing columns; use vectorised code")
        if self._masks:
            return len(self.branch(next(iter(self._fields))))
        return len(self._array)


class Collection:
    """Lazy view of the branches ``prefix_*`` with an ordered list of masks/slices."""

    __slots__ = ("_cache", "_events", "_mask_cache", "_prefix", "_selections")

    def __init__(
        self,
        events: Events,
        prefix: str,
        selections: tuple = (),
        mask_cache: dict[int, Any] | None = None,
    ) -> None:
        self._events = events
        self._prefix = prefix
        self._selections = selections
        self._cache: dict[str, Any] = {}
        # Per-mask work shared by all fields (flat mask, new offsets), keyed by id(mask);
        # shared with sub-collections, which hold their masks alive in ``_selections``.
        self._mask_cache: dict[int, Any] = {} if mask_cache is None else mask_cache

    @property
    def fields(self) -> list[str]:
        p = self._prefix + "_"
        return [f[len(p) :] for f in self._events.fields if f.startswith(p)]

    @property
    def counts(self) -> Any:
        """Objects per event after this view's selections (reads ``n<prefix>`` when unselected)."""
        counter = "n" + self._prefix
        if not self._selections and self._events.has(counter):
            return self._events.branch(counter)
        first = self.fields[0]
        return ak.num(getattr(self, first), axis=1)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name in self._cache:
            return self._cache[name]
        branch = f"{self._prefix}_{name}"
        try:
            arr = self._events.branch(branch)
        except KeyError:
            raise AttributeError(f"collection {self._prefix!r} has no field {name!r}") from None
        for s in self._selections:
            arr = _select(arr, s, self._mask_cache)
        self._cache[name] = arr
        return arr

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return getattr(self, key)
        return Collection(self._events, self._prefix, (*self._selections, key), self._mask_cache)

    def zip(self, *fields: str) -> ak.Array:
        """A record array of the given fields (all fields when none are given)."""
        names = list(fields) or self.fields
        return ak.zip({n: getattr(self, n) for n in names})

    def __repr__(self) -> str:
        return f"Collection({self._prefix!r}, selections={len(self._selections)})"


def _select(arr: Any, sel: Any, cache: dict[int, Any]) -> Any:
    """``arr[sel]``, with a numpy fast path for a jagged boolean mask of the same lists.

    Every field of a masked collection is cut by the same per-object mask; awkward's general
    slicing redoes the mask -> index conversion for each field (the larger part of the
    processing time of a simple selection). Here the flat mask and the new offsets are
    computed once per mask and applied to each field's flat content.
    """
    if not isinstance(arr, ak.Array) or not isinstance(sel, ak.Array):
        return arr[sel]
    al, ml = arr.layout, sel.layout
    if not (
        isinstance(al, ak.contents.ListOffsetArray)
        and isinstance(ml, ak.contents.ListOffsetArray)
        and isinstance(al.content, ak.contents.NumpyArray)
        and isinstance(ml.content, ak.contents.NumpyArray)
        and ml.content.dtype == np.bool_
        and al.content.data.ndim == 1
        and ak.backend(arr) == "cpu"
        and ak.backend(sel) == "cpu"
    ):
        return arr[sel]
    done = cache.get(id(sel))
    if done is None:
        mo = np.asarray(ml.offsets.data)
        flat = np.asarray(ml.content.data)[mo[0] : mo[-1]]
        kept = np.empty(len(flat) + 1, dtype=np.int64)
        kept[0] = 0
        np.cumsum(flat, out=kept[1:])
        done = cache[id(sel)] = (sel, mo, flat, kept[mo - mo[0]])
    _, mo, flat, new_offsets = done
    ao = np.asarray(al.offsets.data)
    if ao is not mo and not np.array_equal(ao, mo):
        return arr[sel]  # different lists: awkward reports the error or handles the broadcast
    content = np.asarray(al.content.data)[ao[0] : ao[-1]][flat]
    layout = ak.contents.ListOffsetArray(
        ak.index.Index64(new_offsets),
        ak.contents.NumpyArray(content, parameters=al.content.parameters),
        parameters=al.parameters,
    )
    return ak.Array(layout, behavior=arr.behavior, attrs=arr.attrs)


@dataclass
class ChunkResult:
    """What one chunk (or a merge of chunks) produces; merged by the tree reduction."""

    hists: dict[str, TensorHist]
    cutflows: dict[str, CutFlow] = field(default_factory=dict)
    n_events: int = 0
    sumw: float = 0.0
    sumw2: float = 0.0
    # chunks that could not be read and were skipped (``ChunkReadError.record()`` each)
    lost: list[dict] = field(default_factory=list)

    def __iadd__(self, other: ChunkResult) -> ChunkResult:
        for name, h in other.hists.items():
            if name in self.hists:
                self.hists[name] += h
            else:
                self.hists[name] = h.copy()
        for name, cf in other.cutflows.items():
            if name in self.cutflows:
                self.cutflows[name] += cf
            else:
                self.cutflows[name] = cf.copy()
        self.n_events += other.n_events
        self.sumw += other.sumw
        self.sumw2 += other.sumw2
        self.lost = [*self.lost, *other.lost]
        return self

    def copy(self) -> ChunkResult:
        return ChunkResult(
            {k: h.copy() for k, h in self.hists.items()},
            {k: c.copy() for k, c in self.cutflows.items()},
            self.n_events,
            self.sumw,
            self.sumw2,
            list(self.lost),
        )


# Distinct (value arrays, axes) bin indices kept per chunk: bounds the memory of the cache.
_INDEX_CACHE_SIZE = 16


def _flat_numpy(v: Any) -> Any:
    """Zero-copy numpy view of a flat awkward array (others are returned unchanged)."""
    if isinstance(v, ak.Array) and v.ndim == 1:
        try:
            return ak.to_numpy(v, allow_missing=False)
        except Exception:  # option types etc.: leave them to TensorHist for the error message
            return v
    return v


def _buffer_key(a: Any) -> tuple:
    """Identity of an array's data: numpy views of the same memory and layout share it."""
    if isinstance(a, np.ndarray):
        return (a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str)
    return ("id", id(a))


class ChunkOutput:
    """Handed to ``Processor.process``: the dataset's metadata and the histograms to fill."""

    def __init__(self, dataset: Any, hists: Mapping[str, TensorHist], *, tracing: bool = False):
        self.dataset = dataset
        self.hists = dict(hists)
        self.cutflows: dict[str, CutFlow] = {}
        self.tracing = tracing
        self._index_cache: dict[tuple, list[tuple[Any, tuple, Any]]] = {}
        self._index_order: list[tuple] = []

    @property
    def is_data(self) -> bool:
        return bool(self.dataset.is_data)

    def fill(self, name: str, *values: Any, weight: Any = None, tensor: Any = None) -> None:
        """Fill the declared histogram ``name`` (see ``TensorHist.fill`` for the arguments).

        The flat bin index is computed once per set of value arrays and reused by every
        histogram of the chunk filled with the same arrays and equal axes (nominal, PDF,
        scale...), so value arrays must not be modified in place between fills of a chunk.
        """
        h = self.hists.get(name)
        if h is None:
            raise ProcessorError(
                f"fill of undeclared histogram {name!r} (dataset {self.dataset.name!r}); "
                f"declared: {sorted(self.hists)}"
            )
        if len(values) != len(h.axes):
            raise ProcessorError(
                f"histogram {name!r}: {len(values)} value arrays for axes "
                f"{[a.name for a in h.axes]}"
            )
        if self.tracing:
            touch(*values, weight, tensor)
            return
        h.fill(*values, weight=weight, tensor=tensor, index=self._bin_index(h, values))

    def _bin_index(
        self, h: TensorHist, values: tuple[Any, ...]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``h.bin_index(*values)``, cached by the identity of the value buffers and the axes."""
        arrays = tuple(_flat_numpy(v) for v in values)
        key = tuple(_buffer_key(a) for a in arrays)
        for axes, _held, index in self._index_cache.get(key, ()):
            if axes is h.axes or axes == h.axes:
                return index
        index = h.bin_index(*arrays)
        # The arrays are held so that their buffers (the key) cannot be reused by others.
        entries = self._index_cache.setdefault(key, [])
        entries.append((h.axes, arrays, index))
        self._index_order.append(key)
        if len(self._index_order) > _INDEX_CACHE_SIZE:
            old = self._index_order.pop(0)
            olds = self._index_cache.get(old)
            if olds:
                olds.pop(0)
                if not olds:
                    del self._index_cache[old]
        return index

    def cutflow(self, name: str = "main") -> CutFlow:
        """The cut flow ``name`` of this chunk (created on first use)."""
        cf = self.cutflows.get(name)
        if cf is None:
            cf = self.cutflows[name] = CutFlow(name, tracing=self.tracing)
        return cf


class Processor:
    """Base class of an analysis. Subclasses implement ``histograms`` and ``process``.

    Constructed once per run with ``systematics`` (False for ``--no-systematics``) and free
    keyword options; it must be picklable (it travels to the workers). One instance serves all
    datasets: per-dataset behaviour uses the ``dataset`` argument (``dataset.is_data``,
    ``dataset.name``, ``dataset.group``, ``dataset.xsec_pb``, ``dataset.era``).
    """

    name: ClassVar[str] = "processor"
    # How the analysis becomes a fit is not the processor's: configs/fit_<name>.yaml
    # (wremnants_dask.fitsetup.config) names the histogram, axes, region and systematics.

    def __init__(self, *, systematics: bool = True, **options: Any) -> None:
        self.systematics = systematics
        self.options = options

    def analysis_metadata(self) -> dict[str, Any]:
        """JSON-able facts later stages need about this run's analysis (written into the
        output's metadata), e.g. the boson masses the simulation is centred on."""
        return {}

    def dataset_metadata(self, dataset: Any) -> dict[str, Any]:
        """JSON-able facts about how this dataset was read (written with its results), e.g.
        which branch of its files held each input. Called once per dataset, after declaring."""
        return {}

    def histograms(self, dataset: Any) -> Mapping[str, TensorHist] | Iterable[TensorHist]:
        """Declare the (empty) histograms to fill for ``dataset``."""
        raise NotImplementedError(f"{type(self).__name__} must implement histograms(dataset)")

    def process(self, events: Events, out: ChunkOutput) -> None:
        """Select, correct and fill one chunk: ``out.fill(name, *values, weight=, tensor=)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement process(events, out)")

    # ---------------------------------------------------------------- used by the engine
    def declared(self, dataset: Any) -> dict[str, TensorHist]:
        """``histograms(dataset)`` as a name -> TensorHist dict, checked."""
        hs = self.histograms(dataset)
        if isinstance(hs, Mapping):
            out = dict(hs)
            for name, h in out.items():
                if h.name is None:
                    h.name = name
        else:
            out = {}
            for h in hs:
                if not h.name:
                    raise ProcessorError(f"{type(self).__name__}: every histogram needs a name")
                if h.name in out:
                    raise ProcessorError(
                        f"{type(self).__name__}: histogram {h.name!r} declared twice"
                    )
                out[h.name] = h
        for name, h in out.items():
            if not isinstance(h, TensorHist):
                raise ProcessorError(
                    f"{type(self).__name__}: histogram {name!r} is {type(h).__name__}, "
                    "expected tensorhist.TensorHist"
                )
        return out


def event_weight_sums(events: Events, dataset: Any) -> tuple[Any, Any]:
    """Sum of genWeight and of its square in the chunk (MC only; data gives None)."""
    if dataset.is_data or not events.has("genWeight"):
        return None, None
    w = events.branch("genWeight")
    if events.tracing:
        touch(w)
        return None, None
    w = np.asarray(ak.to_numpy(w), dtype=np.float64)
    return float(w.sum()), float((w * w).sum())
