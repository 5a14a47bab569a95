"""The compiled fit input: every array the likelihood needs, plus HDF5 read/write.

The writer (``writer.py``) and the pyhf importer (``pyhf_io.py``) both produce a ``FitInput``;
the likelihood (``model.py``) only ever sees this one representation, so a HistFactory model
and a W-mass tensor model are evaluated by the same code.

Conventions (bins are all channels concatenated, masked channels included; ``p`` = process):

* expected yield ``nu[b, p] = (nominal + additive(x)) * exp(shape(x) + norm(x)) * prod(mult(x))``
* shape tensor (log-normal): ``log nu += avg . theta + hd . phi(theta)`` with ``avg``/``hd`` the
  half-sum/half-difference of ``log(up/nom)`` and ``-log(down/nom)``; ``phi`` the interpolation.
* additive tensor (pyhf histosys): the same with ``up - nom`` and ``nom - down``.
* norm systematics per (channel, process): ``log(kappa_up)``, ``log(kappa_down)``.
* multiplicative sets (POIs, normfactor, lumi, staterror, shapesys, shapefactor): for each set
  a parameter index per bin (-1 = none) and a process mask.
* parameter constraints: 0 free, 1 Gaussian ``N(center | x, width)``, 2 Poisson
  ``Pois(center | x * width)`` (pyhf shapesys: ``center`` = ``width`` = tau).
"""

from __future__ import annotations

import json
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from wremnants_dask.histograms.axes import axis_from_fitinput_v1, axis_to_uhi
from wremnants_dask.utils.atomic import atomic_path

FREE, GAUSS, POISSON = 0, 1, 2
#: smooth == pyhf code4p form; rabbit == the CMS fitter's (fitting/interp.py); piecewise == code0/1
SHAPE_INTERP = ("smooth", "rabbit", "piecewise")
ADD_INTERP = ("code4p", "code0")
NORM_INTERP = ("smooth", "rabbit", "code1", "code4")
BB_MODES = ("none", "lite", "full")
#: Version 2: channel axes are UHI axis dicts (``histograms.axes``); version 1 (private axis
#: dicts, still read) is converted on reading, so a ``FitInput`` only ever holds UHI axes.
FORMAT_VERSION = 2


class FitInputError(ValueError):
    """Invalid fit input; the message names the offending channel, process or parameter."""


@dataclass
class Channel:
    name: str
    axes: list[dict[str, Any]]  # UHI axis dicts (histograms.axes.axis_to_uhi), no flow
    start: int
    stop: int
    masked: bool = False


@dataclass
class SparseTensor:
    """COO storage of a [nbins*nproc, nsyst] tensor: rows, cols, and the avg/hd values."""

    rows: np.ndarray
    cols: np.ndarray
    avg: np.ndarray
    hd: np.ndarray | None
    shape: tuple[int, int]


@dataclass
class FitInput:
    channels: list[Channel]
    processes: list[str]
    signal: np.ndarray  # [nproc] bool
    data: np.ndarray  # [nbins]
    nominal: np.ndarray  # [nbins, nproc]
    sumw2: np.ndarray  # [nbins, nproc]
    param_names: list[str]
    param_constraint: np.ndarray  # [npar] int (FREE/GAUSS/POISSON)
    param_center: np.ndarray  # aux data
    param_width: np.ndarray  # sigma or tau
    param_init: np.ndarray
    param_lower: np.ndarray
    param_upper: np.ndarray
    param_fixed: np.ndarray  # [npar] bool: fixed by the input (e.g. pyhf staterror with sigma 0)
    param_type: list[str]  # poi, shape, unconstrained, norm, normfactor, staterror, ...
    pois: list[str]
    # shape tensor (log-normal); dense [nbins*nproc, nT] or SparseTensor
    shape_param: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    shape_avg: np.ndarray | None = None
    shape_hd: np.ndarray | None = None
    shape_sparse: SparseTensor | None = None
    shape_interp: str = "smooth"
    # additive tensor [nbins*nproc, nA]
    add_param: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    add_avg: np.ndarray | None = None
    add_hd: np.ndarray | None = None
    add_interp: str = "code4p"
    # norm systematics [nchan, nproc, nN]: log(kappa_up), log(kappa_down)
    norm_param: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    norm_logup: np.ndarray | None = None
    norm_logdn: np.ndarray | None = None
    norm_interp: str = "smooth"
    # multiplicative sets
    mult_index: np.ndarray | None = None  # [nbins, nM] int, -1 = none
    mult_proc: np.ndarray | None = None  # [nM, nproc] bool
    bb_mode: str = "none"
    groups: dict[str, list[str]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- derived
    @property
    def nbins(self) -> int:
        return int(self.nominal.shape[0])

    @property
    def nproc(self) -> int:
        return int(self.nominal.shape[1])

    @property
    def npar(self) -> int:
        return len(self.param_names)

    def param_index(self, name: str) -> int:
        """Index of a parameter; a clear error for unknown names."""
        try:
            return self.param_names.index(name)
        except ValueError:
            raise FitInputError(f"unknown parameter {name!r}") from None

    def channel(self, name: str) -> Channel:
        for ch in self.channels:
            if ch.name == name:
                return ch
        raise FitInputError(f"unknown channel {name!r}; have {[c.name for c in self.channels]}")

    def unmasked_bins(self) -> np.ndarray:
        mask = np.ones(self.nbins, bool)
        for ch in self.channels:
            if ch.masked:
                mask[ch.start : ch.stop] = False
        return mask

    def channel_of_bin(self) -> np.ndarray:
        out = np.zeros(self.nbins, np.int64)
        for i, ch in enumerate(self.channels):
            out[ch.start : ch.stop] = i
        return out

    # ---------------------------------------------------------------- checks
    def validate(self) -> None:
        """Raise ``FitInputError`` naming the channel/process/parameter at fault."""
        nb, npr, npar = self.nbins, self.nproc, self.npar
        if len(self.processes) != npr:
            raise FitInputError("process list does not match the nominal yield array")
        if len(set(self.param_names)) != npar:
            dup = sorted({n for n in self.param_names if self.param_names.count(n) > 1})
            raise FitInputError(f"duplicate parameter names {dup}")
        for ch in self.channels:
            sl = slice(ch.start, ch.stop)
            for p, proc in enumerate(self.processes):
                vals = self.nominal[sl, p]
                if not np.all(np.isfinite(vals)):
                    raise FitInputError(f"non-finite yield for process {proc!r} in {ch.name!r}")
                if np.any(vals < 0):
                    raise FitInputError(f"negative yield for process {proc!r} in {ch.name!r}")
                if np.any(~np.isfinite(self.sumw2[sl, p])) or np.any(self.sumw2[sl, p] < 0):
                    raise FitInputError(f"invalid sumw2 for process {proc!r} in {ch.name!r}")
            d = self.data[sl]
            if not ch.masked and (np.any(~np.isfinite(d)) or np.any(d < 0)):
                raise FitInputError(f"negative or non-finite data in channel {ch.name!r}")
        for arr, nm in ((self.shape_avg, "shape"), (self.shape_hd, "shape"), (self.add_avg, "add")):
            if arr is not None and not _all_finite(arr):
                bad = np.nonzero(~np.all(np.isfinite(arr), axis=0))[0][0]
                pidx = (self.shape_param if nm == "shape" else self.add_param)[bad]
                raise FitInputError(
                    f"non-finite variation for parameter {self.param_names[pidx]!r}"
                )
        for a in (self.shape_param, self.add_param, self.norm_param):
            if len(a) and (a.min() < 0 or a.max() >= npar):
                raise FitInputError("systematic refers to a parameter index out of range")
        if self.mult_index is not None and self.mult_index.size and self.mult_index.max() >= npar:
            raise FitInputError("multiplicative set refers to a parameter index out of range")
        if self.bb_mode not in BB_MODES:
            raise FitInputError(f"bb_mode must be one of {BB_MODES}, got {self.bb_mode!r}")
        for nm in self.pois:
            self.param_index(nm)
        for g, members in self.groups.items():
            for m in members:
                if m not in self.param_names:
                    raise FitInputError(f"group {g!r} names unknown parameter {m!r}")
        if self.data.shape != (nb,) or self.sumw2.shape != (nb, npr):
            raise FitInputError("data/sumw2 arrays do not match the binning of the channels")
        self._check_predicted_where_data()

    def _check_predicted_where_data(self) -> None:
        """Data in a bin that no process populates (and no additive variation can) gives an
        infinite NLL: name the bin instead of failing inside the fit."""
        total = self.nominal.sum(axis=1)
        if self.add_avg is not None and self.add_avg.size:
            added = np.abs(self.add_avg).reshape(self.nbins, self.nproc, -1).sum(axis=(1, 2))
            total = total + added
        for ch in self.channels:
            if ch.masked:
                continue
            for i in range(ch.start, ch.stop):
                if self.data[i] > 0 and total[i] <= 0:
                    raise FitInputError(
                        f"channel {ch.name!r} bin {i - ch.start}: {self.data[i]:g} data events "
                        "but zero predicted yield from every process"
                    )


# -------------------------------------------------------------------- HDF5 io
_ARRAYS = (
    "signal data nominal sumw2 param_constraint param_center param_width param_init param_lower "
    "param_upper param_fixed shape_param shape_avg shape_hd add_param add_avg add_hd norm_param "
    "norm_logup norm_logdn mult_index mult_proc"
).split()
_STRINGS = ("shape_interp", "add_interp", "norm_interp", "bb_mode")


def _all_finite(a: np.ndarray) -> bool:
    """Every entry finite? One summing pass without a temporary (the tensors are large): a
    sum is finite unless an entry is NaN or infinite or the sum overflows, and only then is
    each entry checked."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(a)):
            return True
    return bool(np.all(np.isfinite(a)))


def write_fit_input(fi: FitInput, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``fi`` to one HDF5 file atomically, with ``metadata`` (provenance) attached."""
    fi.validate()
    path = Path(path)
    with atomic_path(path, suffix=".hdf5") as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = "wremnants_dask.fitinput"
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["metadata"] = json.dumps(metadata, default=str)
        f.attrs["channels"] = json.dumps([vars(c) for c in fi.channels])
        f.attrs["processes"] = json.dumps(fi.processes)
        f.attrs["param_names"] = json.dumps(fi.param_names)
        f.attrs["param_type"] = json.dumps(fi.param_type)
        f.attrs["pois"] = json.dumps(fi.pois)
        f.attrs["groups"] = json.dumps(fi.groups)
        f.attrs["input_metadata"] = json.dumps(fi.metadata, default=str)
        for s in _STRINGS:
            f.attrs[s] = getattr(fi, s)
        for name in _ARRAYS:
            arr = getattr(fi, name)
            if arr is not None:
                big = arr.size > 100_000
                f.create_dataset(name, data=arr, compression="gzip" if big else None)
        if fi.shape_sparse is not None:
            g = f.create_group("shape_sparse")
            sp = fi.shape_sparse
            g.attrs["shape"] = sp.shape
            for k in ("rows", "cols", "avg", "hd"):
                if getattr(sp, k) is not None:
                    g.create_dataset(k, data=getattr(sp, k))
    return path


# Arrays above this many elements are "large": read into aligned memory and shared with XLA.
LARGE_ARRAY = 1 << 16


def aligned_empty(shape: tuple[int, ...], dtype: Any = np.float64, align: int = 64) -> np.ndarray:
    """An uninitialised C-ordered array whose data start on an ``align``-byte boundary: XLA
    on the CPU can then use it in place (``model.shared_array``) instead of copying it."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    buf = np.empty(n + align, np.uint8)
    off = (-buf.ctypes.data) % align
    return buf[off : off + n].view(dtype).reshape(shape)


def _inflate() -> Any:
    """ISA-L's zlib decompress where installed (~3x the standard library's), else zlib's; both
    release the GIL, so chunks inflate in parallel threads."""
    try:
        from isal import isal_zlib

        return isal_zlib.decompress
    except ImportError:
        return zlib.decompress


def _read_deflate_parallel(ds: h5py.Dataset, out: np.ndarray) -> bool:
    """Read a gzip-compressed chunked dataset into ``out`` by reading each chunk's raw bytes
    from the file (``pread``) and inflating the chunks in a thread pool: HDF5 inflates them one
    by one under h5py's lock (N = 2000 tensor: 920 MB from 4032 chunks). False (nothing read)
    where the layout is anything else (other filters, missing chunks, not a plain file)."""
    dcpl = ds.id.get_create_plist()
    if (
        ds.chunks is None
        or ds.file.driver != "sec2"
        or dcpl.get_nfilters() != 1
        or dcpl.get_filter(0)[0] != h5py.h5z.FILTER_DEFLATE
    ):
        return False
    infos: list[Any] = []
    ds.id.chunk_iter(infos.append)
    grid = [-(-n // c) for n, c in zip(ds.shape, ds.chunks)]
    if len(infos) != int(np.prod(grid)):  # unwritten chunks hold the fill value
        return False
    inflate, shape, chunk = _inflate(), ds.shape, ds.chunks
    fd = os.open(ds.file.filename, os.O_RDONLY)

    def one(info: Any) -> None:
        raw = os.pread(fd, info.size, info.byte_offset)
        data = raw if info.filter_mask & 1 else inflate(raw)  # mask bit set: stored raw
        a = np.frombuffer(data, ds.dtype).reshape(chunk)
        sl = tuple(slice(o, min(o + c, n)) for o, c, n in zip(info.chunk_offset, chunk, shape))
        out[sl] = a[tuple(slice(0, x.stop - x.start) for x in sl)]

    def some(batch: list[Any]) -> None:
        for info in batch:
            one(info)

    # a few batches of chunks per thread: one task per chunk cost ~0.1 ms of pool overhead
    # each, about a third of the read's CPU time (N = 2000: 8064 chunks of 57 kB)
    nthreads = max(1, min(16, os.cpu_count() or 1))
    per = max(1, -(-len(infos) // (4 * nthreads)))
    try:
        with ThreadPoolExecutor(nthreads) as ex:
            list(ex.map(some, [infos[i : i + per] for i in range(0, len(infos), per)]))
    finally:
        os.close(fd)
    return True


def _read_dataset(ds: h5py.Dataset) -> np.ndarray:
    """Read a dataset; large float arrays land in aligned memory (no copy for JAX later),
    compressed ones inflated in parallel (``_read_deflate_parallel``)."""
    if ds.size > LARGE_ARRAY and ds.dtype == np.float64:
        out = aligned_empty(ds.shape, ds.dtype)
        if not _read_deflate_parallel(ds, out):
            ds.read_direct(out)
        return out
    return ds[()]


def _channel(c: dict[str, Any], version: int) -> Channel:
    if version == 1:  # private axis dicts -> UHI (same bins: version 1 kept no flow bins)
        c = {**c, "axes": [axis_to_uhi(axis_from_fitinput_v1(a)) for a in c["axes"]]}
    return Channel(**c)


def read_fit_input(path: str | Path) -> tuple[FitInput, dict[str, Any]]:
    """Read a fit input file; returns the input and its provenance metadata."""
    path = Path(path)
    if not path.exists():
        raise FitInputError(f"fit input {path} does not exist")
    try:
        return _read_fit_input(path)
    except FitInputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:  # h5py/json on damaged files
        why = " ".join(str(err).split())
        raise FitInputError(
            f"{path}: not a readable fit input ({type(err).__name__}: {why})"
        ) from None


def _read_fit_input(path: Path) -> tuple[FitInput, dict[str, Any]]:
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != "wremnants_dask.fitinput":
            raise FitInputError(f"{path} is not a wremnants_dask fit input file")
        version = int(f.attrs.get("format_version", 1))
        if version not in (1, FORMAT_VERSION):
            raise FitInputError(
                f"{path}: fit input format version {version} is not supported "
                f"(this reader knows 1 and {FORMAT_VERSION})"
            )
        kw: dict[str, Any] = {}
        for name in _ARRAYS:
            kw[name] = _read_dataset(f[name]) if name in f else None
        for s in _STRINGS:
            kw[s] = str(f.attrs[s])
        for k in ("shape_param", "add_param", "norm_param"):
            if kw[k] is None:
                kw[k] = np.zeros(0, np.int64)
        sparse = None
        if "shape_sparse" in f:
            g = f["shape_sparse"]
            sparse = SparseTensor(
                rows=g["rows"][()],
                cols=g["cols"][()],
                avg=_read_dataset(g["avg"]),
                hd=_read_dataset(g["hd"]) if "hd" in g else None,
                shape=tuple(int(v) for v in g.attrs["shape"]),
            )
        fi = FitInput(
            channels=[_channel(c, version) for c in json.loads(f.attrs["channels"])],
            processes=json.loads(f.attrs["processes"]),
            param_names=json.loads(f.attrs["param_names"]),
            param_type=json.loads(f.attrs["param_type"]),
            pois=json.loads(f.attrs["pois"]),
            groups=json.loads(f.attrs["groups"]),
            metadata=json.loads(f.attrs["input_metadata"]),
            shape_sparse=sparse,
            **kw,
        )
        fi.signal = fi.signal.astype(bool)
        fi.param_fixed = fi.param_fixed.astype(bool)
        if fi.mult_proc is not None:
            fi.mult_proc = fi.mult_proc.astype(bool)
        meta = json.loads(f.attrs["metadata"])
    fi.validate()
    return fi, meta
