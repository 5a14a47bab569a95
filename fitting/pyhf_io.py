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
import gzip
import json
import re
from pathlib import Path
from typing import Any

import hist
import jsonpatch
import jsonpointer
import jsonschema
import numpy as np
import pyhf

from wremnants_dask.histograms.axes import axis_to_uhi

from .fitinput import FREE, GAUSS, POISSON, Channel, FitInput, FitInputError

_NORM_CODES = {"code1": "code1", "code4": "code4"}
_HISTO_CODES = {"code0": "code0", "code4p": "code4p"}


def read_workspace(path: str | Path) -> dict[str, Any]:
    """A pyhf workspace from ``.json`` or ``.json.gz`` (HEPData publishes both)."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise FitInputError(f"cannot read pyhf workspace {path}: {err}") from err


def read_patch(path: str | Path) -> list[dict[str, Any]]:
    """A signal patch: a JSON patch (RFC 6902 list of operations) from ``.json``/``.json.gz``,
    or one patch of a pyhf patchset named as ``patchset.json:NAME`` (HEPData publishes the
    signal hypotheses of a search as one patchset next to its background-only workspace)."""
    m = re.fullmatch(r"(.*\.json(?:\.gz)?):(.+)", str(path))
    spath, name = (m.group(1), m.group(2)) if m else (str(path), "")
    doc = read_workspace(spath)
    if isinstance(doc, list):
        if name:
            raise FitInputError(f"{spath} is a JSON patch, not a patchset: no patch {name!r}")
        return doc
    if isinstance(doc, dict) and isinstance(doc.get("patches"), list):
        names = [pt.get("metadata", {}).get("name") for pt in doc["patches"]]
        if not name:
            raise FitInputError(
                f"{spath} is a patchset of {len(names)} patches: name one as {spath}:NAME "
                f"(e.g. {names[0]!r})"
            )
        if name not in names:
            raise FitInputError(f"patchset {spath} has no patch {name!r}")
        return doc["patches"][names.index(name)]["patch"]
    raise FitInputError(f"{spath} is neither a JSON patch nor a pyhf patchset")


def apply_patches(spec: dict[str, Any], patches: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """The workspace with each JSON patch applied in turn (as pyhf's ``Workspace.model(
    patches=...)``); ``spec`` is not modified. A patch that does not apply is a FitInputError
    naming the failing operation."""
    for k, patch in enumerate(patches):
        try:
            spec = jsonpatch.JsonPatch(patch).apply(spec)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as err:
            raise FitInputError(f"signal patch {k} does not apply to the workspace: {err}") from err
    return spec


def validate_workspace(spec: dict[str, Any]) -> None:
    """Validate a workspace with pyhf's own JSON schema (raises FitInputError).

    pyhf's schema lists the modifier types as an ``anyOf``, so jsonschema checks every
    modifier against each type in turn: 2-5 s for a published ATLAS workspace, most of an
    import. The same schema is applied in two cheaper parts (``_valid_by_parts``: the workspace
    without its modifiers, then each modifier against the definition of its own type); only
    where that finds a fault does the whole workspace go through pyhf's validation, whose
    message is raised."""
    if _valid_by_parts(spec):
        return
    try:
        pyhf.schema.validate(spec, "workspace.json")
    except pyhf.exceptions.InvalidSpecification as err:
        raise FitInputError(f"invalid pyhf workspace: {err}") from err
    raise FitInputError("invalid pyhf workspace: a modifier does not match its type's schema")


_MODIFIER_VALIDATORS: dict[str, Any] = {}


def _modifier_validator(kind: Any) -> Any:
    """jsonschema validator of pyhf's definition of modifier type ``kind`` (None if unknown)."""
    if not _MODIFIER_VALIDATORS:
        defs = pyhf.schema.load_schema(f"{pyhf.schema.version}/defs.json")["definitions"]
        for name, schema in defs["modifier"].items():
            cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft6Validator)
            _MODIFIER_VALIDATORS[name] = cls(schema)
    return _MODIFIER_VALIDATORS.get(kind) if isinstance(kind, str) else None


def _valid_by_parts(spec: Any) -> bool:
    """True if ``spec`` is valid: its skeleton (every modifier list emptied) under pyhf's
    workspace schema and each modifier under its own type's definition. False on any fault
    (the caller then reports pyhf's own message)."""
    try:
        skeleton = {
            **spec,
            "channels": [
                {**c, "samples": [{**smp, "modifiers": []} for smp in c["samples"]]}
                for c in spec["channels"]
            ],
        }
        pyhf.schema.validate(skeleton, "workspace.json")
        for c in spec["channels"]:
            for smp in c["samples"]:
                mods = smp["modifiers"]
                if not isinstance(mods, list):
                    return False
                for m in mods:
                    v = _modifier_validator(m.get("type")) if isinstance(m, dict) else None
                    if v is None or not v.is_valid(m):
                        return False
    except (TypeError, KeyError, AttributeError, pyhf.exceptions.InvalidSpecification):
        return False
    return True


# Measurement-configurable attributes per modifier type (pyhf raises for the others).
_CONFIGURABLE = {
    "normfactor": {"inits", "bounds", "fixed"},
    "shapefactor": {"inits", "bounds", "fixed"},
    "normsys": {"inits", "bounds", "fixed", "auxdata", "sigmas"},
    "histosys": {"inits", "bounds", "fixed", "auxdata", "sigmas"},
    "staterror": {"inits", "bounds", "fixed", "auxdata", "sigmas"},
    "lumi": {"inits", "bounds", "fixed", "auxdata", "sigmas"},
    "shapesys": {"inits", "bounds", "fixed", "auxdata", "factors"},
}
_PARSET_KEYS = ("constraint", "n", "init", "lower", "upper", "center", "width", "fixed")


class _Params:
    """Parameter sets as pyhf builds them: one set per modifier name, shared by every modifier
    of that name whose requirements agree (e.g. a normsys and a histosys of one systematic),
    an error otherwise (pyhf's InvalidNameReuse)."""

    def __init__(self) -> None:
        self.sets: dict[str, dict[str, Any]] = {}

    def require(
        self,
        name: str,
        kind: str,
        constraint: int,
        init: Any,
        bounds: Any,
        center: Any = 0.0,
        width: Any = 1.0,
        fixed: Any = False,
        n: int = 1,
    ) -> None:
        req = {
            "constraint": constraint,
            "n": n,
            "init": tuple(np.broadcast_to(np.asarray(init, float), n).tolist()),
            "lower": tuple(np.broadcast_to(np.asarray(bounds[0], float), n).tolist()),
            "upper": tuple(np.broadcast_to(np.asarray(bounds[1], float), n).tolist()),
            "center": tuple(np.broadcast_to(np.asarray(center, float), n).tolist()),
            "width": tuple(np.broadcast_to(np.asarray(width, float), n).tolist()),
            "fixed": tuple(np.broadcast_to(np.asarray(fixed, bool), n).tolist()),
            "types": [kind],
        }
        old = self.sets.get(name)
        if old is None:
            self.sets[name] = req
            return
        diff = [k for k in _PARSET_KEYS if old[k] != req[k]]
        if diff:
            raise FitInputError(
                f"modifier name {name!r} is reused by {old['types'][0]} and {kind} modifiers "
                f"with different {diff[0]} (pyhf: InvalidNameReuse); use distinct names"
            )
        if kind not in old["types"]:
            old["types"].append(kind)

    def configure(self, pconf: dict[str, dict[str, Any]], notes: list[str]) -> None:
        """Apply the measurement's parameter settings as pyhf does: settings of parameters no
        modifier creates are ignored (with a note), an attribute the modifier does not use or
        a value list of the wrong length is an error."""
        for name, cfg in pconf.items():
            ps = self.sets.get(name)
            if ps is None:
                notes.append(
                    f"measurement configures {name!r}, which no modifier creates: ignored (as pyhf)"
                )
                continue
            allowed = set.intersection(*(_CONFIGURABLE[t] for t in ps["types"]))
            for key in sorted(set(cfg) - {"name"}):
                if key not in allowed:
                    raise FitInputError(
                        f"measurement parameter {name!r}: a {ps['types'][0]} parameter does not "
                        f"use the {key!r} attribute"
                    )
                val = cfg[key]
                if key == "fixed":
                    fx = np.broadcast_to(np.asarray(val, bool), ps["n"])
                    ps["fixed"] = tuple(fx.tolist())
                    continue
                if len(val) != ps["n"]:
                    raise FitInputError(
                        f"measurement parameter {name!r}: {len(val)} values for {key!r}, "
                        f"the parameter has {ps['n']}"
                    )
                if key == "inits":
                    ps["init"] = tuple(map(float, val))
                elif key == "bounds":
                    ps["lower"] = tuple(float(b[0]) for b in val)
                    ps["upper"] = tuple(float(b[1]) for b in val)
                elif key == "auxdata":
                    ps["center"] = tuple(map(float, val))
                elif key == "sigmas":
                    ps["width"] = tuple(map(float, val))
                elif key == "factors":  # shapesys tau: the Poisson constraint's rate factor
                    ps["width"] = tuple(map(float, val))

    def flat(self) -> dict[str, dict[str, Any]]:
        """One entry per scalar parameter, named as pyhf does (``name`` or ``name[i]``)."""
        out: dict[str, dict[str, Any]] = {}
        for name, ps in self.sets.items():
            vec = ps["types"][0] in ("staterror", "shapesys", "shapefactor")
            for i in range(ps["n"]):
                out[f"{name}[{i}]" if vec else name] = {
                    k: ps[k][i] for k in _PARSET_KEYS if k not in ("n", "constraint")
                } | {"constraint": ps["constraint"], "type": ps["types"][0]}
        return out


def from_pyhf(
    spec: dict[str, Any],
    measurement: str | None = None,
    modifier_settings: dict[str, dict[str, str]] | None = None,
) -> FitInput:
    """Compile a pyhf workspace (JSON dict) into a FitInput, exactly as pyhf builds its model.

    A measurement POI that no modifier creates (background-only workspaces) gives a fit
    without POI, as pyhf's ``poi_name=None``; measurement settings of such absent parameters
    are ignored. Both are listed in ``metadata["notes"]``."""
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
    notes: list[str] = []
    pconf: dict[str, dict[str, Any]] = {}
    for p in meas["config"].get("parameters", []):
        if p["name"] in pconf:
            raise FitInputError(f"measurement configures parameter {p['name']!r} twice")
        pconf[p["name"]] = p
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

    params = _Params()
    mult: dict[tuple[str, str], np.ndarray] = {}  # (modifier, sample) -> param name per bin
    norm: dict[str, list[tuple[int, int, float, float]]] = {}
    histo: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    # staterror sigmas need the sum over samples sharing the modifier in a channel
    stat_acc: dict[str, dict[str, Any]] = {}
    for ci, c in enumerate(chans_spec):
        ch = channels[ci]
        sl = slice(ch.start, ch.stop)
        nbc = ch.stop - ch.start
        vec_names = lambda mn, n=nbc: [f"{mn}[{i}]" for i in range(n)]  # noqa: E731
        for s in c["samples"]:
            p = procs.index(s["name"])
            nom = np.asarray(s["data"], np.float64)
            nominal[sl, p] = nom
            for m in s["modifiers"]:
                mn, mt, md = m["name"], m["type"], m.get("data")
                key = (mn, s["name"])
                names_bins = mult.setdefault(key, np.full(nb, "", dtype=object))
                if mt == "normfactor":
                    params.require(mn, mt, FREE, 1.0, (0.0, 10.0))
                    names_bins[sl] = mn
                elif mt == "lumi":
                    cfg = pconf.get(mn, {})
                    if "sigmas" not in cfg or "auxdata" not in cfg:
                        raise FitInputError(
                            f"lumi parameter {mn!r} needs auxdata and sigmas in measurement "
                            f"{meas['name']!r}"
                        )
                    aux = cfg["auxdata"][0]
                    params.require(mn, mt, GAUSS, aux, (0.0, 10.0 * aux), aux, cfg["sigmas"][0])
                    names_bins[sl] = mn
                elif mt == "shapefactor":
                    params.require(mn, mt, FREE, 1.0, (0.0, 10.0), n=nbc)
                    names_bins[sl] = vec_names(mn)
                elif mt == "staterror":
                    acc = stat_acc.setdefault(mn, {"chan": ci, "nom": 0.0, "d2": []})
                    if acc["chan"] != ci:
                        raise FitInputError(f"staterror {mn!r} spans more than one channel")
                    acc["nom"] = acc["nom"] + nom
                    acc["d2"].append(np.asarray(md, np.float64))
                    names_bins[sl] = vec_names(mn)
                elif mt == "shapesys":
                    unc = np.asarray(md, np.float64)
                    valid = (nom > 0) & (unc > 0)
                    with np.errstate(divide="ignore", invalid="ignore"):
                        tau = np.where(valid, nom**2 / np.where(valid, unc, 1.0) ** 2, 1.0)
                    params.require(mn, mt, POISSON, 1.0, (1e-10, 10.0), tau, tau, ~valid, nbc)
                    names_bins[sl] = vec_names(mn)
                elif mt == "normsys":
                    hi, lo = float(md["hi"]), float(md["lo"])
                    if hi <= 0 or lo <= 0:
                        raise FitInputError(f"normsys {mn!r} on {s['name']!r}: hi/lo must be > 0")
                    params.require(mn, mt, GAUSS, 0.0, (-5.0, 5.0))
                    norm.setdefault(mn, []).append((ci, p, np.log(hi), np.log(lo)))
                elif mt == "histosys":
                    params.require(mn, mt, GAUSS, 0.0, (-5.0, 5.0))
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
        fixed = sig == 0  # pyhf fixes bins without uncertainty (sigma set to 1)
        params.require(
            mn,
            "staterror",
            GAUSS,
            1.0,
            (1e-10, 10.0),
            1.0,
            np.where(fixed, 1.0, sig),
            fixed,
            len(sig),
        )
    params.configure(pconf, notes)
    poi = meas["config"]["poi"]
    if poi in params.sets:
        pois = [poi]
    else:
        pois = []
        notes.append(
            f"measurement POI {poi!r} is not a parameter of the model: fit without a POI "
            "(pyhf: poi_name=None)"
        )
    flat = params.flat()
    names = list(flat)
    col = lambda k: np.array([flat[n][k] for n in names], np.float64)  # noqa: E731
    index = {n: i for i, n in enumerate(names)}
    # One multiplicative set per modifier and set of samples it scales in a channel (not per
    # modifier and sample): a lumi on every sample of every channel is one set instead of
    # hundreds, which keeps the product over sets and its derivatives small.
    per_chan: dict[tuple[int, str], set[str]] = {}
    for (mn, sample), names_bins in mult.items():
        for ci, ch in enumerate(channels):
            if any(names_bins[ch.start : ch.stop]):
                per_chan.setdefault((ci, mn), set()).add(sample)
    sets: dict[tuple[str, frozenset[str]], np.ndarray] = {}
    for (ci, mn), samples in per_chan.items():
        ch = channels[ci]
        idx = sets.setdefault((mn, frozenset(samples)), np.full(nb, -1, np.int64))
        names_bins = mult[(mn, next(iter(samples)))]
        idx[ch.start : ch.stop] = [index[n] for n in names_bins[ch.start : ch.stop]]
    mkeys = list(sets)
    mult_index = np.stack([sets[k] for k in mkeys], axis=1) if mkeys else np.zeros((nb, 0), int)
    mult_proc = np.zeros((len(mkeys), npr), bool)
    for m, (_, samples) in enumerate(mkeys):
        mult_proc[m, [procs.index(p) for p in samples]] = True
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
            norm_param=np.array([index[n] for n in nnames]),
            norm_logup=lu,
            norm_logdn=ld,
            norm_interp=ncode,
        )
    if histo:
        hnames = list(histo)
        vu = np.stack([sum(v for v, _ in histo[n]) for n in hnames], axis=1)
        vd = np.stack([sum(v for _, v in histo[n]) for n in hnames], axis=1)
        kw.update(
            add_param=np.array([index[n] for n in hnames]),
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
        param_constraint=np.array([flat[n]["constraint"] for n in names], np.int64),
        param_center=col("center"),
        param_width=col("width"),
        param_init=col("init"),
        param_lower=col("lower"),
        param_upper=col("upper"),
        param_fixed=np.array([flat[n]["fixed"] for n in names], bool),
        param_type=[flat[n]["type"] for n in names],
        pois=pois,
        mult_index=mult_index,
        mult_proc=mult_proc,
        bb_mode="none",
        metadata={
            "source": "pyhf",
            "measurement": meas["name"],
            "measurement_poi": poi,
            "modifier_settings": ms,
            "notes": notes,
        },
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
    if fi.norm_interp in ("smooth", "rabbit") and len(fi.norm_param):
        inexact(f"norm systematics use {fi.norm_interp} interpolation (written as normsys code4)")
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
    written: dict[str, str] = {}  # parameter (base) name -> pyhf modifier type written
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
                        kind = "lumi" if t == "lumi" else "normfactor"
                        mods.append({"name": n, "type": kind, "data": None})
                        written.setdefault(n, kind)
                    elif t == "shapefactor":
                        mods.append(
                            {"name": base(names[idx[0]]), "type": "shapefactor", "data": None}
                        )
                        written.setdefault(base(names[idx[0]]), "shapefactor")
                    elif t == "shapesys":
                        tau = fi.param_width[idx]
                        written.setdefault(base(names[idx[0]]), "shapesys")
                        mods.append(
                            {
                                "name": base(names[idx[0]]),
                                "type": "shapesys",
                                # pyhf fixes bins without uncertainty (tau 1 on import)
                                "data": list(
                                    np.where(_auto_fixed(fi, idx), 0.0, nom / np.sqrt(tau))
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
                        sig = np.where(_auto_fixed(fi, idx), 0.0, fi.param_width[idx])
                        with np.errstate(divide="ignore", invalid="ignore"):
                            d = np.where(rms > 0, sig * nom * tot / rms, 0.0)
                        written.setdefault(base(names[idx[0]]), "staterror")
                        mods.append(
                            {"name": base(names[idx[0]]), "type": "staterror", "data": list(d)}
                        )
            for k, pi in enumerate(fi.norm_param):
                u, d = fi.norm_logup[ci, p, k], fi.norm_logdn[ci, p, k]
                if u != 0 or d != 0:
                    written.setdefault(names[pi], "normsys")
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
                    written.setdefault(names[pi], "histosys")
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
                        written.setdefault(names[pi], "histosys")
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
    poi = fi.pois[0] if fi.pois else fi.metadata.get("measurement_poi")
    if not poi:
        raise FitInputError("export needs a POI (or the measurement POI of a pyhf import)")
    spec = {
        "channels": channels,
        "observations": observations,
        "measurements": [
            {
                "name": fi.metadata.get("measurement", "meas"),
                "config": {"poi": poi, "parameters": _measurement_parameters(fi, written)},
            }
        ],
        "version": "1.0.0",
    }
    spec = copy.deepcopy(spec)
    validate_workspace(spec)
    return spec, ms, notes


def _measurement_parameters(fi: FitInput, written: dict[str, str]) -> list[dict[str, Any]]:
    """Measurement entries for every exported parameter whose settings differ from what pyhf
    derives from the modifiers alone: lumi always (pyhf needs its auxdata and sigmas),
    normalisations always (their bounds), others where the init, bounds, fixed flags or
    constraint differ from pyhf's defaults. Fixed parameters are written with ``fixed`` and
    the value they are fixed at (``inits``), so they stay fixed through a round trip."""
    out = []
    for base, kind in written.items():
        if base in fi.param_names:
            idx = np.array([fi.param_names.index(base)])
            vector = False
        else:
            idx = np.array([fi.param_names.index(f"{base}[{i}]") for i in range(_nvec(fi, base))])
            vector = True
        init, lo, hi = fi.param_init[idx], fi.param_lower[idx], fi.param_upper[idx]
        fixed, cen, wid = fi.param_fixed[idx], fi.param_center[idx], fi.param_width[idx]
        ent: dict[str, Any] = {"name": base}
        if kind in ("normfactor", "shapefactor"):
            d_init, d_lo, d_hi = 1.0, 0.0, 10.0
            lo = np.where(np.isfinite(lo), lo, -1e3)
            hi = np.where(np.isfinite(hi), hi, 1e3)
        elif kind in ("normsys", "histosys"):
            d_init, d_lo, d_hi = 0.0, -5.0, 5.0
        else:  # lumi, staterror, shapesys
            d_init, d_lo, d_hi = 1.0, 1e-10, 10.0
        always = kind in ("lumi", "normfactor")
        if always or np.any(init != d_init):
            ent["inits"] = init.tolist()
        if always or np.any(lo != d_lo) or np.any(hi != d_hi):
            ent["bounds"] = [[float(a), float(b)] for a, b in zip(lo, hi)]
        if kind == "lumi":
            ent["auxdata"], ent["sigmas"] = cen.tolist(), wid.tolist()
        elif kind in ("normsys", "histosys"):
            if np.any(cen != 0.0):
                ent["auxdata"] = cen.tolist()
            if np.any(wid != 1.0):
                ent["sigmas"] = wid.tolist()
        elif kind == "staterror" and np.any(cen != 1.0):
            ent["auxdata"] = cen.tolist()
        elif kind == "shapesys" and np.any(cen != wid):
            ent["auxdata"] = cen.tolist()
        if np.any(fixed):
            ent["fixed"] = fixed.tolist() if vector else True
            ent.setdefault("inits", init.tolist())
        if len(ent) > 1:
            out.append(ent)
    return out


def _nvec(fi: FitInput, base: str) -> int:
    n = 0
    while f"{base}[{n}]" in fi.param_names:
        n += 1
    return n


def _auto_fixed(fi: FitInput, idx: np.ndarray) -> np.ndarray:
    """Bins pyhf fixes itself (no uncertainty: imported as fixed with width 1); other fixed
    bins keep their width and are fixed through the measurement."""
    return fi.param_fixed[idx] & (fi.param_width[idx] == 1.0)
