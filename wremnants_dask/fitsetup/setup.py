"""Turn a histmaker output into a fit input: ``python -m wremnants_dask.setup_fit INPUT.hdf5 -o DIR``.

Analysis-aware (mw, mz_wlike, mz_dilepton): samples are normalised (xsec x lumi / sum of
generator weights) and grouped into processes, the fit region is selected, the non-prompt
background of the W analysis is predicted from data (extended ABCD, smoothed, with every prompt
systematic propagated through the prompt subtraction), and every variation tensor the histmaker
wrote becomes named nuisance parameters in groups. The boson mass is an unconstrained parameter
from the mass-variation templates: ``m = m_ref + MASS_STEP_MEV * theta``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import hist
import numpy as np

from wremnants_dask.fitsetup import abcd, histops
from wremnants_dask.histograms.histio import HistFile
from wremnants_dask.processors import pdfsets
from wremnants_dask.synth.processes import DATA_GROUP, PROMPT_GROUPS, QCD_GROUP

#: The mass templates used as the +-1 variation of the mass parameter.
MASS_STEP_MEV = 100
#: Parameter name of the measured boson mass (theta = shift in units of MASS_STEP_MEV).
MASS_PARAM = "massShift{boson}{step}MeV"
#: Known uncertainty on the mass of the boson that is *not* measured (MeV), e.g. mZ in the W fit.
OTHER_MASS_UNC_MEV = {"W": 15.0, "Z": 2.1}
LUMI_UNC = 1.017
XSEC_UNC = {"Zmumu": 1.03, "Ztautau": 1.05, "Top": 1.06, "Diboson": 1.08, "Wmunu": 1.03}
NONPROMPT_NORM_UNC = 1.05
#: Expected events given to bins that no simulated event reaches (see _floor_empty_bins).
EMPTY_BIN_FLOOR = 1e-3


class SetupError(ValueError):
    """A histmaker output that cannot become a fit input (names the file and the histogram)."""


@dataclass(frozen=True)
class AnalysisSetup:
    """How one analysis becomes a fit: which histogram, axes, region and signal."""

    histogram: str
    fit_axes: tuple[str, ...]
    signal: str
    boson: str
    region: dict[str, Any] = field(default_factory=dict)
    nonprompt: bool = False
    channel: str = "ch0"

    @classmethod
    def from_metadata(cls, spec: Any, where: str) -> AnalysisSetup:
        """The setup a processor declared (``Processor.fit_setup``), as the histmaker wrote it."""
        if not isinstance(spec, dict):
            raise SetupError(f"{where}: no fit setup in the metadata (fit_setup = {spec!r})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise SetupError(
                f"{where}: fit_setup has unknown key(s) {unknown}; known: {sorted(known)}"
            )
        missing = sorted(k for k in ("histogram", "fit_axes", "signal", "boson") if k not in spec)
        if missing:
            raise SetupError(f"{where}: fit_setup lacks {missing}")
        kw = dict(spec)
        kw["fit_axes"] = tuple(kw["fit_axes"])
        kw["region"] = dict(kw.get("region") or {})
        return cls(**kw)


def analysis_setup(meta: dict[str, Any], analysis: str, where: str) -> AnalysisSetup:
    """The fit setup of a histmaker output, from its metadata (written by the histmaker from
    the processor's ``fit_setup``). Outputs written before the histmaker recorded it lack the
    reference masses too, so they are refused here with the same advice."""
    spec = meta.get("fit_setup")
    if spec is None:
        raise SetupError(
            f"{where}: analysis {analysis!r}: the histmaker output records no fit setup "
            "(the processor declares none, or the file predates it: rerun the histmaker)"
        )
    return AnalysisSetup.from_metadata(dict(spec), where)


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
        sumw = info.get("gen_sumw") or info.get("sumw_processed")
        if not sumw or not info.get("xsec_pb"):
            raise SetupError(f"{hf.path}: dataset {ds!r} lacks xsec_pb or a sum of weights")
        norms[ds] = histops.mc_norm_factor(info["xsec_pb"], lumi, sumw) * lumi_scale
    return Samples(hf, norms, groups, data, lumi * lumi_scale)


# ----------------------------------------------------------------------------- variations
@dataclass(frozen=True)
class Variation:
    """How a histmaker variation tensor maps onto fit parameters."""

    suffix: str
    group: str
    transform: Callable[[hist.Hist, hist.Hist, AnalysisSetup], list[dict[str, Any]]]


def _fit_region(h: hist.Hist, setup: AnalysisSetup) -> hist.Hist:
    return histops.select(h, setup.region) if setup.region else h


def _updown(name: str, axis: str = "downUpVar", **kw: Any) -> Callable[..., list[dict[str, Any]]]:
    def f(var: hist.Hist, nominal: hist.Hist, setup: AnalysisSetup) -> list[dict[str, Any]]:
        return [dict(name=name, variations=var, updown_axis=axis, **kw)]

    return f


def _decorrelated(name: str, axis: str) -> Callable[..., list[dict[str, Any]]]:
    """Efficiency stat eigen-variations are local in eta: one parameter per eta bin."""

    def f(var: hist.Hist, nominal: hist.Hist, setup: AnalysisSetup) -> list[dict[str, Any]]:
        if "effStatEta" in var.axes.name:  # stored with its own eta axis: already decorrelated
            return [dict(name=name, variations=var, updown_axis="downUpVar")]
        # mw stores it diagonally: entry (eta bin i) = that bin's scale factor varied
        dec = histops.decorrelate(var, nominal, axis, new_name=f"{axis}Bin")
        return [dict(name=name, variations=dec, updown_axis="downUpVar")]

    return f


def _mass(boson: str) -> Callable[..., list[dict[str, Any]]]:
    def f(var: hist.Hist, nominal: hist.Hist, setup: AnalysisSetup) -> list[dict[str, Any]]:
        ax = var.axes["massShift"]
        up = var[{"massShift": ax.index(f"massShift{MASS_STEP_MEV}MeV")}]
        down = var[{"massShift": ax.index(f"massShift-{MASS_STEP_MEV}MeV")}]
        name = MASS_PARAM.format(boson=boson, step=MASS_STEP_MEV)
        if boson == setup.boson:
            return [dict(name=name, up=up, down=down, constrained=False)]
        scale = OTHER_MASS_UNC_MEV[boson] / MASS_STEP_MEV
        return [dict(name=f"mass{boson}", up=up, down=down, scale=scale)]

    return f


def pdf_set_of(var: hist.Hist, where: str = "pdf tensor") -> pdfsets.PdfSet:
    """The PDF set a histmaker ``pdf`` tensor holds: the label of its ``pdfVar`` axis."""
    ax = var.axes["pdfVar"]
    label = ax.__dict__.get("label", ax.label)
    if label not in pdfsets.known_sets():
        raise SetupError(
            f"{where}: the pdfVar axis is labelled {label!r}, not a PDF set of "
            f"configs/{pdfsets.CONFIG}; rerun the histmaker with this version (it labels the "
            "axis with the set found from the LHEPdfWeight title or the option pdf_set)"
        )
    pdf = pdfsets.by_name(label)
    if len(ax) != pdf.members:
        raise SetupError(f"{where}: pdfVar has {len(ax)} entries, set {pdf.name!r} {pdf.members}")
    return pdf


#: Fraction of the replicas' (whitened) variance kept by the Hessian-equivalent eigenvectors.
REPLICA_VARIANCE_KEPT = 0.999


def replica_coefficients(
    deviations: Sequence[np.ndarray], kept: float = REPLICA_VARIANCE_KEPT
) -> np.ndarray:
    """(n_replicas, K) matrix A turning replica deviations into Hessian-equivalent shifts.

    ``deviations``: per process, (bins, n_replicas) replica yields minus their mean, each row
    divided by the bin's Poisson scale (sqrt of the nominal) so that the truncation keeps what
    the fit resolves. With ``D`` their concatenation and ``D = U S V^T``, the covariance of the
    replicas is ``D D^T / (N - 1)``; its eigenvector shifts are ``D V_k / sqrt(N - 1)``, so for
    any process ``shift_k = deviation @ A[:, k]`` with ``A = V[:, :K] / sqrt(N - 1)``: one
    coefficient matrix for all processes keeps their correlations (one nuisance per
    eigenvector, common to W, Z and the non-prompt subtraction). K: the fewest eigenvectors
    holding ``kept`` of the total variance.
    """
    d = np.concatenate([np.asarray(x, float).reshape(-1, x.shape[-1]) for x in deviations])
    n = d.shape[1]
    if n < 2:
        raise SetupError(f"replica PDF set with {n} replica(s): no spread to take")
    _, sv, vt = np.linalg.svd(d, full_matrices=False)
    frac = np.cumsum(sv**2) / max(float(np.sum(sv**2)), np.finfo(float).tiny)
    k = int(np.searchsorted(frac, kept) + 1)
    return vt[:k].T / np.sqrt(n - 1)


def replica_variations(var: hist.Hist, pdf: pdfsets.PdfSet, coeffs: np.ndarray) -> hist.Hist:
    """The Hessian-equivalent eigenvector variations (axis ``pdfVar`` = eig0..) of a replica
    tensor: central member + (replicas - their mean) @ coeffs."""
    i = histops.axis_index(var, "pdfVar")
    vals, _ = histops.hist_arrays(var, flow=False)
    vals = np.moveaxis(vals, i, -1)
    reps = vals[..., list(pdf.eigen_members)]
    mean = reps.mean(axis=-1, keepdims=True)
    shifts = (reps - mean) @ coeffs
    # the central member, or (not stored) the replica average, which is what an MC set's
    # central member is
    out = (vals[..., :1] if pdf.central is not None else mean) + shifts
    ax = hist.axis.StrCategory(
        [f"eig{k}" for k in range(coeffs.shape[1])], name="pdfVar", overflow=False
    )
    axes = [a for a in var.axes if a.name != "pdfVar"]
    return histops.make_hist([*axes, ax], out, None, flow=False)


def _pdf(coeffs: np.ndarray | None) -> Callable[..., list[dict[str, Any]]]:
    """PDF members as the set's metadata says (configs/pdf_sets.yaml): Hessian eigenvectors as
    mirrored one-sided shifts, or replicas through ``coeffs`` (``replica_coefficients``, common
    to every process); the alphaS pair scaled to +-0.0015 (the CMS convention)."""

    def f(var: hist.Hist, nominal: hist.Hist, setup: AnalysisSetup) -> list[dict[str, Any]]:
        pdf = pdf_set_of(var)
        first, last = pdf.eigenvectors
        if pdf.error_type == "hessian":
            eig = var[{"pdfVar": slice(first, last + 1)}]
        else:
            if coeffs is None or coeffs.shape[0] != last - first + 1:
                raise SetupError(f"PDF set {pdf.name!r}: replica coefficients not computed")
            eig = replica_variations(var, pdf, coeffs)
        out = [dict(name="pdf", variations=eig, scale=pdf.scale)]
        if pdf.alphas is not None:
            a_dn, a_up = pdf.alphas
            out.append(
                dict(
                    name="pdfAlphaS",
                    up=var[{"pdfVar": a_up}],
                    down=var[{"pdfVar": a_dn}],
                    scale=pdf.alphas_scale,
                )
            )
        return out

    return f


def _qcd_scale(group: str) -> Callable[..., list[dict[str, Any]]]:
    """muR and muF varied by 2 and 1/2 one at a time (axes ordered 0.5, 1, 2)."""

    def f(var: hist.Hist, nominal: hist.Hist, setup: AnalysisSetup) -> list[dict[str, Any]]:
        for name in ("muRfact", "muFfact"):
            factors = [float(x) for x in var.axes[name]]
            if factors != [0.5, 1.0, 2.0]:
                raise SetupError(f"axis {name!r} of the QCD-scale tensor is {factors}, not 0.5/1/2")

        def pick(r: int, f: int) -> hist.Hist:
            return var[{"muRfact": r, "muFfact": f}]

        return [
            dict(name=f"QCDscale{group}_muR", up=pick(2, 1), down=pick(0, 1)),
            dict(name=f"QCDscale{group}_muF", up=pick(1, 2), down=pick(1, 0)),
        ]

    return f


def variation_map(group: str, pdf_coeffs: np.ndarray | None = None) -> list[Variation]:
    """Every histmaker variation tensor a process group may carry, with its parameter group.

    ``pdf_coeffs``: replica-to-eigenvector matrix of a replica PDF set (``replica_coefficients``).
    """
    return [
        Variation("massWeightW", "massW", _mass("W")),
        Variation("massWeightZ", "massZ", _mass("Z")),
        Variation("widthWeightW", "widthW", _updown("widthW")),
        Variation("widthWeightZ", "widthZ", _updown("widthZ")),
        Variation("pdf", "pdf", _pdf(pdf_coeffs)),
        Variation("qcdScale", "QCDscale", _qcd_scale(group)),
        Variation("effStat", "muon_eff_stat", _decorrelated("effStat", "eta")),
        Variation("effSyst", "muon_eff_syst", _updown("effSyst")),
        Variation("muonScale", "muon_scale", _updown("muonScale")),
        Variation("pileup", "pileup", _updown("pileup")),
        Variation("prefire", "prefire", _updown("prefire")),
    ]


# ----------------------------------------------------------------------------- building
def _project(h: hist.Hist, axes: Sequence[str]) -> hist.Hist:
    keep = list(axes) + [a.name for a in h.axes if a.name not in axes and _is_variation(h, a.name)]
    return h.project(*keep)


ANALYSIS_AXES = frozenset({"eta", "pt", "charge", "passIso", "passMT", "mt", "mll", "ptll", "yll"})


def _is_variation(h: hist.Hist, name: str) -> bool:
    """Variation (tensor) axes are every axis that is not an analysis axis."""
    return name not in ANALYSIS_AXES


def build_fit_input(
    hf: HistFile,
    analysis: str,
    *,
    asimov: bool = False,
    exclude_groups: Sequence[str] = (),
    lumi_scale: float = 1.0,
    sparse: bool = False,
    nonprompt_from_data: bool = True,
    nonprompt_eta_merge: int | None = None,
    interp: str = "rabbit",
) -> tuple[Any, dict[str, Any]]:
    """Build the FitInputWriter for ``analysis``; returns (writer, summary).

    ``interp``: interpolation of asymmetric shape and norm systematics, ``rabbit`` (the CMS
    fitter's, default: these are CMS-style setups) or ``smooth`` (``fitting/interp.py``).
    """
    from wremnants_dask.fitting.fitinput_writer import FitInputWriter

    where = str(hf.path)
    setup = analysis_setup(hf.metadata, analysis, where)
    samples = open_samples(hf, lumi_scale)
    base = setup.histogram
    for ds in hf.datasets:
        if base not in hf.names(ds):
            raise SetupError(f"{hf.path}: dataset {ds!r} has no histogram {base!r}")

    prompt = [g for g in PROMPT_GROUPS if g in samples.groups]
    if setup.signal not in prompt:
        raise SetupError(f"{hf.path}: no sample of the signal process {setup.signal!r}")
    full = {g: samples.group_sum(g, base) for g in prompt}
    data_full = samples.group_sum(DATA_GROUP, base)

    procs: dict[str, hist.Hist] = {
        g: _project(_fit_region(full[g], setup), setup.fit_axes) for g in prompt
    }
    np_est = None
    if setup.nonprompt and nonprompt_from_data:
        qcd_mc = samples.group_sum(QCD_GROUP, base) if QCD_GROUP in samples.groups else None
        np_est = estimate_nonprompt(
            data_full,
            _sum(list(full.values())),
            qcd_mc,
            nonprompt_eta_merge,
            abcd_regions(setup, data_full, where),
        )
        procs["Nonprompt"] = np_est.nominal.project(*setup.fit_axes)

    data = _project(_fit_region(data_full, setup), setup.fit_axes)
    if asimov:
        data = _asimov(procs)

    if interp not in ("rabbit", "smooth"):
        raise SetupError(f"interp must be 'rabbit' or 'smooth', got {interp!r}")
    w = FitInputWriter(sparse=sparse, shape_interp=interp, norm_interp=interp)
    ch = setup.channel
    w.add_channel(ch, data.axes)
    w.add_data(data, ch)
    n_clipped = {}
    for g in procs:
        procs[g], n_clipped[g] = _clip_negative(procs[g])
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

    pdf_coeffs = _replica_pdf_coefficients(samples, prompt, base, setup)
    for g in prompt:
        for v in variation_map(g, pdf_coeffs):
            var = samples.variation(g, base, v.suffix)
            if var is None:
                continue
            nominal_full = full[g]
            for spec in v.transform(
                _fit_region(var, setup), _fit_region(nominal_full, setup), setup
            ):
                add(v.group, g, spec)

    # Prompt systematics move the non-prompt prediction through the prompt subtraction.
    if np_est is not None:
        for v in variation_map("nonprompt", pdf_coeffs):
            if v.suffix.startswith(("massWeight", "widthWeight", "qcdScale")):
                continue  # signal theory: absorbed by the non-prompt normalisation
            var_total = _prompt_variation_total(samples, prompt, base, v.suffix, full)
            if var_total is None:
                continue
            for spec in v.transform(np_est.varied(data_full, var_total), np_est.nominal, setup):
                add(v.group, "Nonprompt", spec)
        if "nonprompt" not in exclude_groups:
            if np_est.eigen is not None:
                fit_ax = set(setup.fit_axes)
                created = w.add_shape_systematic(
                    "nonpromptSmooth",
                    "Nonprompt",
                    ch,
                    variations=np_est.eigen.project(
                        *setup.fit_axes, *[a for a in np_est.eigen.axes.name if a not in fit_ax]
                    ),
                    groups=["nonprompt"],
                )
                params_by_group.setdefault("nonprompt", set()).update(created)
            kappa = NONPROMPT_NORM_UNC
            if np_est.closure is not None:
                kappa = max(kappa, np.exp(abs(np.log(np_est.closure))))
            w.add_norm_systematic("nonpromptNorm", "Nonprompt", kappa, groups=["nonprompt"])
            params_by_group.setdefault("nonprompt", set()).add("nonpromptNorm")

    if "luminosity" not in exclude_groups:
        w.add_norm_systematic("lumi", prompt, LUMI_UNC, groups=["luminosity"])
    if "xsec" not in exclude_groups:
        for g in prompt:
            if g != setup.signal and g in XSEC_UNC:
                w.add_norm_systematic(f"xsec{g}", g, XSEC_UNC[g], groups=["xsec"])

    mass_param = MASS_PARAM.format(boson=setup.boson, step=MASS_STEP_MEV)
    summary = {
        "analysis": analysis,
        "channel": ch,
        "fit_axes": list(setup.fit_axes),
        "processes": list(procs),
        "signal": setup.signal,
        "lumi_pb": samples.lumi_pb,
        "asimov": asimov,
        "interp": interp,
        "mass_param": mass_param,
        "mass_step_mev": MASS_STEP_MEV,
        "mass_reference_gev": reference_mass(hf.metadata, setup.boson, where),
        "n_params_by_group": {g: len(p) for g, p in params_by_group.items()},
        "nonprompt_eta_merge": None if np_est is None else np_est.merge,
        "nonprompt_closure_mc": None if np_est is None else np_est.closure,
        "yields": {g: float(h.values().sum()) for g, h in procs.items()},
        "data_yield": float(data.values().sum()),
        "negative_bins_clipped": n_clipped,
        "empty_bins_floored": n_floored,
    }
    return w, summary


def _replica_pdf_coefficients(
    samples: Samples, prompt: Sequence[str], base: str, setup: AnalysisSetup
) -> np.ndarray | None:
    """For a replica PDF set, the coefficients common to all prompt processes (fit bins)."""
    blocks = []
    for g in prompt:
        var = samples.variation(g, base, "pdf")
        if var is None:
            continue
        pdf = pdf_set_of(var, f"{samples.hf.path}: {g} {base}_pdf")
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
    """The ABCD axes of a fit setup: its region's first key is the isolation axis (2 bins),
    the second the mT axis (Boolean: simple ABCD; >= 3 bins: extended ABCD, sidebands = the
    other mT bins); the values select the signal region."""

    iso_axis: str = "passIso"
    iso_pass: int = 1
    mt_axis: str = "passMT"
    mt_signal: int = 1

    def signal(self) -> dict[str, Any]:
        return {self.iso_axis: self.iso_pass, self.mt_axis: self.mt_signal}


def abcd_regions(setup: AnalysisSetup, h: hist.Hist, where: str) -> AbcdRegions:
    """The ABCD axes and signal bins from ``setup.region`` (bin indices; True = bin 1)."""
    if len(setup.region) != 2:
        raise SetupError(
            f"{where}: fit_setup.region must name the isolation and the mT axis for the "
            f"non-prompt ABCD, got {setup.region}"
        )
    (iso, iso_v), (mt, mt_v) = setup.region.items()
    for name in (iso, mt):
        if name not in h.axes.name:
            raise SetupError(f"{where}: ABCD axis {name!r} (fit_setup.region) not in the histogram")
    n_mt = len(h.axes[mt])
    sig = int(mt_v) % n_mt
    return AbcdRegions(iso, int(iso_v), mt, sig)


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
    """The ABCD prediction on the fine binning, its smoothing eigen-variations and closure."""

    merge: int
    regions: AbcdRegions
    nominal: hist.Hist
    eigen: hist.Hist | None
    closure: float | None
    #: The nominal prompt sum the estimate subtracted (Weight storage: its MC-stat variances).
    prompt: hist.Hist | None = None

    def varied(self, data: hist.Hist, prompt: hist.Hist) -> hist.Hist:
        """The prediction with the prompt subtraction taken from a varied prompt tensor.

        Only the prompt *yields* vary: the variances of the subtraction (which weight the
        fake-rate fit and the prediction's uncertainty) are the nominal prompt's, broadcast over
        the variation axes. Variation tensors are stored without variances (Double storage);
        taking them as they are would re-weight the smoothing fit and move the prediction by
        0.2-1.2 % in the same direction for up and down, a spurious term in every systematic.
        With the nominal's variances an identity variation reproduces the nominal exactly.
        """
        return _abcd_fine(
            data, _with_variances(prompt, self.prompt), self.merge, self.regions, eigen=False
        )[0]


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


#: Axes along which the fake-rate eigen-variations are decorrelated: each (merged) eta x charge
#: row has its own smoothing fit, so its eigenvectors are its own nuisances (sharing one nuisance
#: across rows would tie unrelated eigenvectors together).
NONPROMPT_DECORRELATE = ("eta", "charge")


def _abcd_fine(
    data: hist.Hist, prompt: hist.Hist | None, m: int, r: AbcdRegions, *, eigen: bool
) -> tuple[hist.Hist, hist.Hist | None]:
    fine = data.axes["eta"]
    pred = abcd.predict_nonprompt(
        _merge_eta(data, m),
        None if prompt is None else _merge_eta(prompt, m),
        iso_axis=r.iso_axis,
        iso_pass=r.iso_pass,
        mt_axis=r.mt_axis,
        mt_signal=r.mt_signal,
        eigen_axis="nonpromptEig" if eigen else None,
        decorrelate=[a for a in NONPROMPT_DECORRELATE if a in data.axes.name] if eigen else (),
        clip_negative=True,
    )
    eig = None if pred.eigen is None else _spread_eta(pred.eigen, fine, m)
    return _spread_eta(pred.hist, fine, m), eig


def estimate_nonprompt(
    data: hist.Hist,
    prompt: hist.Hist,
    qcd_mc: hist.Hist | None,
    merge: int | None,
    regions: AbcdRegions | None = None,
) -> NonPromptEstimate:
    """ABCD non-prompt estimate from data (extended when the mT axis has >= 3 bins), smoothed
    in pT; closure measured on QCD simulation."""
    r = AbcdRegions() if regions is None else regions
    m = choose_eta_merge(data, merge, r)
    nominal, eigen = _abcd_fine(data, prompt, m, r, eigen=True)
    closure = None
    if qcd_mc is not None:
        pred_mc = _abcd_fine(qcd_mc, None, m, r, eigen=False)[0].values().sum()
        true_mc = histops.select(qcd_mc, r.signal()).values().sum()
        closure = float(pred_mc / true_mc) if true_mc > 0 else None
    return NonPromptEstimate(m, r, nominal, eigen, closure, prompt)


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
    samples: Samples, prompt: list[str], base: str, suffix: str, full: dict[str, hist.Hist]
) -> hist.Hist | None:
    """Sum over prompt groups of one variation; groups without it count with their nominal."""
    parts = {g: samples.variation(g, base, suffix) for g in prompt}
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
