"""Import and export of pyhf HistFactory JSON workspaces.

Import is exact: every pyhf modifier maps onto a FitInput component with pyhf's conventions
(normsys: Gaussian, code1 or code4; histosys: additive, code0 or code4p; staterror: per-bin
Gaussian with sigma = sqrt(sum delta^2)/sum nominal, fixed where 0; shapesys: per-bin Poisson
with tau = (nominal/delta)^2; normfactor/shapefactor: free in [0, 10]; lumi: Gaussian with the
measurement's auxdata and sigma). Parameter names are pyhf's (``name`` or ``name[i]``), so a fit
of an imported workspace can be compared with pyhf parameter by parameter.

Export writes what pyhf can express exactly; components without an exact pyhf equivalent
(log-normal shape tensor, smooth-interpolated norm systematics, BB-lite, unconstrained shape
parameters) raise unless ``approximate=True``, in which case they are written as the closest
pyhf modifier (histosys with the +-1 templates, normsys code4, staterror) and listed in the
returned notes.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import hist
import numpy as np
import pyhf

from wremnants_dask.histograms.axes import axis_to_uhi

from .fitinput import FREE, GAUSS, POISSON, Channel, FitInput, FitInputError

_NORM_CODES = {"code1": "code1", "code4": "code4"}
_HISTO_CODES = {"code0": "code0", "code4p": "code4p"}


def validate_workspace(spec: dict[str, Any]) -> None:
    """Validate a workspace with pyhf's own JSON schema (raises FitInputError)."""
    try:
        pyhf.schema.validate(spec, "workspace.json")
    except pyhf.exceptions.InvalidSpecification as err:
        raise FitInputError(f"invalid pyhf workspace: {err}") from err


def from_pyhf(
    spec: dict[str, Any],
    measurement: str | None = None,
    modifier_settings: dict[str, dict[str, str]] | None = None,
) -> FitInput:
    """Compile a pyhf workspace (JSON dict) into a FitInput, exactly."""
    validate_workspace(spec)
    ms = modifier_settings or {}
    ncode = ms.get("normsys", {}).get("interpcode", "code4")
    hcode = ms.get("histosys", {}).get("interpcode", "code4p")
    if ncode not in _NORM_CODES or hcode not in _HISTO_CODES:
        raise FitInputError(f"unsupported interpolation codes normsys={ncode}, histosys={hcode}")
    meas = spec["measurements"]
    if measurement is not None:
        meas = [m for m in meas if m["name"] == measurement]
        if not meas:
            raise FitInputError(f"unknown measurement {measurement!r}")
    meas = meas[0]
    pconf = {p["name"]: p for p in meas["config"].get("parameters", [])}
    obs = {o["name"]: np.asarray(o["data"], np.float64) for o in spec["observations"]}
    chans_spec = sorted(spec["channels"], key=lambda c: c["name"])
    procs = sorted({s["name"] for c in chans_spec for s in c["samples"]})
    channels, off = [], 0
    for c in chans_spec:
        if c["name"] not in obs:
            raise FitInputError(f"channel {c['name']!r} has no observation")
        n = len(obs[c["name"]])
        for s in c["samples"]:
            if len(s["data"]) != n:
                raise FitInputError(
                    f"sample {s['name']!r} in channel {c['name']!r} has {len(s['data'])} bins, "
                    f"observation has {n}"
                )
        bins = hist.axis.Integer(0, n, name="bin", label="bin", underflow=False, overflow=False)
        ax = [axis_to_uhi(bins)]
        channels.append(Channel(c["name"], ax, off, off + n))
        off += n
    nb, npr = off, len(procs)
    nominal = np.zeros((nb, npr))
    data = np.concatenate([obs[c["name"]] for c in chans_spec])

    params: dict[str, dict[str, Any]] = {}

    def add_param(name, kind, constraint, init, bounds, center=0.0, width=1.0, fixed=False):
        if name in params:
            if params[name]["type"] != kind:
                raise FitInputError(f"parameter {name!r} used by two modifier types")
            return
        params[name] = dict(
            type=kind,
            constraint=constraint,
            init=init,
            lower=bounds[0],
            upper=bounds[1],
            center=center,
            width=width,
            fixed=fixed,
        )

    mult: dict[tuple[str, str], np.ndarray] = {}  # (modifier, sample) -> param name per bin
    norm: dict[str, list[tuple[int, int, float, float]]] = {}
    histo: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    # staterror sigmas need the sum over samples sharing the modifier in a channel
    stat_acc: dict[str, dict[str, Any]] = {}
    for ci, c in enumerate(chans_spec):
        ch = channels[ci]
        sl = slice(ch.start, ch.stop)
        for s in c["samples"]:
            p = procs.index(s["name"])
            nom = np.asarray(s["data"], np.float64)
            nominal[sl, p] = nom
            for m in s["modifiers"]:
                mn, mt, md = m["name"], m["type"], m.get("data")
                key = (mn, s["name"])
                names_bins = mult.setdefault(key, np.full(nb, "", dtype=object))
                if mt in ("normfactor", "lumi"):
                    if mt == "normfactor":
                        add_param(mn, "normfactor", FREE, 1.0, (0.0, 10.0))
                    else:
                        if mn not in pconf or "sigmas" not in pconf[mn]:
                            raise FitInputError(
                                f"lumi parameter {mn!r} needs sigmas in the measurement"
                            )
                        aux = pconf[mn].get("auxdata", [1.0])[0]
                        add_param(mn, "lumi", GAUSS, aux, (0.0, 10.0), aux, pconf[mn]["sigmas"][0])
                    names_bins[sl] = mn
                elif mt == "shapefactor":
                    for i in range(ch.stop - ch.start):
                        add_param(f"{mn}[{i}]", "shapefactor", FREE, 1.0, (0.0, 10.0))
                        names_bins[ch.start + i] = f"{mn}[{i}]"
                elif mt == "staterror":
                    acc = stat_acc.setdefault(mn, {"chan": ci, "nom": 0.0, "d2": []})
                    if acc["chan"] != ci:
                        raise FitInputError(f"staterror {mn!r} spans more than one channel")
                    acc["nom"] = acc["nom"] + nom
                    acc["d2"].append(np.asarray(md, np.float64))
                    for i in range(ch.stop - ch.start):
                        names_bins[ch.start + i] = f"{mn}[{i}]"
                elif mt == "shapesys":
                    unc = np.asarray(md, np.float64)
                    valid = (nom > 0) & (unc > 0)
                    with np.errstate(divide="ignore", invalid="ignore"):
                        tau = np.where(valid, nom**2 / np.where(valid, unc, 1.0) ** 2, 1.0)
                    for i in range(ch.stop - ch.start):
                        add_param(
                            f"{mn}[{i}]",
                            "shapesys",
                            POISSON,
                            1.0,
                            (1e-10, 10.0),
                            tau[i],
                            tau[i],
                            not valid[i],
                        )
                        names_bins[ch.start + i] = f"{mn}[{i}]"
                elif mt == "normsys":
                    hi, lo = float(md["hi"]), float(md["lo"])
                    if hi <= 0 or lo <= 0:
                        raise FitInputError(f"normsys {mn!r} on {s['name']!r}: hi/lo must be > 0")
                    add_param(mn, "normsys", GAUSS, 0.0, (-5.0, 5.0))
                    norm.setdefault(mn, []).append((ci, p, np.log(hi), np.log(lo)))
                elif mt == "histosys":
                    add_param(mn, "histosys", GAUSS, 0.0, (-5.0, 5.0))
                    vu = np.zeros(nb * npr)
                    vd = np.zeros(nb * npr)
                    rows = np.arange(ch.start, ch.stop) * npr + p
                    vu[rows] = np.asarray(md["hi_data"], np.float64) - nom
                    vd[rows] = np.asarray(md["lo_data"], np.float64) - nom
                    histo.setdefault(mn, []).append((vu, vd))
                else:
                    raise FitInputError(f"unsupported modifier type {mt!r} ({mn!r})")
    for mn, acc in stat_acc.items():
        with np.errstate(divide="ignore", invalid="ignore"):
            rel2 = sum(np.where(acc["nom"] > 0, (d / acc["nom"]) ** 2, 0.0) for d in acc["d2"])
        sig = np.sqrt(rel2)
        for i, sg in enumerate(sig):
            fixed = bool(sg == 0)
            add_param(
                f"{mn}[{i}]",
                "staterror",
                GAUSS,
                1.0,
                (1e-10, 10.0),
                1.0,
                1.0 if fixed else float(sg),
                fixed,
            )
    if meas["config"]["poi"] not in params:
        raise FitInputError(f"POI {meas['config']['poi']!r} is not a parameter of the model")
    # measurement overrides
    for name, cfg in pconf.items():
        if name not in params:
            # vector parameters are configured by their base name
            vec = [n for n in params if re.fullmatch(re.escape(name) + r"\[\d+\]", n)]
            if not vec:
                raise FitInputError(f"measurement configures unknown parameter {name!r}")
        else:
            vec = [name]
        for j, n in enumerate(vec):
            p = params[n]
            if "inits" in cfg:
                p["init"] = cfg["inits"][j]
            if "bounds" in cfg:
                p["lower"], p["upper"] = cfg["bounds"][j]
            if "fixed" in cfg:
                p["fixed"] = bool(cfg["fixed"])
            if "auxdata" in cfg and p["constraint"] != FREE:
                p["center"] = cfg["auxdata"][j]
            if "sigmas" in cfg and p["constraint"] == GAUSS:
                p["width"] = cfg["sigmas"][j]
    names = list(params)
    col = lambda k: np.array([params[n][k] for n in names], np.float64)  # noqa: E731
    mkeys = list(mult)
    mult_index = np.full((nb, len(mkeys)), -1, np.int64)
    mult_proc = np.zeros((len(mkeys), npr), bool)
    for m, key in enumerate(mkeys):
        nbins_names = mult[key]
        for b in range(nb):
            if nbins_names[b]:
                mult_index[b, m] = names.index(nbins_names[b])
        mult_proc[m, procs.index(key[1])] = True
    keep = np.any(mult_index >= 0, axis=0)
    mult_index, mult_proc = mult_index[:, keep], mult_proc[keep]
    kw: dict[str, Any] = {}
    if norm:
        nnames = list(norm)
        lu = np.zeros((len(channels), npr, len(nnames)))
        ld = np.zeros_like(lu)
        for k, n in enumerate(nnames):
            for ci, p, u, d in norm[n]:
                lu[ci, p, k] += u
                ld[ci, p, k] += d
        kw.update(
            norm_param=np.array([names.index(n) for n in nnames]),
            norm_logup=lu,
            norm_logdn=ld,
            norm_interp=ncode,
        )
    if histo:
        hnames = list(histo)
        vu = np.stack([sum(v for v, _ in histo[n]) for n in hnames], axis=1)
        vd = np.stack([sum(v for _, v in histo[n]) for n in hnames], axis=1)
        kw.update(
            add_param=np.array([names.index(n) for n in hnames]),
            add_avg=0.5 * (vu - vd),
            add_hd=0.5 * (vu + vd),
            add_interp=hcode,
        )
    fi = FitInput(
        channels=channels,
        processes=procs,
        signal=np.zeros(npr, bool),
        data=data,
        nominal=nominal,
        sumw2=np.zeros_like(nominal),
        param_names=names,
        param_constraint=np.array([params[n]["constraint"] for n in names], np.int64),
        param_center=col("center"),
        param_width=col("width"),
        param_init=col("init"),
        param_lower=col("lower"),
        param_upper=col("upper"),
        param_fixed=np.array([params[n]["fixed"] for n in names], bool),
        param_type=[params[n]["type"] for n in names],
        pois=[meas["config"]["poi"]],
        mult_index=mult_index,
        mult_proc=mult_proc,
        bb_mode="none",
        metadata={"source": "pyhf", "measurement": meas["name"], "modifier_settings": ms},
        **kw,
    )
    fi.validate()
    return fi


def to_pyhf(
    fi: FitInput, approximate: bool = False
) -> tuple[dict[str, Any], dict[str, dict[str, str]], list[str]]:
    """Export to a pyhf workspace: (spec, modifier_settings, notes on approximations)."""
    notes: list[str] = []

    def inexact(msg: str) -> None:
        if not approximate:
            raise FitInputError(f"{msg}; no exact pyhf equivalent (use approximate=True)")
        notes.append(msg)

    npr = fi.nproc
    names = fi.param_names
    base = lambda n: re.sub(r"\[\d+\]$", "", n)  # noqa: E731
    ms: dict[str, dict[str, str]] = {}
    if fi.norm_interp == "smooth" and len(fi.norm_param):
        inexact("norm systematics use smooth interpolation (written as normsys code4)")
    ms["normsys"] = {"interpcode": "code1" if fi.norm_interp == "code1" else "code4"}
    ms["histosys"] = {"interpcode": "code0" if fi.add_interp == "code0" else "code4p"}
    if len(fi.shape_param):
        inexact("log-normal shape systematics (written as histosys with the +-1 templates)")
    for i, t in enumerate(fi.param_type):
        if t == "unconstrained":
            inexact(f"unconstrained shape parameter {names[i]!r}")
    if fi.bb_mode == "lite" and np.any(fi.sumw2 > 0):
        inexact("Barlow-Beeston lite (written as Gaussian staterror)")
    shape_dense = None
    if len(fi.shape_param):
        sp = fi.shape_sparse
        if sp is not None:
            shape_dense = [np.zeros(sp.shape), np.zeros(sp.shape)]
            shape_dense[0][sp.rows, sp.cols] = sp.avg
            if sp.hd is not None:
                shape_dense[1][sp.rows, sp.cols] = sp.hd
        else:
            hd = fi.shape_hd if fi.shape_hd is not None else np.zeros_like(fi.shape_avg)
            shape_dense = [fi.shape_avg, hd]
    channels, observations = [], []
    pconf: dict[str, dict[str, Any]] = {}
    for ci, ch in enumerate(fi.channels):
        if ch.masked:
            inexact(f"masked channel {ch.name!r} (dropped)")
            continue
        sl = slice(ch.start, ch.stop)
        samples = []
        for p, proc in enumerate(fi.processes):
            nom = fi.nominal[sl, p]
            if not np.any(nom > 0):
                continue
            mods: list[dict[str, Any]] = []
            rows = np.arange(ch.start, ch.stop) * npr + p
            if fi.mult_index is not None:
                for m in range(fi.mult_index.shape[1]):
                    if not fi.mult_proc[m, p]:
                        continue
                    idx = fi.mult_index[sl, m]
                    if np.all(idx < 0):
                        continue
                    types = {fi.param_type[i] for i in idx if i >= 0}
                    (t,) = types
                    if t in ("poi", "normfactor", "lumi"):
                        n = names[idx[0]]
                        mods.append(
                            {
                                "name": n,
                                "type": "lumi" if t == "lumi" else "normfactor",
                                "data": None,
                            }
                        )
                        if t == "lumi":
                            pconf[n] = {
                                "name": n,
                                "auxdata": [float(fi.param_center[idx[0]])],
                                "sigmas": [float(fi.param_width[idx[0]])],
                                "inits": [float(fi.param_init[idx[0]])],
                                "bounds": [
                                    [float(fi.param_lower[idx[0]]), float(fi.param_upper[idx[0]])]
                                ],
                            }
                        else:
                            lo, hi = fi.param_lower[idx[0]], fi.param_upper[idx[0]]
                            lo = -1e3 if not np.isfinite(lo) else lo
                            hi = 1e3 if not np.isfinite(hi) else hi
                            pconf[n] = {
                                "name": n,
                                "bounds": [[float(lo), float(hi)]],
                                "inits": [float(fi.param_init[idx[0]])],
                            }
                    elif t == "shapefactor":
                        mods.append(
                            {"name": base(names[idx[0]]), "type": "shapefactor", "data": None}
                        )
                    elif t == "shapesys":
                        tau = fi.param_width[idx]
                        mods.append(
                            {
                                "name": base(names[idx[0]]),
                                "type": "shapesys",
                                "data": list(
                                    np.where(fi.param_fixed[idx], 0.0, nom / np.sqrt(tau))
                                ),
                            }
                        )
                    elif t == "staterror":
                        members = [
                            q
                            for m2 in range(fi.mult_index.shape[1])
                            for q in range(npr)
                            if fi.mult_proc[m2, q] and np.array_equal(fi.mult_index[sl, m2], idx)
                        ]
                        tot = fi.nominal[sl][:, members].sum(1)
                        rms = np.sqrt((fi.nominal[sl][:, members] ** 2).sum(1))
                        sig = np.where(fi.param_fixed[idx], 0.0, fi.param_width[idx])
                        with np.errstate(divide="ignore", invalid="ignore"):
                            d = np.where(rms > 0, sig * nom * tot / rms, 0.0)
                        mods.append(
                            {"name": base(names[idx[0]]), "type": "staterror", "data": list(d)}
                        )
            for k, pi in enumerate(fi.norm_param):
                u, d = fi.norm_logup[ci, p, k], fi.norm_logdn[ci, p, k]
                if u != 0 or d != 0:
                    mods.append(
                        {
                            "name": names[pi],
                            "type": "normsys",
                            "data": {"hi": float(np.exp(u)), "lo": float(np.exp(d))},
                        }
                    )
            for k, pi in enumerate(fi.add_param):
                a = fi.add_avg[rows, k]
                h = fi.add_hd[rows, k] if fi.add_hd is not None else 0 * a
                if np.any(a != 0) or np.any(h != 0):
                    mods.append(
                        {
                            "name": names[pi],
                            "type": "histosys",
                            "data": {"hi_data": list(nom + a + h), "lo_data": list(nom - a + h)},
                        }
                    )
            if shape_dense is not None:
                for k, pi in enumerate(fi.shape_param):
                    a, h = shape_dense[0][rows, k], shape_dense[1][rows, k]
                    if np.any(a != 0) or np.any(h != 0):
                        mods.append(
                            {
                                "name": names[pi],
                                "type": "histosys",
                                "data": {
                                    "hi_data": list(nom * np.exp(a + h)),
                                    "lo_data": list(nom * np.exp(h - a)),
                                },
                            }
                        )
            if fi.bb_mode == "full" and np.any(fi.sumw2[sl, p] > 0):
                mods.append(
                    {
                        "name": f"bb_{ch.name}_{proc}",
                        "type": "shapesys",
                        "data": list(np.sqrt(fi.sumw2[sl, p])),
                    }
                )
            elif fi.bb_mode == "lite" and np.any(fi.sumw2[sl, p] > 0):
                mods.append(
                    {
                        "name": f"staterror_{ch.name}",
                        "type": "staterror",
                        "data": list(np.sqrt(fi.sumw2[sl, p])),
                    }
                )
            samples.append({"name": proc, "data": list(map(float, nom)), "modifiers": mods})
        channels.append({"name": ch.name, "samples": samples})
        observations.append({"name": ch.name, "data": list(map(float, fi.data[sl]))})
    if not fi.pois:
        raise FitInputError("export needs a POI")
    spec = {
        "channels": channels,
        "observations": observations,
        "measurements": [
            {"name": "meas", "config": {"poi": fi.pois[0], "parameters": list(pconf.values())}}
        ],
        "version": "1.0.0",
    }
    spec = copy.deepcopy(spec)
    validate_workspace(spec)
    return spec, ms, notes
