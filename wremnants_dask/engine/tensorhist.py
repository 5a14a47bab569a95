"""Histograms with tensor axes: one bin lookup per event, a whole weight tensor added at once.

A ``TensorHist`` has ordinary ``hist`` axes (looked up from per-event values) and *tensor axes*
(no lookup: each event carries a weight tensor, e.g. 103 PDF weights or a 2x48 grid of
efficiency variations). The flat bin index is computed once per event (compiled per axis kind,
``bin_lookup``; shared between the histograms of a chunk filled with the same values, see
``processor.ChunkOutput.fill``); with
numba a compiled kernel adds ``weight * tensor`` row by row without building the product,
prefetching the histogram rows of the next events for writing and their tensor rows
non-temporally (read once, they should not evict the histogram); without numba a single
``np.bincount`` over ``bin * ntensor + k`` does it. Filling 103 variations costs a small
multiple of the nominal fill instead of 103 fills; with large histograms the compiled fill is
bound by memory traffic (each event reads its tensor row and updates its bin's row, scattered
over a histogram larger than L2), see ``bench/bench_tensorfill.py``.

Storage is one C-ordered float64 array of shape ``(nbins, nslots, ntensor)``: ``nbins`` the
ordinary bins incl. flow (C order of the ordinary axes), slot 0 the sums of weights, slot 1 (only
for ``weight`` storage) the sums of squared weights, ``ntensor`` the flattened tensor cells. The
values and squares of one bin are thus one contiguous row of ``nslots * ntensor`` doubles (1.6 kB
for 103 PDF replicas), so each event updates one contiguous region. ``values()`` and
``variances()`` are views of shape ``(*extents, *tensor shape)`` (strided for ``weight``).
The accumulator is picklable and cheap to merge, so it works as the per-chunk partial result of
a dask graph; ``to_hist()`` gives the final ``hist.Hist`` with all axes, names and labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import awkward as ak
import hist
import numpy as np

from wremnants_dask.engine import bin_lookup

STORAGES = ("double", "weight")

try:  # optional compiled kernels: add each event's tensor row into its bin's contiguous row
    import numba
    from llvmlite import ir as _ir
    from numba.core import cgutils as _cgutils
    from numba.extending import intrinsic as _intrinsic

    def _make_prefetch(rw: int, locality: int) -> Any:
        """An intrinsic ``f(arr, idx)``: ``llvm.prefetch`` of the cache line of ``arr[idx]``.

        ``rw=1`` prefetches for writing, ``locality=0`` is a non-temporal prefetch. A hint: it
        never faults and never changes results.
        """

        @_intrinsic
        def _prefetch(typingctx: Any, arr: Any, idx: Any) -> Any:
            if not isinstance(arr, numba.types.Array) or not isinstance(idx, numba.types.Integer):
                return None
            sig = numba.types.void(arr, idx)

            def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
                aryty = signature.args[0]
                ary = context.make_array(aryty)(context, builder, args[0])
                i8p = _ir.IntType(8).as_pointer()
                elsize = context.get_abi_sizeof(context.get_data_type(aryty.dtype))
                index = context.cast(builder, args[1], signature.args[1], numba.types.intp)
                off = builder.mul(index, _ir.Constant(index.type, elsize))
                ptr = builder.gep(builder.bitcast(ary.data, i8p), [off])
                i32 = _ir.IntType(32)
                fnty = _ir.FunctionType(_ir.VoidType(), [i8p, i32, i32, i32])
                fn = _cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
                # (address, rw, locality, cache type=1: data)
                builder.call(
                    fn,
                    [ptr, _ir.Constant(i32, rw), _ir.Constant(i32, locality), _ir.Constant(i32, 1)],
                )
                return context.get_dummy_value()

            return sig, codegen

        return _prefetch

    # Histogram rows: for writing, into all cache levels.
    _prefetch_write = _make_prefetch(1, 3)
    # Tensor rows: read once, non-temporal, so that streaming the (n, k) tensor (400 MB for
    # 1M events x 103 float32) does not evict the histogram (20 MB) from the caches.
    _prefetch_stream = _make_prefetch(0, 0)

    @numba.njit(inline="always", nogil=True)
    def prefetch_lines(flat_arr: np.ndarray, start: int, count: int) -> None:
        """Prefetch for writing the 64-byte lines of ``flat_arr[start:start + count]`` (float64)."""
        for j in range(0, count, 8):
            _prefetch_write(flat_arr, start + j)
        _prefetch_write(flat_arr, start + count - 1)

    @numba.njit(inline="always", nogil=True)
    def _prefetch_tensor_row(tf: np.ndarray, start: int, count: int) -> None:
        """Non-temporal prefetch of ``tf[start:start + count]`` (float32 or float64)."""
        step = 64 // tf.itemsize
        for j in range(0, count, step):
            _prefetch_stream(tf, start + j)
        _prefetch_stream(tf, start + count - 1)

    @numba.njit(cache=True, nogil=True)
    def _rows_add(out: np.ndarray, flat: np.ndarray, w: np.ndarray, t: np.ndarray) -> None:
        """``out[flat[e], 0, :] += w[e] * t[e, :]``; events with ``flat < 0`` are skipped.

        ``out`` is the ``(nbins, 1, k)`` storage of a ``double`` histogram. ``w`` and ``t`` come
        separately so that ``w * t`` (n x k doubles) is never built. The fill is bound by
        memory: the histogram row of the event ``_AHEAD`` places ahead is prefetched for
        writing (rows are scattered over L3/DRAM), the tensor row ``_TENSOR_AHEAD`` places ahead
        non-temporally (it is read once).
        """
        k = t.shape[1]
        n = flat.shape[0]
        stride = out.shape[1] * k
        of = out.reshape(-1)
        tf = t.reshape(-1)
        for e in range(n):
            if e + _AHEAD < n and flat[e + _AHEAD] >= 0:
                prefetch_lines(of, flat[e + _AHEAD] * stride, k)
            if e + _TENSOR_AHEAD < n:
                _prefetch_tensor_row(tf, (e + _TENSOR_AHEAD) * k, k)
            b = flat[e]
            if b < 0:
                continue
            row = out[b, 0]
            te = t[e]
            we = w[e]
            for j in range(k):
                row[j] += we * np.float64(te[j])

    @numba.njit(cache=True, nogil=True)
    def _rows_add2(out: np.ndarray, flat: np.ndarray, w: np.ndarray, t: np.ndarray) -> None:
        """As ``_rows_add`` for ``weight`` storage ``(nbins, 2, k)``: sum and sum of squares.

        The values and the squares of a bin are one contiguous row of ``2k`` doubles, so each
        event reads its tensor row once and updates one contiguous region (1.6 kB for k=103)
        with ``x = w*t`` and ``x*x`` computed in registers.
        """
        k = t.shape[1]
        n = flat.shape[0]
        stride = out.shape[1] * k
        of = out.reshape(-1)
        tf = t.reshape(-1)
        for e in range(n):
            if e + _AHEAD < n and flat[e + _AHEAD] >= 0:
                prefetch_lines(of, flat[e + _AHEAD] * stride, 2 * k)
            if e + _TENSOR_AHEAD < n:
                _prefetch_tensor_row(tf, (e + _TENSOR_AHEAD) * k, k)
            b = flat[e]
            if b < 0:
                continue
            row = out[b, 0]
            row2 = out[b, 1]
            te = t[e]
            we = w[e]
            for j in range(k):
                x = we * np.float64(te[j])
                row[j] += x
                row2[j] += x * x

    @numba.njit(cache=True, nogil=True)
    def _bins_add(out: np.ndarray, flat: np.ndarray, w: np.ndarray, unit: bool) -> None:
        """``out[flat[e], 0, 0] += w[e]`` (and ``out[.., 1, 0] += w[e]**2`` for ``weight``
        storage): the scalar fill in one pass, where bincount needs a full-size result per
        slot and a squared-weight temporary. ``unit``: every weight is 1 (``w`` unused)."""
        squares = out.shape[1] == 2
        for e in range(flat.shape[0]):
            b = flat[e]
            if b < 0:
                continue
            we = 1.0 if unit else w[e]
            out[b, 0, 0] += we
            if squares:
                out[b, 1, 0] += we * we

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numpy fallback
    HAVE_NUMBA = False

_NO_WEIGHTS = np.ones(0)
# Events ahead whose histogram row is prefetched (measured in bench/bench_tensorfill.py).
_AHEAD = 4
# Events ahead whose tensor row is prefetched (non-temporally).
_TENSOR_AHEAD = 16
# Below this ratio of entries to bins, np.add.at into the accumulator beats allocating a
# full-size bincount result (measured in bench/bench_tensorfill.py).
_SPARSE_RATIO = 1.0 / 16.0


def warm_kernels() -> None:
    """Compile (or load from numba's cache) the fill kernels for the usual dtypes now."""
    if not HAVE_NUMBA:
        return
    flat = np.zeros(1, dtype=np.int64)
    w = np.ones(1)
    for dtype in (np.float32, np.float64):
        t = np.ones((1, 2), dtype=dtype)
        _rows_add(np.zeros((1, 1, 2)), flat, w, t)
        _rows_add2(np.zeros((1, 2, 2)), flat, w, t)
    for storage in ("double", "weight"):
        _bins_add(np.zeros((1, 2 if storage == "weight" else 1, 1)), flat, w, False)
    bin_lookup.warm()


def tensor_axis(
    name: str,
    size: int | None = None,
    *,
    labels: Sequence[str] | None = None,
    label: str | None = None,
) -> hist.axis.AxesMixin:
    """An axis for a tensor dimension: ``Integer(0, size)`` or ``StrCategory(labels)``, no flow.

    Tensor axes index the per-event weight tensor directly, so they must not have flow bins.
    """
    if labels is not None:
        if size is not None and size != len(labels):
            raise ValueError(f"tensor axis {name!r}: size {size} != {len(labels)} labels")
        return hist.axis.StrCategory(
            list(labels), name=name, label=label or name, growth=False, overflow=False
        )
    if size is None or size < 1:
        raise ValueError(f"tensor axis {name!r}: give a positive size or labels")
    return hist.axis.Integer(
        0, size, name=name, label=label or name, underflow=False, overflow=False
    )


def _extent(ax: Any) -> int:
    return int(ax.extent)


def _flow_offset(ax: Any) -> int:
    return 1 if ax.traits.underflow else 0


def _to_numpy_1d(x: Any, what: str) -> np.ndarray:
    if isinstance(x, ak.Array):
        if x.ndim != 1:
            raise ValueError(
                f"{what}: expected a flat (1D) array, got type {x.type}; flatten first"
            )
        x = ak.to_numpy(x)
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{what}: expected a 1D array, got shape {x.shape}")
    return x


def is_typetracer(x: Any) -> bool:
    """True for awkward arrays without data (the column trace runs processors on these)."""
    return isinstance(x, ak.Array) and ak.backend(x) == "typetracer"


class TensorHist:
    """Accumulator for a histogram with ordinary axes plus tensor axes (see module docstring)."""

    def __init__(
        self,
        axes: Sequence[Any],
        tensor_axes: Sequence[Any] = (),
        *,
        storage: str = "double",
        name: str | None = None,
        label: str | None = None,
    ) -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.axes = tuple(axes)
        self.tensor_axes = tuple(tensor_axes)
        for ax in self.axes:
            if ax.traits.growth:
                raise ValueError(
                    f"axis {ax.name!r}: growing axes are not supported (fixed layout needed)"
                )
        for ax in self.tensor_axes:
            if ax.traits.underflow or ax.traits.overflow or ax.traits.growth:
                raise ValueError(
                    f"tensor axis {ax.name!r} must have no flow bins and no growth; "
                    "build it with tensorhist.tensor_axis()"
                )
        names = [ax.name for ax in (*self.axes, *self.tensor_axes)]
        if any(not n for n in names) or len(set(names)) != len(names):
            raise ValueError(f"all axes need distinct non-empty names, got {names}")
        self.storage = storage
        self.name = name
        self.label = label
        self.shape = tuple(_extent(ax) for ax in self.axes)
        self.tensor_shape = tuple(ax.size for ax in self.tensor_axes)
        self.nbins = math.prod(self.shape)
        self.ntensor = math.prod(self.tensor_shape)
        self._strides = np.array(
            [math.prod(self.shape[i + 1 :]) for i in range(len(self.shape))], dtype=np.int64
        )
        # (nbins, nslots, ntensor): slot 0 the sums of weights, slot 1 (weight storage) the
        # sums of squares. Allocated on first fill: a chunk that fills nothing costs no memory.
        self._nslots = 2 if storage == "weight" else 1
        self._data: np.ndarray | None = None
        # bin_lookup.cached(axes) once found (False: none, the numpy path); picklable
        self._lookup: Any = None

    # ----------------------------------------------------------------- construction helpers
    def empty_like(self) -> TensorHist:
        """A new, empty accumulator with the same axes and storage."""
        return TensorHist(
            self.axes, self.tensor_axes, storage=self.storage, name=self.name, label=self.label
        )

    def copy(self) -> TensorHist:
        out = self.empty_like()
        if self._data is not None:
            out._data = self._data.copy()
        return out

    @property
    def size(self) -> int:
        """Number of storage cells (flow bins included) times the tensor size."""
        return self.nbins * self.ntensor

    # ------------------------------------------------------------------------- bin lookup
    def bin_index(self, *values: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Flat storage index (flow included) per event, and a mask of the events kept.

        Values outside an axis without the matching flow bin are dropped (mask False), as in
        ``hist``; the mask is None when every event is kept.
        """
        if len(values) != len(self.axes):
            raise ValueError(
                f"histogram {self.name!r}: {len(values)} value arrays for {len(self.axes)} axes "
                f"({[ax.name for ax in self.axes]})"
            )
        arrays = []
        for ax, v in zip(self.axes, values):
            v = _to_numpy_1d(v, f"histogram {self.name!r}, axis {ax.name!r}")
            if arrays and len(v) != len(arrays[0]):
                raise ValueError(
                    f"histogram {self.name!r}: axis {ax.name!r} has {len(v)} values, "
                    f"expected {len(arrays[0])}"
                )
            arrays.append(v)
        if not arrays:  # no ordinary axes: a pure tensor (one bin)
            raise ValueError(f"histogram {self.name!r} needs at least one ordinary axis")
        if self._lookup is None:  # once per histogram, not per fill
            self._lookup = bin_lookup.cached(self.axes, self._strides) or False
        if self._lookup:
            return self._lookup(arrays)
        flat: np.ndarray | None = None
        keep: np.ndarray | None = None
        for ax, v, stride in zip(self.axes, arrays, self._strides):
            idx = _axis_index(ax, v)
            idx += _flow_offset(ax)
            ext = _extent(ax)
            if not (ax.traits.underflow and ax.traits.overflow):
                ok = (idx >= 0) & (idx < ext)
                if not ok.all():
                    keep = ok if keep is None else keep & ok
            idx = idx.astype(np.int64, copy=False)
            flat = idx * stride if flat is None else flat + idx * stride
        assert flat is not None
        return flat, keep

    # ------------------------------------------------------------------------------ fill
    def fill(
        self,
        *values: Any,
        weight: Any = None,
        tensor: Any = None,
        method: str = "auto",
        index: tuple[np.ndarray, np.ndarray | None] | None = None,
    ) -> None:
        """Add events: ``values`` per ordinary axis, an optional per-event ``weight`` and tensor.

        The weight added to tensor cell ``k`` of an event is ``weight * tensor[k]`` (``weight``
        defaults to 1; ``tensor`` defaults to ones). ``tensor`` has shape
        ``(n_events, *tensor_shape)``; pass the raw factors (e.g. float32 PDF ratios) and the
        nominal as ``weight`` rather than their product: the kernel multiplies on the fly.
        ``index``: ``bin_index(*values)`` computed once and shared by several histograms with
        the same axes and values (``values`` are then only used for their count).
        ``method``: ``"bincount"`` (one bincount over ``bin*ntensor+k``), ``"percomponent"``
        (one bincount per tensor cell), ``"addat"`` (``np.add.at``), ``"rows"`` (compiled
        loop adding each event's tensor into its bin's contiguous row, or its weight into its
        bin without a tensor; needs numba) or
        ``"auto"`` (rows when numba is there, else bincount, or add.at for fills much sparser
        than the histogram). All give the same sums.
        """
        if index is None:
            flat, keep = self.bin_index(*values)
        else:
            flat, keep = index
        n = len(flat)
        w = None
        if weight is not None:
            if np.isscalar(weight):
                w = np.full(n, float(weight))
            else:
                w = _to_numpy_1d(weight, f"histogram {self.name!r}, weight").astype(
                    np.float64, copy=False
                )
                if len(w) != n:
                    raise ValueError(f"histogram {self.name!r}: {len(w)} weights for {n} events")
        t = None
        if tensor is not None:
            t = tensor
            if isinstance(t, ak.Array):
                t = ak.to_numpy(t)
            t = np.asarray(t)
            if t.shape != (n, *self.tensor_shape):
                raise ValueError(
                    f"histogram {self.name!r}: tensor shape {t.shape}, expected "
                    f"{(n, *self.tensor_shape)}"
                )
            t = t.reshape(n, self.ntensor)
        elif self.ntensor != 1:
            raise ValueError(
                f"histogram {self.name!r} has tensor axes "
                f"{[a.name for a in self.tensor_axes]}: pass tensor="
            )
        if n == 0:
            return
        if method == "rows" or (method == "auto" and HAVE_NUMBA):
            if not HAVE_NUMBA:
                raise ValueError("fill method 'rows' needs numba")
            fk = flat if keep is None else np.where(keep, flat, -1)
            if t is not None:
                self._fill_rows(fk, w, t)
            else:  # no tensor: ntensor is 1
                unit = w is None
                _bins_add(self._allocate(), fk, _NO_WEIGHTS if unit else w, unit)
            return
        if keep is not None:
            flat = flat[keep]
            w = w[keep] if w is not None else None
            t = t[keep] if t is not None else None
            n = len(flat)
            if n == 0:
                return
        # Total weight per (event, tensor cell); None means all ones.
        if t is None:
            tw = w
        else:
            tw = t.astype(np.float64, copy=False)
            tw = tw * w[:, None] if w is not None else tw
        if self.ntensor == 1:
            idx = flat
            tw = tw.reshape(-1) if tw is not None else None
        elif method == "percomponent":
            self._fill_percomponent(flat, tw)
            return
        else:
            idx = (flat * self.ntensor)[:, None] + np.arange(self.ntensor, dtype=np.int64)
            idx = idx.reshape(-1)
            tw = tw.reshape(-1)
        if method == "addat" or (method == "auto" and len(idx) < _SPARSE_RATIO * self.size):
            self._fill_addat(idx, tw)
        elif method in ("auto", "bincount"):
            self._fill_bincount(idx, tw)
        else:
            raise ValueError(f"unknown fill method {method!r}")

    def _fill_rows(self, fk: np.ndarray, w: np.ndarray | None, t: np.ndarray) -> None:
        """Compiled fill; dropped events have bin -1 (``fk``) instead of copying the tensor."""
        data = self._allocate()
        if t.dtype != np.float32 and t.dtype != np.float64:
            t = t.astype(np.float64)
        t = np.ascontiguousarray(t)
        wv = w if w is not None else np.ones(len(fk))
        if self.storage == "weight":
            _rows_add2(data, fk, wv, t)
        else:
            _rows_add(data, fk, wv, t)

    def _fill_bincount(self, idx: np.ndarray, tw: np.ndarray | None) -> None:
        data = self._allocate()
        shape = (self.nbins, self.ntensor)
        data[:, 0] += np.bincount(idx, weights=tw, minlength=self.size).reshape(shape)
        if self.storage == "weight":
            tw2 = tw * tw if tw is not None else None
            data[:, 1] += np.bincount(idx, weights=tw2, minlength=self.size).reshape(shape)

    def _fill_addat(self, idx: np.ndarray, tw: np.ndarray | None) -> None:
        data = self._allocate()
        # ``idx`` is bin * ntensor + k; slot s of that cell is at (bin * nslots + s) * ntensor + k
        k = self.ntensor
        cell = (idx // k) * (self._nslots * k) + idx % k if self._nslots > 1 else idx
        flat_data = data.reshape(-1)
        np.add.at(flat_data, cell, tw if tw is not None else 1.0)
        if self.storage == "weight":
            np.add.at(flat_data, cell + k, tw * tw if tw is not None else 1.0)

    def _fill_percomponent(self, flat: np.ndarray, tw: np.ndarray | None) -> None:
        data = self._allocate()
        sumw = data[:, 0]
        sumw2 = data[:, 1] if self.storage == "weight" else None
        for k in range(self.ntensor):
            wk = tw[:, k] if tw is not None else None
            sumw[:, k] += np.bincount(flat, weights=wk, minlength=self.nbins)
            if sumw2 is not None:
                sumw2[:, k] += np.bincount(
                    flat, weights=wk * wk if wk is not None else None, minlength=self.nbins
                )

    def _allocate(self) -> np.ndarray:
        if self._data is None:
            self._data = np.zeros((self.nbins, self._nslots, self.ntensor))
        return self._data

    # ----------------------------------------------------------------------------- merge
    def compatible(self, other: TensorHist) -> bool:
        return (
            self.axes == other.axes
            and self.tensor_axes == other.tensor_axes
            and self.storage == other.storage
        )

    def __iadd__(self, other: TensorHist) -> TensorHist:
        if not isinstance(other, TensorHist) or not self.compatible(other):
            raise ValueError(
                f"cannot add histograms with different axes or storage ({self.name!r})"
            )
        if other._data is not None:
            if self._data is None:
                self._data = other._data.copy()
            else:
                self._data += other._data
        return self

    # ---------------------------------------------------------------------------- output
    def values(self, flow: bool = True) -> np.ndarray:
        """Sum of weights as an array of shape ``(*extents, *tensor_shape)`` (flow included).

        A view of the storage: C-contiguous for ``double`` storage; for ``weight`` storage the
        bin stride also spans the sums of squares.
        """
        return self._slot(0, flow)

    def variances(self, flow: bool = True) -> np.ndarray | None:
        """Sum of squared weights (``weight`` storage, else None), shaped like ``values()``."""
        if self.storage != "weight":
            return None
        return self._slot(1, flow)

    def _slot(self, slot: int, flow: bool) -> np.ndarray:
        if self._data is None:
            arr = np.zeros((*self.shape, *self.tensor_shape))
        else:
            arr = self._data[:, slot].reshape(*self.shape, *self.tensor_shape)
        return arr if flow else arr[self._noflow_slices()]

    def _noflow_slices(self) -> tuple[slice, ...]:
        sl = []
        for ax in self.axes:
            lo = _flow_offset(ax)
            sl.append(slice(lo, lo + ax.size))
        return (*sl, *(slice(None),) * len(self.tensor_axes))

    def to_hist(self) -> hist.Hist:
        """The final ``hist.Hist``: ordinary axes then tensor axes, Double or Weight storage."""
        storage = hist.storage.Weight() if self.storage == "weight" else hist.storage.Double()
        h = hist.Hist(
            *self.axes, *self.tensor_axes, storage=storage, name=self.name, label=self.label
        )
        view = h.view(flow=True)
        if self.storage == "weight":
            view.value[...] = self.values()
            view.variance[...] = self.variances()
        else:
            view[...] = self.values()
        return h

    def __repr__(self) -> str:
        axes = ", ".join(ax.name for ax in self.axes)
        tens = ", ".join(f"{ax.name}[{ax.size}]" for ax in self.tensor_axes)
        return f"TensorHist({self.name!r}, axes=[{axes}], tensor=[{tens}], storage={self.storage})"


def _axis_index(ax: Any, v: np.ndarray) -> np.ndarray:
    """Per-value bin index as boost-histogram defines it (-1 underflow, size overflow)."""
    if isinstance(ax, hist.axis.Variable) and not ax.traits.circular:
        edges = ax.edges
        idx = np.searchsorted(edges, v, side="right").astype(np.int64) - 1
        # Larger values and NaN go to overflow (index size), as in boost; so does the last
        # edge, which boost puts into the last bin when there is no overflow bin.
        np.minimum(idx, ax.size, out=idx)
        if not ax.traits.overflow:
            idx[v == edges[-1]] = ax.size - 1
        return idx
    if isinstance(ax, hist.axis.StrCategory):
        lookup = {c: i for i, c in enumerate(ax)}
        return np.fromiter((lookup.get(s, ax.size) for s in v), dtype=np.int64, count=len(v))
    if isinstance(ax, hist.axis.Boolean):  # boost casts to int: |x| < 1 is False, NaN True
        if v.dtype.kind == "f":
            return ((np.abs(v) >= 1.0) | np.isnan(v)).astype(np.int64)
        return (v != 0).astype(np.int64)
    if isinstance(ax, hist.axis.IntCategory):
        cats = np.asarray(list(ax), dtype=np.int64)
        order = np.argsort(cats)
        pos = np.searchsorted(cats[order], v)
        pos_c = np.minimum(pos, len(cats) - 1)
        found = cats[order][pos_c] == v
        return np.where(found, order[pos_c], ax.size).astype(np.int64)
    return np.asarray(ax.index(v), dtype=np.int64)
