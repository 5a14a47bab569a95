"""Build a fit input from ``hist`` objects (the API the fit-setup stage uses).

Example::

    w = FitInputWriter(systematic_type="log_normal", sparse=False, bb_mode="lite")
    w.add_channel("ch_plus", h_data.axes)          # or pass a hist.Hist; masked=True allowed
    w.add_data(h_data, "ch_plus")
    w.add_process(h_w, "Wmunu", "ch_plus", signal=True)
    w.add_process(h_z, "Zmumu", "ch_plus")
    w.add_norm_systematic("lumi", ["Wmunu", "Zmumu"], 1.017, groups=["luminosity"])
    w.add_shape_systematic("effStat", "Wmunu", "ch_plus", variations=h_var)  # extra axes
    w.add_shape_systematic("massShift", "Wmunu", "ch_plus", up=h_up, down=h_dn,
                           constrained=False)                # the W mass, unconstrained
    w.add_poi("mu", ["Wmunu"])
    w.write("fitinput.hdf5", args=vars(args), inputs_metadata=[histmaker_meta])

Each systematic name maps to one parameter shared by every (channel, process) it is given for.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import hist
import numpy as np

from wremnants_dask.histograms.axes import axis_to_uhi, flowless, same_binning
from wremnants_dask.utils.provenance import make_metadata

from .fitinput import FREE, GAUSS, Channel, FitInput, FitInputError, SparseTensor, write_fit_input
from .symmetrize import SYMMETRIZE, symmetrize

_RATIO_FLOOR = 1e-3  # log-normal variations below 1e-3 x nominal are clipped (as in rabbit)


class FitInputWriter:
    """Collects channels, processes and systematics as hist objects and compiles a FitInput."""

    def __init__(
        self,
        systematic_type: str = "log_normal",
        sparse: bool = False,
        bb_mode: str = "lite",
        shape_interp: str = "smooth",
        norm_interp: str = "smooth",
    ) -> None:
        if systematic_type not in ("log_normal", "normal"):
            raise FitInputError(
                f"systematic_type must be log_normal or normal: {systematic_type!r}"
            )
        self.systematic_type = systematic_type
        self.sparse = sparse
        self.bb_mode = bb_mode
        self.shape_interp = shape_interp
        self.norm_interp = norm_interp
        self._channels: dict[str, dict[str, Any]] = {}
        self._procs: dict[str, bool] = {}
        self._yields: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._data: dict[str, np.ndarray] = {}
        # parameter name -> dict(constrained, groups, type)
        self._params: dict[str, dict[str, Any]] = {}
        self._shape: dict[str, dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]] = {}
        self._norm: dict[str, dict[tuple[str, str], tuple[float, float]]] = {}
        self._pois: dict[str, dict[str, Any]] = {}
        self._groups: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ structure
    def add_channel(self, name: str, axes: Any, masked: bool = False) -> None:
        """Declare a channel by its axes (a hist.Hist or its ``.axes``); masked: no data."""
        if name in self._channels:
            raise FitInputError(f"channel {name!r} added twice")
        axes = [flowless(a) for a in (axes.axes if isinstance(axes, hist.Hist) else axes)]
        shape = tuple(len(a) for a in axes)
        self._channels[name] = {
            "axes": [axis_to_uhi(a) for a in axes],
            "hist_axes": axes,
            "shape": shape,
            "masked": masked,
        }

    def _values(self, h: hist.Hist, channel: str, what: str, extra: Sequence[str] = ()) -> Any:
        if channel not in self._channels:
            raise FitInputError(f"{what}: unknown channel {channel!r}")
        if not isinstance(h, hist.Hist):
            raise FitInputError(f"{what}: expected a hist.Hist, got {type(h).__name__}")
        ch = self._channels[channel]
        names = [a.name for a in h.axes if a.name not in extra]
        want = [a.name for a in ch["hist_axes"]]
        if names != want:
            raise FitInputError(
                f"{what}: axes {names} do not match channel {channel!r} axes {want}"
            )
        for a, c in zip([a for a in h.axes if a.name not in extra], ch["hist_axes"]):
            if not same_binning(a, c):
                raise FitInputError(
                    f"{what}: binning of axis {a.name!r} does not match channel {channel!r}"
                )
        return h

    def add_data(self, h: hist.Hist, channel: str) -> None:
        """Observed counts for an unmasked channel."""
        self._values(h, channel, f"data in {channel!r}")
        if self._channels[channel]["masked"]:
            raise FitInputError(f"channel {channel!r} is masked and takes no data")
        vals = np.asarray(h.values(), np.float64).reshape(-1)
        if np.any(~np.isfinite(vals)) or np.any(vals < 0):
            raise FitInputError(f"negative or non-finite data in channel {channel!r}")
        self._data[channel] = vals

    def add_process(self, h: hist.Hist, name: str, channel: str, signal: bool = False) -> None:
        """Nominal yield (values) and its MC-stat variance (variances) of one process."""
        what = f"process {name!r} in channel {channel!r}"
        self._values(h, channel, what)
        if name in self._procs and self._procs[name] != signal:
            raise FitInputError(f"process {name!r} declared both signal and background")
        vals = np.asarray(h.values(), np.float64).reshape(-1)
        var = h.variances()
        var = np.zeros_like(vals) if var is None else np.asarray(var, np.float64).reshape(-1)
        if np.any(~np.isfinite(vals)):
            raise FitInputError(f"non-finite (NaN/inf) yield for {what}")
        if np.any(vals < 0):
            raise FitInputError(f"negative yield for {what} (bins {np.nonzero(vals < 0)[0][:5]})")
        self._procs[name] = signal
        self._yields[(channel, name)] = (vals, var)

    def _param(self, name: str, constrained: bool, kind: str, groups: Iterable[str]) -> None:
        if name in self._pois:
            raise FitInputError(f"parameter {name!r} is already a POI")
        p = self._params.setdefault(name, {"constrained": constrained, "type": kind})
        if p["constrained"] != constrained:
            raise FitInputError(f"parameter {name!r} declared both constrained and unconstrained")
        for g in groups:
            if name not in self._groups.setdefault(g, []):
                self._groups[g].append(name)

    def _nominal(self, channel: str, process: str) -> np.ndarray:
        if (channel, process) not in self._yields:
            raise FitInputError(f"process {process!r} has no yield in channel {channel!r}")
        return self._yields[(channel, process)][0]

    # ------------------------------------------------------------------ systematics
    def add_norm_systematic(
        self,
        name: str,
        processes: str | Sequence[str],
        kappa: float | tuple[float, float],
        channels: Sequence[str] | None = None,
        groups: Iterable[str] = (),
    ) -> None:
        """Log-normal normalisation uncertainty: ``kappa`` or ``(kappa_down, kappa_up)``."""
        procs = [processes] if isinstance(processes, str) else list(processes)
        kd, ku = (1.0 / kappa, kappa) if np.isscalar(kappa) else kappa
        if not (ku > 0 and kd > 0 and np.isfinite(ku) and np.isfinite(kd)):
            raise FitInputError(f"norm systematic {name!r}: kappa must be positive and finite")
        self._param(name, True, "norm", groups)
        chans = list(self._channels) if channels is None else list(channels)
        entry = self._norm.setdefault(name, {})
        for p in procs:
            if p not in self._procs:
                raise FitInputError(f"norm systematic {name!r}: unknown process {p!r}")
            for c in chans:
                if c not in self._channels:
                    raise FitInputError(f"norm systematic {name!r}: unknown channel {c!r}")
                if (c, p) in self._yields:
                    entry[(c, p)] = (float(np.log(ku)), float(np.log(kd)))

    def add_shape_systematic(
        self,
        name: str,
        process: str,
        channel: str,
        up: hist.Hist | None = None,
        down: hist.Hist | None = None,
        *,
        variations: hist.Hist | None = None,
        updown_axis: str | None = None,
        symmetrize_mode: str = "none",
        constrained: bool = True,
        scale: float = 1.0,
        groups: Iterable[str] = (),
    ) -> list[str]:
        """Shape systematic from up/down histograms, or from ``variations`` whose extra axes
        (beyond the channel's) each give one parameter ``<name>_<label>...``; an
        ``updown_axis`` of size 2 holds (down, up), otherwise the variation is mirrored.
        Returns the parameter names created."""
        if symmetrize_mode not in SYMMETRIZE:
            raise FitInputError(
                f"systematic {name!r}: symmetrize must be one of {SYMMETRIZE}, got {symmetrize_mode!r}"
            )
        nom = self._nominal(channel, process)
        shape = self._channels[channel]["shape"]
        entries: list[tuple[str, np.ndarray, np.ndarray | None]] = []
        what = f"systematic {name!r} for process {process!r} in channel {channel!r}"
        if variations is not None:
            chnames = [a.name for a in self._channels[channel]["hist_axes"]]
            extra = [a.name for a in variations.axes if a.name not in chnames]
            self._values(variations, channel, what, extra)
            h = variations.project(*chnames, *extra)
            vals = np.asarray(h.values(), np.float64).reshape(int(np.prod(shape)), -1)
            ex_axes = [h.axes[n] for n in extra]
            sizes = [len(a) for a in ex_axes]
            vals = vals.reshape(-1, *sizes)
            lab_axes = [a for a in ex_axes if a.name != updown_axis]
            for idx in itertools.product(*[range(len(a)) for a in lab_axes]):
                labels = [_label(a, i) for a, i in zip(lab_axes, idx)]
                pname = "_".join([name, *labels]) if labels else name
                sl: list[Any] = [slice(None)]
                it = iter(idx)
                for a in ex_axes:
                    sl.append(slice(None) if a.name == updown_axis else next(it))
                v = vals[tuple(sl)]
                if updown_axis is not None:
                    if v.shape[-1] != 2:
                        raise FitInputError(f"{what}: updown axis {updown_axis!r} must have 2 bins")
                    entries.append((pname, v[:, 1], v[:, 0]))
                else:
                    entries.append((pname, v, None))
        else:
            if up is None:
                raise FitInputError(f"{what}: give up (and down) or variations")
            self._values(up, channel, what)
            vu = np.asarray(up.values(), np.float64).reshape(-1)
            vd = None
            if down is not None:
                self._values(down, channel, what)
                vd = np.asarray(down.values(), np.float64).reshape(-1)
            entries.append((name, vu, vd))
        created = []
        for pname, vu, vd in entries:
            for arr in (vu, vd):
                if arr is not None and not np.all(np.isfinite(arr)):
                    raise FitInputError(f"non-finite variation in {what} (parameter {pname!r})")
            moved = (vu != 0) if vd is None else (vu != 0) | (vd != 0)
            stuck = np.nonzero((nom == 0) & moved)[0]
            if stuck.size:
                raise FitInputError(
                    f"{what} (parameter {pname!r}): zero nominal yield but a non-zero variation "
                    f"in bins {stuck[:10].tolist()}{' ...' if stuck.size > 10 else ''} (a "
                    "variation cannot scale zero: fill the nominal or drop the variation there)"
                )
            lu, ld = self._to_log(nom, vu, vd)
            for sub, avg, hd in symmetrize(pname, lu * scale, ld * scale, symmetrize_mode):
                self._param(sub, constrained, "shape" if constrained else "unconstrained", groups)
                self._shape.setdefault(sub, {})[(channel, process)] = (avg, hd)
                created.append(sub)
        return created

    def _to_log(
        self, nom: np.ndarray, vu: np.ndarray, vd: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.systematic_type == "normal":
            du = vu - nom
            return du, (-du if vd is None else vd - nom)
        with np.errstate(divide="ignore", invalid="ignore"):
            lu = np.where(nom > 0, np.log(np.maximum(vu / nom, _RATIO_FLOOR)), 0.0)
            if vd is None:
                return lu, -lu
            ld = np.where(nom > 0, np.log(np.maximum(vd / nom, _RATIO_FLOOR)), 0.0)
        return lu, ld

    def add_poi(
        self, name: str, processes: Sequence[str], positive: bool = False, init: float = 1.0
    ) -> None:
        """A signal-strength POI multiplying the given processes in every channel."""
        for p in processes:
            if p not in self._procs:
                raise FitInputError(f"POI {name!r}: unknown process {p!r}")
        if name in self._params:
            raise FitInputError(f"POI {name!r} clashes with a systematic of the same name")
        self._pois[name] = {"processes": list(processes), "positive": positive, "init": init}

    def add_group(self, name: str, params: Iterable[str]) -> None:
        """A named group of parameters (for grouped impacts)."""
        self._groups.setdefault(name, []).extend(p for p in params if p not in self._groups[name])

    # ------------------------------------------------------------------ compile
    def build(self) -> FitInput:
        """Compile everything into a validated ``FitInput``."""
        if not self._channels:
            raise FitInputError("no channels")
        for c, ch in self._channels.items():
            if not ch["masked"] and c not in self._data:
                raise FitInputError(f"channel {c!r} has no data (add_data or masked=True)")
        procs = list(self._procs)
        if not procs:
            raise FitInputError("no processes")
        pois = dict(self._pois)
        sig = [p for p in procs if self._procs[p]]
        if not pois and sig:
            pois["mu"] = {"processes": sig, "positive": False, "init": 1.0}
        chans, off = [], 0
        for c, ch in self._channels.items():
            n = int(np.prod(ch["shape"]))
            chans.append(Channel(c, ch["axes"], off, off + n, ch["masked"]))
            off += n
        nb, npr = off, len(procs)
        nominal = np.zeros((nb, npr))
        sumw2 = np.zeros((nb, npr))
        data = np.zeros(nb)
        cidx = {c.name: c for c in chans}
        for (c, p), (v, w) in self._yields.items():
            sl = slice(cidx[c].start, cidx[c].stop)
            nominal[sl, procs.index(p)] = v
            sumw2[sl, procs.index(p)] = w
        for c, v in self._data.items():
            data[cidx[c].start : cidx[c].stop] = v

        names = list(pois) + list(self._params)
        npar = len(names)
        constraint = np.full(npar, FREE)
        ptype = []
        init = np.zeros(npar)
        lower = np.full(npar, -np.inf)
        upper = np.full(npar, np.inf)
        for i, n in enumerate(names):
            if n in pois:
                ptype.append("poi")
                init[i] = pois[n]["init"]
                if pois[n]["positive"]:
                    lower[i] = 0.0
            else:
                p = self._params[n]
                ptype.append(p["type"])
                constraint[i] = GAUSS if p["constrained"] else FREE
        center = np.zeros(npar)
        width = np.ones(npar)

        mult_index = np.full((nb, len(pois)), -1, np.int64)
        mult_proc = np.zeros((len(pois), npr), bool)
        for m, (n, spec) in enumerate(pois.items()):
            mult_index[:, m] = names.index(n)
            for p in spec["processes"]:
                mult_proc[m, procs.index(p)] = True

        shape_names = list(self._shape)
        shape_param = np.array([names.index(n) for n in shape_names], np.int64)
        any_hd = any(np.any(hd != 0) for e in self._shape.values() for _, hd in e.values())
        fi_kw: dict[str, Any] = {}
        if self.systematic_type == "log_normal":
            fi_kw.update(shape_param=shape_param, shape_interp=self.shape_interp)
            if self.sparse:
                fi_kw["shape_sparse"] = self._sparse(shape_names, cidx, procs, nb, any_hd)
            else:
                avg, hd = self._dense(shape_names, cidx, procs, nb, any_hd)
                fi_kw.update(shape_avg=avg, shape_hd=hd)
        else:
            avg, hd = self._dense(shape_names, cidx, procs, nb, True)
            fi_kw.update(add_param=shape_param, add_avg=avg, add_hd=hd, add_interp="code4p")
        if self._norm:
            norm_names = list(self._norm)
            lu = np.zeros((len(chans), npr, len(norm_names)))
            ld = np.zeros_like(lu)
            cpos = {c.name: i for i, c in enumerate(chans)}
            for k, n in enumerate(norm_names):
                for (c, p), (u, d) in self._norm[n].items():
                    lu[cpos[c], procs.index(p), k] = u
                    ld[cpos[c], procs.index(p), k] = d
            fi_kw.update(
                norm_param=np.array([names.index(n) for n in norm_names], np.int64),
                norm_logup=lu,
                norm_logdn=ld,
                norm_interp=self.norm_interp,
            )
        fi = FitInput(
            channels=chans,
            processes=procs,
            signal=np.array([self._procs[p] for p in procs], bool),
            data=data,
            nominal=nominal,
            sumw2=sumw2,
            param_names=names,
            param_constraint=constraint,
            param_center=center,
            param_width=width,
            param_init=init,
            param_lower=lower,
            param_upper=upper,
            param_fixed=np.zeros(npar, bool),
            param_type=ptype,
            pois=list(pois),
            mult_index=mult_index,
            mult_proc=mult_proc,
            bb_mode=self.bb_mode,
            groups={g: list(v) for g, v in self._groups.items()},
            metadata={"systematic_type": self.systematic_type, "sparse": self.sparse},
            **fi_kw,
        )
        fi.validate()
        return fi

    def _entries(self, shape_names, cidx, procs):
        for k, n in enumerate(shape_names):
            for (c, p), (avg, hd) in self._shape[n].items():
                rows = np.arange(cidx[c].start, cidx[c].stop) * len(procs) + procs.index(p)
                yield k, rows, avg, hd

    def _dense(self, shape_names, cidx, procs, nb, with_hd):
        nT = len(shape_names)
        avg = np.zeros((nb * len(procs), nT))
        hd = np.zeros((nb * len(procs), nT)) if with_hd else None
        for k, rows, a, h in self._entries(shape_names, cidx, procs):
            avg[rows, k] = a
            if hd is not None:
                hd[rows, k] = h
        return avg, hd

    def _sparse(self, shape_names, cidx, procs, nb, with_hd) -> SparseTensor:
        R, C, A, H = [], [], [], []
        for k, rows, a, h in self._entries(shape_names, cidx, procs):
            keep = (a != 0) | (h != 0)
            R.append(rows[keep])
            C.append(np.full(keep.sum(), k))
            A.append(a[keep])
            H.append(h[keep])
        cat = (lambda x, dt: np.concatenate(x).astype(dt)) if R else (lambda x, dt: np.zeros(0, dt))
        rows, cols = cat(R, np.int64), cat(C, np.int64)
        order = np.lexsort((cols, rows))
        return SparseTensor(
            rows=rows[order],
            cols=cols[order],
            avg=cat(A, np.float64)[order],
            hd=cat(H, np.float64)[order] if with_hd else None,
            shape=(nb * len(procs), len(shape_names)),
        )

    def write(
        self,
        path: str | Path,
        args: dict[str, Any] | None = None,
        input_files: list[str] | None = None,
        inputs_metadata: list[dict[str, Any]] | None = None,
    ) -> Path:
        """Compile and write the fit input HDF5 atomically, with provenance."""
        fi = self.build()
        meta = make_metadata(
            args,
            input_files=input_files,
            inputs_metadata=inputs_metadata,
            stage="fitinput",
            nbins=fi.nbins,
            nproc=fi.nproc,
            nparams=fi.npar,
        )
        return write_fit_input(fi, path, meta)


def _label(ax: Any, i: int) -> str:
    if isinstance(ax, (hist.axis.StrCategory, hist.axis.IntCategory)):
        return str(ax[i])
    return f"{ax.name}{i}"
