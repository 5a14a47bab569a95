"""Turn a histmaker output into a fit input: ``python -m wremnants_dask.setup_fit INPUT.hdf5 -o DIR``.

Driven by a fit config (``configs/fit_<analysis>.yaml``, read by ``fitsetup.config``): samples
are normalised (xsec x lumi / sum of generator weights) and summed into the config's processes,
the fit region is selected, the non-prompt background of the W analysis is predicted from data
(ABCD, smoothed, with every prompt systematic propagated through the prompt subtraction), and
each systematic of the config becomes named parameters in its impact group through the builder
of its type (``fitsetup.systematics.SYSTEMATIC_TYPES``). The boson mass is an unconstrained
parameter from the mass-variation templates: ``m = m_ref + step_mev * theta``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import hist
import numpy as np

from wremnants_dask.fitsetup import abcd, histops
from wremnants_dask.fitsetup.closure import McClosure, mc_closure
from wremnants_dask.fitsetup.config import (
    AnalysisSetup,
    FitConfig,
    SetupError,
    default_config,
    load_fit_config,
)
from wremnants_dask.fitsetup.systematics import (  # noqa: F401 (the pdf helpers: public API)
    MASS_PARAM,
    SYSTEMATIC_TYPES,
    BuildContext,
    _pdf,
    lnN_kappas,
    pdf_set_of,
    replica_coefficients,
    replica_variations,
    tensor_axes,
)
from wremnants_dask.histograms.histio import HistFile
from wremnants_dask.inputs.normalization import NormalizationError, info_scale
from wremnants_dask.synth.processes import DATA_GROUP

#: Expected events given to bins that no simulated event reaches (see _floor_empty_bins).
EMPTY_BIN_FLOOR = 1e-3


def reference_mass(meta: dict[str, Any], boson: str, where: str) -> float:
    """Boson mass (GeV) the run's simulation and mass templates are centred on, as the
    histmaker recorded it from the corrections payload it used."""
    masses = (meta.get("analysis_metadata") or {}).get("reference_mass_gev") or {}
    if boson not in masses:
        raise SetupError(
            f"{where}: the histmaker output does not record the reference {boson} mass "
            "(analysis_metadata.reference_mass_gev); rerun the histmaker with this version"
        )
    return float(masses[boson])


# ----------------------------------------------------------------------------- reading
def _values(h: hist.Hist, flow: bool = True) -> np.ndarray:
    """Writable bin values of a Weight or Double histogram."""
    view = h.view(flow=flow)
    return view.value if hasattr(view, "value") else view


def _add_nominal(total: hist.Hist, nominal: np.ndarray) -> None:
    """Add a nominal (no variation axes) to every variation entry of ``total``, in place."""
    vals = _values(total)
    vals += nominal.reshape(nominal.shape + (1,) * (vals.ndim - nominal.ndim))


@dataclass
class Samples:
    """Normalised per-sample access to one histogram family of a histmaker file."""

    hf: HistFile
    norms: dict[str, float]
    groups: dict[str, list[str]]
    data: list[str]
    lumi_pb: float
    _variations: dict[tuple[str, str, str], hist.Hist | None] = field(default_factory=dict)

    def nominal(self, sample: str, name: str) -> hist.Hist:
        h = self.hf.get(sample, name)
        return histops.scale(h, self.norms.get(sample, 1.0))

    def group_sum(self, group: str, name: str) -> hist.Hist:
        return _sum([self.nominal(s, name) for s in self.groups[group]])

    def process_sum(self, groups: Sequence[str], name: str) -> hist.Hist:
        """A fit process: the sum of its histmaker groups."""
        if len(groups) == 1:
            return self.group_sum(groups[0], name)
        return _sum([self.group_sum(g, name) for g in groups])

    def process_variation(self, groups: Sequence[str], base: str, suffix: str) -> hist.Hist | None:
        """``variation`` summed over a process's groups; groups without it count with their
        nominal. None when no group carries it."""
        if len(groups) == 1:
            return self.variation(groups[0], base, suffix)
        parts = {g: self.variation(g, base, suffix) for g in groups}
        have = [g for g, h in parts.items() if h is not None]
        if not have:
            return None
        total = _sum([parts[g] for g in have])
        rest = [g for g in groups if g not in have]
        if rest:
            _add_nominal(total, sum(self.group_sum(g, base).values(flow=True) for g in rest))
        return total

    def variation(self, group: str, base: str, suffix: str) -> hist.Hist | None:
        """Group sum of ``base_suffix``; samples without it count with their nominal.

        Read once per (group, variation) and cached: the templates and the non-prompt
        propagation both need it. Callers must not modify the returned histogram.
        """
        key = (group, base, suffix)
        if key not in self._variations:
            self._variations[key] = self._read_variation(group, base, suffix)
        return self._variations[key]

    def _read_variation(self, group: str, base: str, suffix: str) -> hist.Hist | None:
        name = f"{base}_{suffix}"
        have = [s for s in self.groups[group] if name in self.hf.names(s)]
        if not have:
            return None
        total = _sum([self.nominal(s, name) for s in have])
        missing = [s for s in self.groups[group] if s not in have]
        if missing:
            _add_nominal(total, sum(self.nominal(s, base).values(flow=True) for s in missing))
        return total


def open_samples(hf: HistFile, lumi_scale: float = 1.0) -> Samples:
    """Normalise every simulated sample to the data luminosity of the file."""
    groups: dict[str, list[str]] = {}
    data, lumi = [], 0.0
    infos = {ds: hf.info(ds) for ds in hf.datasets}
    for ds, info in infos.items():
        if info["is_data"]:
            data.append(ds)
            if not info.get("lumi_pb"):
                raise SetupError(f"{hf.path}: data dataset {ds!r} has no luminosity (lumi_pb)")
            lumi += float(info["lumi_pb"])
    if not data:
        raise SetupError(
            f"{hf.path}: no data dataset; use --asimov with --lumi to fit without data"
        )
    norms = {}
    for ds, info in infos.items():
        group = DATA_GROUP if info["is_data"] else info["group"]
        groups.setdefault(group, []).append(ds)
        if info["is_data"]:
            norms[ds] = lumi_scale
            continue
        try:
            norms[ds] = info_scale(info, lumi) * lumi_scale
        except NormalizationError as err:
            raise SetupError(f"{hf.path}: dataset {ds!r} {err}") from None
    return Samples(hf, norms, groups, data, lumi * lumi_scale)


def _fit_region(h: hist.Hist, setup: AnalysisSetup) -> hist.Hist:
    return histops.select(h, setup.region) if setup.region else h


# ----------------------------------------------------------------------------- building
def _project(h: hist.Hist, axes: Sequence[str]) -> hist.Hist:
    keep = list(axes) + [a.name for a in h.axes if a.name not in axes and _is_variation(h, a.name)]
    return h.project(*keep)


ANALYSIS_AXES = frozenset({"eta", "pt", "charge", "passIso", "passMT", "mt", "mll", "ptll", "yll"})


def _is_variation(h: hist.Hist, name: str) -> bool:
    """Variation (tensor) axes are every axis that is not an analysis axis."""
    return name not in ANALYSIS_AXES


def resolve_setup(
    cfg: FitConfig, h: hist.Hist, where: str
) -> tuple[AnalysisSetup, AbcdRegions | None]:
    """The fit definition of ``cfg`` on histogram ``h`` of the input ``where``: the fit region
    (the ABCD signal bins first, then ``region``) and the ABCD axes; errors name the config key."""
    names = list(h.axes.name)
    for i, a in enumerate(cfg.fit_axes):
        if a not in names:
            raise SetupError(
                f"{cfg.path}: fit_axes[{i}]: {a!r} is not an axis of {cfg.histogram!r} in "
                f"{where} (axes: {names})"
            )
    region: dict[str, Any] = {}
    regions = None
    np_cfg = cfg.nonprompt
    if np_cfg is not None:
        key = f"{cfg.path}: nonprompt"
        if np_cfg.iso_axis not in names:
            raise SetupError(f"{key}.iso_axis: {np_cfg.iso_axis!r} is not an axis of {where}")
        have = [a for a in np_cfg.mt_axis if a in names]
        if not have:
            raise SetupError(f"{key}.mt_axis: none of {list(np_cfg.mt_axis)} is an axis of {where}")
        mt = have[0]
        n_mt = len(h.axes[mt])
        method = "simple" if n_mt == 2 else "extended"
        if np_cfg.method not in ("auto", method):
            raise SetupError(
                f"{key}.method: {np_cfg.method!r}, but {where} has {n_mt} bins on {mt!r} "
                f"({method} ABCD; rerun the histmaker with the matching mT binning)"
            )
        if not -n_mt <= np_cfg.mt_signal < n_mt:
            raise SetupError(f"{key}.mt_signal: bin {np_cfg.mt_signal} of {n_mt} on {mt!r}")
        sig = np_cfg.mt_signal % n_mt
        region[np_cfg.iso_axis] = np_cfg.iso_pass
        region[mt] = True if isinstance(h.axes[mt], hist.axis.Boolean) and sig == 1 else sig
        regions = AbcdRegions(
            np_cfg.iso_axis,
            int(np_cfg.iso_pass),
            mt,
            sig,
            smoothing_order=np_cfg.smoothing_order,
            decorrelate=np_cfg.decorrelate,
        )
    for k, v in cfg.region.items():
        if k not in names:
            raise SetupError(f"{cfg.path}: region.{k}: not an axis of {where} (axes: {names})")
        region[k] = v
    setup = AnalysisSetup(
        histogram=cfg.histogram,
        fit_axes=cfg.fit_axes,
        signal=cfg.signal,
        boson=cfg.boson,
        region=region,
        nonprompt=np_cfg is not None,
        channel=cfg.channel,
    )
    return setup, regions


def check_against_input(cfg: FitConfig, samples: Samples, base_axes: Sequence[str]) -> None:
    """Every process group, tensor and axis the config names must be in the input; every
    simulated group of the input must belong to a process (or be the closure sample)."""
    where = samples.hf.path
    known = [g for g in samples.groups if g != DATA_GROUP]
    used = set()
    for p in cfg.processes:
        for g in p.groups:
            if g not in samples.groups:
                raise SetupError(
                    f"{cfg.path}: processes.{p.name}.groups: {g!r} is not a process group of "
                    f"{where} (groups: {known})"
                )
            used.add(g)
    closure = cfg.nonprompt.closure_group if cfg.nonprompt is not None else None
    stray = [g for g in known if g not in used and g != closure and g not in cfg.ignore_groups]
    if stray:
        raise SetupError(
            f"{cfg.path}: processes: the group(s) {stray} of {where} belong to no process "
            "(add them to a process's groups, or to ignore_groups)"
        )
    groups_of = {p.name: p.groups for p in cfg.processes}
    for s in cfg.systematics:
        if not SYSTEMATIC_TYPES[s.type].tensor:
            continue
        procs = cfg.process_names if s.processes is None else list(s.processes)
        name = f"{cfg.histogram}_{s.tensor}"
        found = None
        for p in procs:
            have = [
                ds for g in groups_of[p] for ds in samples.groups[g] if name in samples.hf.names(ds)
            ]
            if not have and s.processes is not None:
                raise SetupError(f"{s.where}.processes: {p!r} has no histogram {name!r} in {where}")
            found = found or (have[0] if have else None)
        if found is None:
            continue  # no process carries it (e.g. a run without systematics)
        axes = list(samples.hf.get(found, name).axes.name)
        for a in tensor_axes(s):
            if a not in axes:
                raise SetupError(f"{s.where}: {name!r} in {where} has no axis {a!r} (axes: {axes})")
        dec = s.options.get("decorrelate")
        if dec is not None and dec.get("unless_axis") not in axes and dec["axis"] not in base_axes:
            raise SetupError(
                f"{s.where}.decorrelate.axis: {dec['axis']!r} is not an axis of "
                f"{cfg.histogram!r} in {where}"
            )


def build_fit_input(
    hf: HistFile,
    analysis: str | None = None,
    *,
    config: FitConfig | str | None = None,
    asimov: bool = False,
    exclude_groups: Sequence[str] = (),
    lumi_scale: float = 1.0,
    sparse: bool = False,
    nonprompt_from_data: bool = True,
    nonprompt_eta_merge: int | None = None,
    interp: str = "rabbit",
) -> tuple[Any, dict[str, Any]]:
    """Build the FitInputWriter from the fit config; returns (writer, summary).

    ``config``: a FitConfig, a path or packaged name (default ``configs/fit_<analysis>.yaml``).
    ``interp``: interpolation of asymmetric shape and norm systematics, ``rabbit`` (the CMS
    fitter's, default: these are CMS-style setups) or ``smooth`` (``fitting/interp.py``).
    ``nonprompt_eta_merge`` overrides the config's ``nonprompt.eta_merge``.
    """
    from wremnants_dask.fitting.fitinput_writer import FitInputWriter

    if config is None:
        if analysis is None:
            raise SetupError(f"{hf.path}: give the analysis or a fit config")
        config = default_config(analysis)
    cfg = config if isinstance(config, FitConfig) else load_fit_config(config)
    analysis = analysis or cfg.analysis
    if interp not in ("rabbit", "smooth"):
        raise SetupError(f"interp must be 'rabbit' or 'smooth', got {interp!r}")
    where = str(hf.path)
    samples = open_samples(hf, lumi_scale)
    base = cfg.histogram
    for ds in hf.datasets:
        if base not in hf.names(ds):
            raise SetupError(
                f"{hf.path}: dataset {ds!r} has no histogram {base!r} ({cfg.path}: histogram)"
            )
    data_full = samples.group_sum(DATA_GROUP, base)
    setup, regions = resolve_setup(cfg, data_full, where)
    check_against_input(cfg, samples, list(data_full.axes.name))

    groups_of = {p.name: p.groups for p in cfg.processes}
    prompt = cfg.process_names
    full = {p: samples.process_sum(groups_of[p], base) for p in prompt}

    procs: dict[str, hist.Hist] = {
        g: _project(_fit_region(full[g], setup), setup.fit_axes) for g in prompt
    }
    np_cfg = cfg.nonprompt if nonprompt_from_data else None
    np_est = None
    if np_cfg is not None and regions is not None:
        closure = np_cfg.closure_group
        qcd_mc = samples.group_sum(closure, base) if closure in samples.groups else None
        merge = np_cfg.eta_merge if nonprompt_eta_merge is None else nonprompt_eta_merge
        np_est = estimate_nonprompt(data_full, _sum(list(full.values())), qcd_mc, merge, regions)
        procs[np_cfg.process] = np_est.nominal.project(*setup.fit_axes)

    data = _project(_fit_region(data_full, setup), setup.fit_axes)
    if asimov:
        data = _asimov(procs)

    w = FitInputWriter(sparse=sparse, shape_interp=interp, norm_interp=interp)
    ch = setup.channel
    w.add_channel(ch, data.axes)
    w.add_data(data, ch)
    n_clipped, n_unfilled = {}, {}
    for g in procs:
        procs[g], n_clipped[g] = _clip_negative(procs[g])
    for g in prompt:
        procs[g], n_unfilled[g] = _empty_bin_variance(procs[g])
    n_floored = _floor_empty_bins(procs, setup.signal)
    for g, h in procs.items():
        w.add_process(h, g, ch, signal=(g == setup.signal))

    params_by_group: dict[str, set[str]] = {}

    def add(group: str, proc: str, spec: dict[str, Any]) -> None:
        if group in exclude_groups:
            return
        spec = dict(spec)
        unreliable = _unreliable_bins(procs[proc])
        for key in ("variations", "up", "down"):
            if spec.get(key) is not None:
                spec[key] = _neutralise(
                    _project(spec[key], setup.fit_axes), procs[proc].values(), unreliable
                )
        # the measured (unconstrained) mass is the POI: it belongs to no impact group
        groups = [] if spec.get("constrained") is False else [group]
        created = w.add_shape_systematic(spec.pop("name"), proc, ch, groups=groups, **spec)
        params_by_group.setdefault(group, set()).update(created)

    shapes = [s for s in cfg.systematics if SYSTEMATIC_TYPES[s.type].tensor]
    ameta = dict(hf.metadata.get("analysis_metadata") or {})
    pdf_tensors = {s.tensor for s in shapes if s.type == "pdf"}
    pdf_coeffs = {
        t: _replica_pdf_coefficients(samples, [groups_of[p] for p in prompt], base, setup, t)
        for t in pdf_tensors
    }
    for g in prompt:
        for s in shapes:
            if s.processes is not None and g not in s.processes:
                continue
            var = samples.process_variation(groups_of[g], base, s.tensor)
            if var is None:
                continue
            ctx = BuildContext(setup, g, pdf_coeffs.get(s.tensor), ameta)
            build = SYSTEMATIC_TYPES[s.type].build
            for spec in build(s, _fit_region(var, setup), _fit_region(full[g], setup), ctx):
                add(s.group, g, spec)

    # Prompt systematics move the non-prompt prediction through the prompt subtraction.
    if np_est is not None:
        npp = np_cfg.process
        for s in shapes:
            if not s.nonprompt:
                continue
            varied = [p for p in prompt if s.processes is None or p in s.processes]
            var_total = _prompt_variation_total(
                samples, prompt, varied, groups_of, base, s.tensor, full
            )
            if var_total is None:
                continue
            ctx = BuildContext(setup, npp, pdf_coeffs.get(s.tensor), ameta)
            build = SYSTEMATIC_TYPES[s.type].build
            for spec in build(s, np_est.varied(data_full, var_total), np_est.nominal, ctx):
                add(s.group, npp, spec)
        if np_cfg.group not in exclude_groups:
            if np_cfg.eigen and np_est.eigen is not None:
                fit_ax = set(setup.fit_axes)
                created = w.add_shape_systematic(
                    np_cfg.eigen_name,
                    npp,
                    ch,
                    variations=np_est.eigen.project(
                        *setup.fit_axes, *[a for a in np_est.eigen.axes.name if a not in fit_ax]
                    ),
                    groups=[np_cfg.group],
                )
                params_by_group.setdefault(np_cfg.group, set()).update(created)
            kappa = np_cfg.norm_kappa
            if (
                np_cfg.norm_from_closure
                and np_est.correction is None
                and np_est.closure is not None
            ):
                # uncorrected: the non-closure itself is the normalisation uncertainty
                kappa = max(kappa, np.exp(abs(np.log(np_est.closure))))
            norm_name = np_cfg.norm_name
            w.add_norm_systematic(norm_name, npp, kappa, groups=[np_cfg.group])
            params_by_group.setdefault(np_cfg.group, set()).add(norm_name)
            if np_est.correction is not None:
                # the MC non-closure correction applied to the prediction: its uncertainty
                w.add_norm_systematic(
                    "nonpromptClosure",
                    npp,
                    1.0 + np_est.correction.uncertainty,
                    groups=[np_cfg.group],
                )
                params_by_group[np_cfg.group].add("nonpromptClosure")

    for s in cfg.systematics:
        if s.type != "lnN" or s.group in exclude_groups:
            continue
        targets = prompt if s.processes is None else list(s.processes)
        kappas = lnN_kappas(s, targets)
        if "{process}" in s.name:
            for p, k in kappas.items():
                w.add_norm_systematic(s.name.replace("{process}", p), p, k, groups=[s.group])
        elif len({k for k in kappas.values()}) == 1:
            w.add_norm_systematic(
                s.name, list(kappas), next(iter(kappas.values())), groups=[s.group]
            )
        else:
            for p, k in kappas.items():
                w.add_norm_systematic(s.name, p, k, groups=[s.group])

    mass = [s for s in cfg.systematics if s.type == "mass" and s.options["boson"] == setup.boson]
    step = int(mass[0].options.get("step_mev", 100)) if mass else None
    mass_param = MASS_PARAM.format(boson=setup.boson, step=step) if mass else None
    summary = {
        "analysis": analysis,
        "fit_config": cfg.path,
        "channel": ch,
        "fit_axes": list(setup.fit_axes),
        "processes": list(procs),
        "signal": setup.signal,
        "lumi_pb": samples.lumi_pb,
        "asimov": asimov,
        "interp": interp,
        "mass_param": mass_param,
        "mass_step_mev": step,
        "mass_reference_gev": reference_mass(hf.metadata, setup.boson, where),
        "n_params_by_group": {g: len(p) for g, p in params_by_group.items()},
        "nonprompt_eta_merge": None if np_est is None else np_est.merge,
        "nonprompt_closure_mc": None if np_est is None else np_est.closure,
        "nonprompt_correction": None
        if np_est is None or np_est.correction is None
        else np_est.correction.summary(),
        "nonprompt_mt_model": None if np_est is None else np_est.mt_model,
        "nonprompt_mt_degree": None if np_est is None else np_est.mt_degree,
        "yields": {g: float(h.values().sum()) for g, h in procs.items()},
        "data_yield": float(data.values().sum()),
        "negative_bins_clipped": n_clipped,
        "empty_bins_given_mc_stat": n_unfilled,
        "empty_bins_floored": n_floored,
    }
    return w, summary


def _replica_pdf_coefficients(
    samples: Samples,
    prompt: Sequence[Sequence[str]],
    base: str,
    setup: AnalysisSetup,
    tensor: str = "pdf",
) -> np.ndarray | None:
    """For a replica PDF set, the coefficients common to all prompt processes (fit bins);
    ``prompt``: the histmaker groups of each process."""
    blocks = []
    for groups in prompt:
        var = samples.process_variation(groups, base, tensor)
        if var is None:
            continue
        pdf = pdf_set_of(var, f"{samples.hf.path}: {'+'.join(groups)} {base}_{tensor}")
        if pdf.error_type != "replicas":
            continue
        proj = _project(_fit_region(var, setup), setup.fit_axes)
        vals, _ = histops.hist_arrays(proj, flow=False)
        vals = np.moveaxis(vals, histops.axis_index(proj, "pdfVar"), -1)
        reps = vals[..., list(pdf.eigen_members)].reshape(-1, len(pdf.eigen_members))
        central = vals[..., 0].reshape(-1) if pdf.central is not None else reps.mean(axis=-1)
        scale = np.sqrt(np.maximum(central, 1.0))[:, None]
        blocks.append((reps - reps.mean(axis=-1, keepdims=True)) / scale)
    return replica_coefficients(blocks) if blocks else None


#: Mean data count per (merged) bin that each ABCD sideband must reach.
MIN_SIDEBAND_COUNT = 20.0


@dataclass(frozen=True)
class AbcdRegions:
    """The non-prompt ABCD of a fit config (``nonprompt``, resolved by ``resolve_setup``): the
    isolation axis (2 bins) and the mT axis (Boolean: simple ABCD; >= 3 bins: extended ABCD,
    sidebands = the other mT bins), the signal bins, and the smoothing options."""

    iso_axis: str = "passIso"
    iso_pass: int = 1
    mt_axis: str = "passMT"
    mt_signal: int = 1
    #: pT smoothing of the fake rate (polynomial order of its log; None: unsmoothed)
    smoothing_order: int | None = 2
    #: axes along which the smoothing eigen-variations are separate nuisances
    decorrelate: tuple[str, ...] = ("eta", "charge")

    def signal(self) -> dict[str, Any]:
        return {self.iso_axis: self.iso_pass, self.mt_axis: self.mt_signal}


def choose_eta_merge(
    data: hist.Hist, requested: int | None = None, regions: AbcdRegions | None = None
) -> int:
    """Eta bins merged for the non-prompt estimate: ``requested``, or the finest merge for which
    every sideband holds on average MIN_SIDEBAND_COUNT data events per bin.

    Per-bin sidebands that are too sparse make the smoothed fake rate extrapolate wildly and
    the application region fluctuate below zero; merging eta (not pT) keeps the pT shape, which
    is what the mass fit is sensitive to.
    """
    n = len(data.axes["eta"])
    if requested is not None:
        if requested < 1 or n % requested:
            raise SetupError(f"--nonprompt-eta-merge {requested} does not divide {n} eta bins")
        return requested
    r = AbcdRegions() if regions is None else regions
    counts = data.project(r.iso_axis, r.mt_axis).values()
    sideband = np.delete(counts.reshape(-1), r.iso_pass * counts.shape[1] + r.mt_signal).min()
    other = data.values().size / (n * counts.size)  # bins per eta slice and region
    for m in (f for f in range(1, n + 1) if n % f == 0):
        if sideband / (other * (n // m)) >= MIN_SIDEBAND_COUNT:
            return m
    return n


def _merge_eta(h: hist.Hist, m: int) -> hist.Hist:
    return histops.rebin(h, "eta", factor=m) if m > 1 else h


def _spread_eta(h: hist.Hist, fine: Any, m: int) -> hist.Hist:
    """Share each merged eta bin's content equally among its ``m`` fine bins."""
    if m == 1:
        return h
    i = histops.axis_index(h, "eta")
    vals, var = histops.hist_arrays(h, flow=False)
    vals = np.repeat(vals, m, axis=i) / m
    var = None if var is None else np.repeat(var, m, axis=i) / m**2
    axes = [fine if a.name == "eta" else a for a in h.axes]
    return histops.make_hist(axes, vals, var, flow=False)


@dataclass
class NonPromptEstimate:
    """The ABCD prediction on the fine binning, its smoothing eigen-variations and closure.

    ``closure`` is predicted / true on QCD simulation before the correction; with
    ``correction`` (the MC non-closure, ``fitsetup.closure``) the nominal, the eigen-variations
    and every prompt-varied prediction are multiplied by ``correction.correction``.
    """

    merge: int
    regions: AbcdRegions
    nominal: hist.Hist
    eigen: hist.Hist | None
    closure: float | None
    #: The nominal prompt sum the estimate subtracted (Weight storage: its MC-stat variances).
    prompt: hist.Hist | None = None
    correction: McClosure | None = None
    mt_model: str = "factorised"
    #: degree of the mT polynomial (None: linear), chosen on QCD simulation (choose_mt_degree)
    mt_degree: int | None = None

    def factor(self) -> float:
        return 1.0 if self.correction is None else self.correction.correction

    def varied(self, data: hist.Hist, prompt: hist.Hist) -> hist.Hist:
        """The prediction with the prompt subtraction taken from a varied prompt tensor.

        Only the prompt *yields* vary: the variances of the subtraction (which weight the
        fake-rate fit and the prediction's uncertainty) are the nominal prompt's, broadcast over
        the variation axes. Variation tensors are stored without variances (Double storage);
        taking them as they are would re-weight the smoothing fit and move the prediction by
        0.2-1.2 % in the same direction for up and down, a spurious term in every systematic.
        With the nominal's variances an identity variation reproduces the nominal exactly.
        """
        h = _abcd_fine(
            data,
            _with_variances(prompt, self.prompt),
            self.merge,
            self.regions,
            eigen=False,
            mt_model=self.mt_model,
            mt_degree=self.mt_degree,
        )[0]
        return _scaled(h, self.factor())


def _scaled(h: hist.Hist | None, f: float) -> hist.Hist | None:
    return h if h is None or f == 1.0 else histops.scale(h, f)


def _with_variances(varied: hist.Hist, nominal: hist.Hist | None) -> hist.Hist:
    """``varied``'s values with ``nominal``'s variances broadcast over its variation axes."""
    if nominal is None:
        return varied
    nom_v, nom_w = histops.hist_arrays(nominal, flow=False)
    if nom_w is None:
        nom_w = np.zeros_like(nom_v)
    vals, _ = histops.hist_arrays(varied, flow=False)
    names = list(varied.axes.name)
    missing = [n for n in nominal.axes.name if n not in names]
    if missing:
        raise SetupError(f"prompt variation lacks the nominal's axes {missing}")
    # nominal axes in the varied histogram's order, then one length-1 axis per variation axis
    order = [n for n in names if n in nominal.axes.name]
    nom_w = np.transpose(nom_w, [list(nominal.axes.name).index(n) for n in order])
    shape = [len(varied.axes[n]) if n in nominal.axes.name else 1 for n in names]
    nom_w = np.broadcast_to(nom_w.reshape(shape), vals.shape)
    return histops.make_hist(list(varied.axes), vals, np.array(nom_w), flow=False)


#: Fake-rate model in mT (``abcd.MT_MODELS``): one fit per row of a pT polynomial plus a log-linear
#: mT term. The per-bin model extrapolates every pT coefficient: on the CI sample its fake-rate
#: variations reach factors 33 at high pT (1.7 factorised) and on 20x the CI's QCD simulation
#: with eta merged by 8 it over-predicts by 2.0 (factorised 1.22).
NONPROMPT_MT_MODEL = "factorised"


def _abcd_fine(
    data: hist.Hist,
    prompt: hist.Hist | None,
    m: int,
    r: AbcdRegions,
    *,
    eigen: bool,
    mt_model: str = NONPROMPT_MT_MODEL,
    mt_degree: int | None = None,
) -> tuple[hist.Hist, hist.Hist | None]:
    fine = data.axes["eta"]
    pred = abcd.predict_nonprompt(
        _merge_eta(data, m),
        None if prompt is None else _merge_eta(prompt, m),
        iso_axis=r.iso_axis,
        iso_pass=r.iso_pass,
        mt_axis=r.mt_axis,
        mt_signal=r.mt_signal,
        smoothing_order=r.smoothing_order,
        eigen_axis="nonpromptEig" if eigen else None,
        decorrelate=[a for a in r.decorrelate if a in data.axes.name] if eigen else (),
        clip_negative=True,
        mt_model=mt_model,
        mt_degree=mt_degree,
    )
    eig = None if pred.eigen is None else _spread_eta(pred.eigen, fine, m)
    return _spread_eta(pred.hist, fine, m), eig


#: Highest degree of the factorised fake rate's mT polynomial tried on QCD simulation, and the
#: p-value below which the next degree's chi2 improvement counts as significant.
NONPROMPT_MAX_MT_DEGREE = 2
NONPROMPT_DEGREE_P = 0.05


def choose_mt_degree(
    qcd_mc: hist.Hist, merge: int, r: AbcdRegions, *, max_degree: int = NONPROMPT_MAX_MT_DEGREE
) -> tuple[int | None, dict[int, tuple[float, int]]]:
    """Degree of the factorised fake rate's mT polynomial, chosen by goodness of fit on QCD
    simulation: from degree 1 up, the next degree is taken while it lowers the chi2 of the fit
    to the simulation's sidebands significantly (chi2 difference with one degree of freedom per
    fitted row, p < NONPROMPT_DEGREE_P). Returns (degree, {degree: (chi2, ndf)}); the degree is
    None (the default, 1) with fewer than 3 sideband bins, where only a line is possible."""
    from scipy.stats import chi2 as chi2_dist

    n_side = len(qcd_mc.axes[r.mt_axis]) - 1
    top = min(n_side - 1, max_degree)
    if top < 2:
        return None, {}
    h = _merge_eta(qcd_mc, merge)
    gof: dict[int, tuple[float, int]] = {}
    rows = 0
    for d in range(1, top + 1):
        fit = abcd.predict_nonprompt(
            h, None, iso_axis=r.iso_axis, iso_pass=r.iso_pass, mt_axis=r.mt_axis,
            mt_signal=r.mt_signal, mt_model="factorised", mt_degree=d,
        ).fakerate  # fmt: skip
        gof[d] = (float(fit.chi2.sum()), int(fit.ndf.sum()))
        rows = fit.chi2.size
    d = 1
    while d < top and chi2_dist.sf(gof[d][0] - gof[d + 1][0], rows) < NONPROMPT_DEGREE_P:
        d += 1
    return d, gof


def estimate_nonprompt(
    data: hist.Hist,
    prompt: hist.Hist,
    qcd_mc: hist.Hist | None,
    merge: int | None,
    regions: AbcdRegions | None = None,
    *,
    correct_closure: bool = True,
    mt_model: str = NONPROMPT_MT_MODEL,
) -> NonPromptEstimate:
    """ABCD non-prompt estimate from data (extended when the mT axis has >= 3 bins), smoothed
    in pT; with QCD simulation, the factorised model's mT degree is chosen on it
    (``choose_mt_degree``) and the method's closure measured on it and, with
    ``correct_closure``, corrected (``fitsetup.closure``: true / predicted, with its stat)."""
    r = AbcdRegions() if regions is None else regions
    m = choose_eta_merge(data, merge, r)
    degree = None
    if qcd_mc is not None and mt_model == "factorised":
        degree = choose_mt_degree(qcd_mc, m, r)[0]
    opts = {"mt_model": mt_model, "mt_degree": degree}
    nominal, eigen = _abcd_fine(data, prompt, m, r, eigen=True, **opts)
    closure = None
    correction = None
    if qcd_mc is not None:
        qcd_m = _merge_eta(qcd_mc, m)  # the replicas are drawn on the merged binning (cheaper)

        def predict(h: hist.Hist) -> float:
            return float(_abcd_fine(h, None, 1, r, eigen=False, **opts)[0].values().sum())

        true_mc = histops.select(qcd_m, r.signal()).values().sum()
        pred_mc = predict(qcd_m)
        closure = float(pred_mc / true_mc) if true_mc > 0 else None
        if correct_closure and closure is not None and pred_mc > 0:
            correction = mc_closure(qcd_m, predict, r.signal())
            nominal = _scaled(nominal, correction.correction)
            eigen = _scaled(eigen, correction.correction)
    return NonPromptEstimate(m, r, nominal, eigen, closure, prompt, correction, mt_model, degree)


def _unreliable_bins(nominal: hist.Hist) -> np.ndarray:
    """Bins whose nominal yield is not significant against its MC-stat uncertainty.

    With negative generator weights a bin can sum to almost nothing while its variations do
    not: their ratios to the nominal are then noise, and huge. Such bins, and the bins given the
    floor yield, keep no template.
    """
    var = nominal.variances()
    sigma = 0.0 if var is None else np.sqrt(var)
    return nominal.values() <= np.maximum(sigma, EMPTY_BIN_FLOOR)


def _neutralise(h: hist.Hist, nominal: np.ndarray, mask: np.ndarray) -> hist.Hist:
    """Set the variation equal to the nominal in the ``mask`` bins (no shape effect there)."""
    if not mask.any():
        return h
    h = h.copy()
    vals = _values(h, flow=False)
    extra = vals.ndim - nominal.ndim
    vals[mask] = np.broadcast_to(nominal[mask].reshape(-1, *([1] * extra)), vals[mask].shape)
    return h


def _floor_empty_bins(procs: dict[str, hist.Hist], signal: str) -> int:
    """Give bins without any prediction EMPTY_BIN_FLOOR events of the signal process.

    At the edge of the acceptance a small simulated sample can leave a bin empty while data has
    an event there; the Poisson likelihood of that bin would be infinite. The floor keeps it
    finite and, having no templates, the bin carries no information on the parameters.
    Returns the number of bins floored.
    """
    total = sum(h.values() for h in procs.values())
    empty = total <= 0
    n = int(np.count_nonzero(empty))
    if n:
        h = procs[signal].copy()
        _values(h, flow=False)[empty] = EMPTY_BIN_FLOOR
        procs[signal] = h
    return n


def _empty_bin_variance(h: hist.Hist) -> tuple[hist.Hist, int]:
    """Give a simulated process's empty bins the MC-stat variance of one event of its mean
    weight (``sum w**2 / sum w`` over the histogram).

    An empty bin of a small simulated sample is not a prediction of zero: the sample is too
    small to populate it. With variance 0 the Barlow-Beeston term cannot fill such a bin, so a
    data event there can only be explained by another process with a yield in it. On the CI
    chain the W sample leaves ~half of the high-pT tail bins empty; the non-prompt template,
    spread flat in eta, covers every bin, and the fit inflated it 9x (pulling W down 16 %) to
    reach the data events in those bins. Returns the histogram and the number of bins set.
    """
    vals, var = histops.hist_arrays(h, flow=False)
    if var is None:
        return h, 0
    empty = (vals <= 0) & (var <= 0)
    pos = vals > 0
    n = int(np.count_nonzero(empty))
    if not n or not pos.any():
        return h, 0
    w_eff = var[pos].sum() / vals[pos].sum()
    var = var.copy()
    var[empty] = w_eff**2
    return histops.make_hist(list(h.axes), vals, var, flow=False), n


def _clip_negative(h: hist.Hist) -> tuple[hist.Hist, int]:
    """Bins with a negative sum of weights (negative generator weights, few events) become 0.

    A Poisson expectation cannot be negative; the bin keeps its MC-stat variance so the fit
    still knows how poorly it is predicted. Returns the histogram and the number of bins set.
    """
    neg = _values(h) < 0
    n = int(np.count_nonzero(neg))
    if n:
        h = h.copy()
        _values(h)[neg] = 0.0
    return h, n


def _sum(hs: list[hist.Hist]) -> hist.Hist:
    """A new histogram: the inputs (possibly cached) are never modified."""
    out = hs[0].copy()
    for h in hs[1:]:
        out = out + h
    return out


def _prompt_variation_total(
    samples: Samples,
    prompt: list[str],
    varied: list[str],
    groups_of: dict[str, tuple[str, ...]],
    base: str,
    suffix: str,
    full: dict[str, hist.Hist],
) -> hist.Hist | None:
    """Sum over prompt processes of one variation; processes that do not carry it (or that the
    systematic does not apply to, i.e. not in ``varied``) count with their nominal."""
    parts = {
        p: samples.process_variation(groups_of[p], base, suffix) if p in varied else None
        for p in prompt
    }
    have = [g for g, h in parts.items() if h is not None]
    if not have:
        return None
    total = _sum([parts[g] for g in have])
    rest = [g for g in prompt if g not in have]
    if rest:
        _add_nominal(total, sum(full[g].values(flow=True) for g in rest))
    return total


def _asimov(procs: dict[str, hist.Hist]) -> hist.Hist:
    total = _sum(list(procs.values()))
    return hist.Hist(*total.axes, storage=hist.storage.Double(), data=total.values(flow=True))
