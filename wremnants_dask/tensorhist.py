"""Histograms with tensor axes: one bin lookup per event, a whole weight tensor added at once.

A ``TensorHist`` has ordinary ``hist`` axes (looked up from per-event values) and *tensor axes*
(no lookup: each event carries a weight tensor, e.g. 103 PDF weights or a 2x48 grid of
efficiency variations). The flat bin index is computed once per event (and shared between the
histograms of a chunk filled with the same values, see ``processor.ChunkOutput.fill``); with
numba a compiled kernel adds ``weight * tensor`` row by row without building the product,
prefetching the histogram rows of the next events; without numba a single ``np.bincount`` over
``bin * ntensor + k`` does it. Filling 103 variations costs a small multiple of the nominal
fill instead of 103 fills.

Storage is a C-ordered numpy array of shape ``(*ordinary extents incl. flow, *tensor shape)``:
the tensor index is contiguous in memory, which keeps the scattered writes of the fill local.
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

STORAGES = ("double", "weight")

try:  # optional compiled kernels: add each event's tensor row into its bin's contiguous row
    import numba
    from llvmlite import ir as _ir
    from numba.core import cgutils as _cgutils
    from numba.extending import intrinsic as _intrinsic

    @_intrinsic
    def _prefetch_write(typingctx: Any, arr: Any, idx: Any) -> Any:
        """``llvm.prefetch`` of the cache line of ``arr[idx]`` (1D array) for writing.

        Filling from events in random bin order is bound by the latency of fetching each
        event's histogram row (1.6 kB for 103 replicas with sums of squares) from L3/DRAM;
        prefetching the rows of the next events overlaps those fetches. A hint: it never
        faults and never changes results.
        """
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
            # rw=1 (write), locality=3 (all cache levels), cache type=1 (data)
            one, three = _ir.Constant(i32, 1), _ir.Constant(i32, 3)
            builder.call(fn, [ptr, one, three, one])
            return context.get_dummy_value()

        return sig, codegen

    @numba.njit(inline="always", nogil=True)
    def prefetch_lines(flat_arr: np.ndarray, start: int, count: int) -> None:
        """Prefetch the 64-byte lines of ``flat_arr[start:start + count]`` (float64)."""
        for j in range(0, count, 8):
            _prefetch_write(flat_arr, start + j)
        _prefetch_write(flat_arr, start + count - 1)

    @numba.njit(cache=True, nogil=True)
    def _rows_add(out: np.ndarray, flat: np.ndarray, w: np.ndarray, t: np.ndarray) -> None:
        """``out[flat[e], :] += w[e] * t[e, :]``; events with ``flat < 0`` are skipped.

        ``w`` and ``t`` come separately so that ``w * t`` (n x ntensor doubles) is never built;
        the row of the event a few places ahead is prefetched because the rows of a large
        histogram are scattered over L3/DRAM and the fill is latency-bound otherwise.
        """
        k = t.shape[1]
        n = flat.shape[0]
        o = out.reshape(-1, k)
        of = out.reshape(-1)
        for e in range(n):
            if e + _AHEAD < n and flat[e + _AHEAD] >= 0:
                prefetch_lines(of, flat[e + _AHEAD] * k, k)
            b = flat[e]
            if b < 0:
                continue
            row = o[b]
            te = t[e]
            we = w[e]
            for j in range(k):
                row[j] += we * np.float64(te[j])

    @numba.njit(cache=True, nogil=True)
    def _rows_add2(
        out: np.ndarray, out2: np.ndarray, flat: np.ndarray, w: np.ndarray, t: np.ndarray
    ) -> None:
        """As ``_rows_add``, also adding the squares (``weight`` storage) in the same pass."""
        k = t.shape[1]
        n = flat.shape[0]
        o = out.reshape(-1, k)
        o2 = out2.reshape(-1, k)
        of = out.reshape(-1)
        of2 = out2.reshape(-1)
        for e in range(n):
            if e + _AHEAD < n and flat[e + _AHEAD] >= 0:
                prefetch_lines(of, flat[e + _AHEAD] * k, k)
                prefetch_lines(of2, flat[e + _AHEAD] * k, k)
            b = flat[e]
            if b < 0:
                continue
            row = o[b]
            row2 = o2[b]
            te = t[e]
            we = w[e]
            for j in range(k):
                x = we * np.float64(te[j])
                row[j] += x
                row2[j] += x * x

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numpy fallback
    HAVE_NUMBA = False

# Events ahead whose histogram row is prefetched (measured in bench/bench_tensorfill.py).
_AHEAD = 4
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
        _rows_add(np.zeros(2), flat, w, t)
        _rows_add2(np.zeros(2), np.zeros(2), flat, w, t)


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
        # Allocated on first fill: a chunk that fills nothing costs no memory.
        self._sumw: np.ndarray | None = None
        self._sumw2: np.ndarray | None = None

    # ----------------------------------------------------------------- construction helpers
    def empty_like(self) -> TensorHist:
        """A new, empty accumulator with the same axes and storage."""
        return TensorHist(
            self.axes, self.tensor_axes, storage=self.storage, name=self.name, label=self.label
        )

    def copy(self) -> TensorHist:
        out = self.empty_like()
        if self._sumw is not None:
            out._sumw = self._sumw.copy()
        if self._sumw2 is not None:
            out._sumw2 = self._sumw2.copy()
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
        flat: np.ndarray | None = None
        keep: np.ndarray | None = None
        n = None
        for ax, v, stride in zip(self.axes, values, self._strides):
            v = _to_numpy_1d(v, f"histogram {self.name!r}, axis {ax.name!r}")
            if n is None:
                n = len(v)
            elif len(v) != n:
                raise ValueError(
                    f"histogram {self.name!r}: axis {ax.name!r} has {len(v)} values, expected {n}"
                )
            idx = _axis_index(ax, v)
            idx += _flow_offset(ax)
            ext = _extent(ax)
            if not (ax.traits.underflow and ax.traits.overflow):
                ok = (idx >= 0) & (idx < ext)
                if not ok.all():
                    keep = ok if keep is None else keep & ok
            idx = idx.astype(np.int64, copy=False)
            flat = idx * stride if flat is None else flat + idx * stride
        if flat is None:  # no ordinary axes: a pure tensor (one bin)
            raise ValueError(f"histogram {self.name!r} needs at least one ordinary axis")
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
        loop adding each event's tensor into its bin's contiguous row; needs numba) or
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
        if (
            t is not None
            and self.ntensor > 1
            and (method == "rows" or (method == "auto" and HAVE_NUMBA))
        ):
            if not HAVE_NUMBA:
                raise ValueError("fill method 'rows' needs numba")
            self._fill_rows(flat, keep, w, t)
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

    def _fill_rows(
        self, flat: np.ndarray, keep: np.ndarray | None, w: np.ndarray | None, t: np.ndarray
    ) -> None:
        """Compiled fill; dropped events get bin -1 instead of copying the (n, k) tensor."""
        self._allocate()
        if t.dtype != np.float32 and t.dtype != np.float64:
            t = t.astype(np.float64)
        t = np.ascontiguousarray(t)
        wv = w if w is not None else np.ones(len(flat))
        fk = flat if keep is None else np.where(keep, flat, -1)
        if self.storage == "weight":
            _rows_add2(self._sumw, self._sumw2, fk, wv, t)
        else:
            _rows_add(self._sumw, fk, wv, t)

    def _fill_bincount(self, idx: np.ndarray, tw: np.ndarray | None) -> None:
        sumw = np.bincount(idx, weights=tw, minlength=self.size)
        if self._sumw is None:
            self._sumw = sumw
        else:
            self._sumw += sumw
        if self.storage == "weight":
            sumw2 = np.bincount(
                idx, weights=tw * tw if tw is not None else None, minlength=self.size
            )
            if self._sumw2 is None:
                self._sumw2 = sumw2
            else:
                self._sumw2 += sumw2

    def _fill_addat(self, idx: np.ndarray, tw: np.ndarray | None) -> None:
        self._allocate()
        np.add.at(self._sumw, idx, tw if tw is not None else 1.0)
        if self.storage == "weight":
            np.add.at(self._sumw2, idx, tw * tw if tw is not None else 1.0)

    def _fill_percomponent(self, flat: np.ndarray, tw: np.ndarray | None) -> None:
        self._allocate()
        sumw = self._sumw.reshape(self.nbins, self.ntensor)
        sumw2 = self._sumw2.reshape(self.nbins, self.ntensor) if self._sumw2 is not None else None
        for k in range(self.ntensor):
            wk = tw[:, k] if tw is not None else None
            sumw[:, k] += np.bincount(flat, weights=wk, minlength=self.nbins)
            if sumw2 is not None:
                sumw2[:, k] += np.bincount(
                    flat, weights=wk * wk if wk is not None else None, minlength=self.nbins
                )

    def _allocate(self) -> None:
        if self._sumw is None:
            self._sumw = np.zeros(self.size)
        if self.storage == "weight" and self._sumw2 is None:
            self._sumw2 = np.zeros(self.size)

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
        if other._sumw is not None:
            if self._sumw is None:
                self._sumw = other._sumw.copy()
            else:
                self._sumw += other._sumw
        if other._sumw2 is not None:
            if self._sumw2 is None:
                self._sumw2 = other._sumw2.copy()
            else:
                self._sumw2 += other._sumw2
        return self

    # ---------------------------------------------------------------------------- output
    def values(self, flow: bool = True) -> np.ndarray:
        """Sum of weights as an array of shape ``(*extents, *tensor_shape)`` (flow included)."""
        sumw = self._sumw if self._sumw is not None else np.zeros(self.size)
        arr = sumw.reshape(*self.shape, *self.tensor_shape)
        return arr if flow else arr[self._noflow_slices()]

    def variances(self, flow: bool = True) -> np.ndarray | None:
        if self.storage != "weight":
            return None
        sumw2 = self._sumw2 if self._sumw2 is not None else np.zeros(self.size)
        arr = sumw2.reshape(*self.shape, *self.tensor_shape)
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
        # x == last edge, larger values and NaN go to overflow (index size), as in boost.
        np.minimum(idx, ax.size, out=idx)
        return idx
    if isinstance(ax, hist.axis.StrCategory):
        lookup = {c: i for i, c in enumerate(ax)}
        return np.fromiter((lookup.get(s, ax.size) for s in v), dtype=np.int64, count=len(v))
    if isinstance(ax, hist.axis.Boolean):
        return v.astype(np.int64)
    if isinstance(ax, hist.axis.IntCategory):
        cats = np.asarray(list(ax), dtype=np.int64)
        order = np.argsort(cats)
        pos = np.searchsorted(cats[order], v)
        pos_c = np.minimum(pos, len(cats) - 1)
        found = cats[order][pos_c] == v
        return np.where(found, order[pos_c], ax.size).astype(np.int64)
    return np.asarray(ax.index(v), dtype=np.int64)
