"""The registry of systematic types of the fit config (``configs/fit_<analysis>.yaml``).

Each entry of a config's ``systematics`` names a ``type``; ``SYSTEMATIC_TYPES[type]`` says which
keys that type takes (beyond the common ``name``, ``type``, ``group``, ``processes``, ``tensor``,
``nonprompt``), checks their values at load, and builds the fit parameters. Types read from a
histmaker variation tensor (``<histogram>_<tensor>``) return shape-systematic specs for
``FitInputWriter.add_shape_systematic``; ``lnN`` is a log-normal normalisation.

Adding a type: write ``_build_<type>(syst, var, nominal, ctx) -> list[spec]`` (and a check of
its keys if they need more than a type), then one ``SystematicType`` line in
``SYSTEMATIC_TYPES``; document its keys in docs/DESIGN.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import hist
import numpy as np

from wremnants_dask.fitsetup import histops
from wremnants_dask.fitsetup.config import AnalysisSetup, SetupError, SystematicConfig, check_keys
from wremnants_dask.processors import pdfsets

#: Parameter name of the measured boson mass (theta = shift in units of the template step).
MASS_PARAM = "massShift{boson}{step}MeV"
#: A shape spec: keyword arguments of ``FitInputWriter.add_shape_systematic`` plus ``name``.
Spec = dict[str, Any]


@dataclass(frozen=True)
class BuildContext:
    """What a builder may need beyond its tensor: the fit definition, the process the tensor
    belongs to (its name fills ``{process}`` in parameter names), the replica-PDF coefficients
    common to all processes (``replica_coefficients``; None for a Hessian set)."""

    setup: AnalysisSetup
    process: str
    pdf_coeffs: np.ndarray | None = None
    #: the histmaker's ``analysis_metadata`` (``decorrelate.edges_from`` reads its keys)
    analysis_metadata: dict[str, Any] = field(default_factory=dict)


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


def _pdf(coeffs: np.ndarray | None, name: str = "pdf") -> Callable[..., list[dict[str, Any]]]:
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
        out = [dict(name=name, variations=eig, scale=pdf.scale)]
        if pdf.alphas is not None:
            a_dn, a_up = pdf.alphas
            out.append(
                dict(
                    name=f"{name}AlphaS",
                    up=var[{"pdfVar": a_up}],
                    down=var[{"pdfVar": a_dn}],
                    scale=pdf.alphas_scale,
                )
            )
        return out

    return f


# ----------------------------------------------------------------------------- builders
def _format(name: str, ctx: BuildContext) -> str:
    return name.replace("{process}", ctx.process)


def _build_shape(
    syst: SystematicConfig, var: hist.Hist, nominal: hist.Hist, ctx: BuildContext
) -> list[Spec]:
    """A tensor of variations: an up/down axis (``updown_axis``, size 2: down, up) or mirrored
    entries, every other variation axis one parameter per entry; ``decorrelate`` splits it into
    one parameter per bin of a histogram axis (unless the tensor already carries the axis
    ``unless_axis``: mw stores efficiency statistics diagonally, other analyses per eta)."""
    o = syst.options
    name = _format(syst.name, ctx)
    dec = o.get("decorrelate")
    if dec is not None and dec.get("unless_axis") not in var.axes.name:
        axis = dec["axis"]
        # edges_from: groups of the axis recorded by the histmaker (e.g. the eta bins in which
        # the efficiencies were measured); absent or null there: one parameter per bin
        edges = ctx.analysis_metadata.get(dec["edges_from"]) if "edges_from" in dec else None
        new_name = dec.get("new_name", f"{axis}Bin")
        var = histops.decorrelate(var, nominal, axis, edges=edges, new_name=new_name)
    spec: Spec = dict(name=name, variations=var)
    axis = o.get("updown_axis", "downUpVar")
    if axis is not None:
        spec["updown_axis"] = axis
    if "symmetrize" in o:
        spec["symmetrize_mode"] = o["symmetrize"]
    if "scale" in o:
        spec["scale"] = float(o["scale"])
    return [spec]


def _build_mass(
    syst: SystematicConfig, var: hist.Hist, nominal: hist.Hist, ctx: BuildContext
) -> list[Spec]:
    """The +-``step_mev`` mass templates: the measured mass (unconstrained, named
    ``MASS_PARAM``) when ``boson`` is the fit's, else a nuisance scaled to ``uncertainty_mev``.
    ``symmetrize`` (default ``average``, rabbit's default): the log yields linear in the mass.
    Kept asymmetric, the blend of ``fitting/interp.py`` gives the mass a second derivative
    ``hd phi''(theta)`` that swings from 7.5 hd at theta = 0 to -2.3 hd at 0.38 (rabbit form,
    theta in units of step_mev), so the observed curvature, hence the stat uncertainty, depends
    on where the data put the mass (CI chain: 0.54 at +14 MeV, 0.62 at +31 MeV, one Fisher
    information)."""
    o = syst.options
    boson, step = o["boson"], int(o.get("step_mev", 100))
    sym = o.get("symmetrize", "average")
    ax = var.axes["massShift"]
    up = var[{"massShift": ax.index(f"massShift{step}MeV")}]
    down = var[{"massShift": ax.index(f"massShift-{step}MeV")}]
    if boson == ctx.setup.boson:
        return [
            dict(
                name=MASS_PARAM.format(boson=boson, step=step),
                up=up,
                down=down,
                constrained=False,
                symmetrize_mode=sym,
            )
        ]
    if "uncertainty_mev" not in o:
        raise SetupError(
            f"{syst.where}: uncertainty_mev is needed when {boson} is not the fitted boson"
        )
    return [
        dict(
            name=_format(syst.name, ctx),
            up=up,
            down=down,
            scale=float(o["uncertainty_mev"]) / step,
            symmetrize_mode=sym,
        )
    ]


def _build_pdf(
    syst: SystematicConfig, var: hist.Hist, nominal: hist.Hist, ctx: BuildContext
) -> list[Spec]:
    return _pdf(ctx.pdf_coeffs, _format(syst.name, ctx))(var, nominal, ctx.setup)


def _build_qcd_scale(
    syst: SystematicConfig, var: hist.Hist, nominal: hist.Hist, ctx: BuildContext
) -> list[Spec]:
    """muR and muF varied by 2 and 1/2 one at a time (axes ordered 0.5, 1, 2):
    ``<name>_muR`` and ``<name>_muF``."""
    for axis in ("muRfact", "muFfact"):
        factors = [float(x) for x in var.axes[axis]]
        if factors != [0.5, 1.0, 2.0]:
            raise SetupError(f"axis {axis!r} of the QCD-scale tensor is {factors}, not 0.5/1/2")

    def pick(r: int, f: int) -> hist.Hist:
        return var[{"muRfact": r, "muFfact": f}]

    name = _format(syst.name, ctx)
    return [
        dict(name=f"{name}_muR", up=pick(2, 1), down=pick(0, 1)),
        dict(name=f"{name}_muF", up=pick(1, 2), down=pick(1, 0)),
    ]


# ----------------------------------------------------------------------------- checks
def _positive(x: Any, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not x > 0:
        raise SetupError(f"{where}: expected a positive number, got {x!r}")
    return float(x)


def kappa_of(kappa: Any, where: str) -> float | tuple[float, float]:
    """A log-normal kappa: a number, or [kappa_down, kappa_up]."""
    if isinstance(kappa, list):
        if len(kappa) != 2:
            raise SetupError(f"{where}: expected [kappa_down, kappa_up], got {kappa!r}")
        return (_positive(kappa[0], f"{where}[0]"), _positive(kappa[1], f"{where}[1]"))
    return _positive(kappa, where)


def lnN_kappas(
    syst: SystematicConfig, processes: Sequence[str]
) -> dict[str, float | tuple[float, float]]:
    """Process -> kappa of an ``lnN`` systematic: one kappa for all, or one per process (then
    only those processes)."""
    k = syst.options["kappa"]
    where = f"{syst.where}.kappa"
    if isinstance(k, dict):
        return {p: kappa_of(k[p], f"{where}.{p}") for p in processes if p in k}
    return {p: kappa_of(k, where) for p in processes}


def _check_lnN(
    o: dict[str, Any], processes: tuple[str, ...] | None, procs: list[str], where: str
) -> None:
    k = o["kappa"]
    if isinstance(k, dict):
        for p, v in k.items():
            if p not in procs:
                raise SetupError(f"{where}.kappa: {p!r} is not a process of the config {procs}")
            if processes is not None and p not in processes:
                raise SetupError(f"{where}.kappa: {p!r} is not in the systematic's processes")
            kappa_of(v, f"{where}.kappa.{p}")
    else:
        kappa_of(k, f"{where}.kappa")


def _check_shape(
    o: dict[str, Any], processes: tuple[str, ...] | None, procs: list[str], where: str
) -> None:
    if "symmetrize" in o and o["symmetrize"] not in _symmetrize_modes():
        raise SetupError(
            f"{where}.symmetrize: {o['symmetrize']!r} is not one of {_symmetrize_modes()}"
        )
    if "scale" in o:
        _positive(o["scale"], f"{where}.scale")
    dec = o.get("decorrelate")
    if dec is not None:
        check_keys(
            dec,
            {"axis": str, "unless_axis": str, "new_name": str, "edges_from": str},
            f"{where}.decorrelate",
            ("axis",),
        )


def _check_mass(
    o: dict[str, Any], processes: tuple[str, ...] | None, procs: list[str], where: str
) -> None:
    if "step_mev" in o and o["step_mev"] <= 0:
        raise SetupError(f"{where}.step_mev: must be positive, got {o['step_mev']}")
    if "uncertainty_mev" in o:
        _positive(o["uncertainty_mev"], f"{where}.uncertainty_mev")
    if o.get("symmetrize", "average") not in ("average", "none"):
        raise SetupError(
            f"{where}.symmetrize: {o['symmetrize']!r} is not one of ('average', 'none') (one "
            "mass parameter)"
        )


def _check_none(
    o: dict[str, Any], processes: tuple[str, ...] | None, procs: list[str], where: str
) -> None:
    pass


def _symmetrize_modes() -> tuple[str, ...]:
    from wremnants_dask.fitting.symmetrize import SYMMETRIZE

    return SYMMETRIZE


Builder = Callable[[SystematicConfig, hist.Hist, hist.Hist, BuildContext], list[Spec]]
Check = Callable[[dict[str, Any], "tuple[str, ...] | None", list[str], str], None]


def _updown_axes(o: dict[str, Any]) -> list[str]:
    axis = o.get("updown_axis", "downUpVar")
    return [] if axis is None else [axis]


@dataclass(frozen=True)
class SystematicType:
    """One systematic type: its own keys (key -> accepted YAML types) and the required ones, a
    check of their values, and for a type read from a histmaker tensor its builder and the axes
    that tensor must have (``build`` None: not a tensor, built by the setup, as ``lnN``)."""

    doc: str
    keys: Mapping[str, Any]
    check: Check
    required: tuple[str, ...] = ()
    build: Builder | None = None
    axes: Callable[[dict[str, Any]], list[str]] = lambda o: []

    @property
    def tensor(self) -> bool:
        return self.build is not None


#: type name -> SystematicType: the one place a systematic type is defined.
SYSTEMATIC_TYPES: dict[str, SystematicType] = {
    "lnN": SystematicType(
        "log-normal normalisation", {"kappa": (float, list, dict)}, _check_lnN, ("kappa",)
    ),
    "shape": SystematicType(
        "variation tensor: up/down axis or mirrored entries, other axes one parameter each",
        {
            "updown_axis": (str, type(None)),
            "decorrelate": dict,
            "symmetrize": str,
            "scale": float,
        },
        _check_shape,
        build=_build_shape,
        axes=_updown_axes,
    ),
    "mass": SystematicType(
        "boson mass templates (+-step_mev)",
        {"boson": str, "step_mev": int, "uncertainty_mev": float, "symmetrize": str},
        _check_mass,
        ("boson",),
        build=_build_mass,
        axes=lambda o: ["massShift"],
    ),
    "pdf": SystematicType(
        "PDF set members as configs/pdf_sets.yaml says, and the alphaS pair",
        {},
        _check_none,
        build=_build_pdf,
        axes=lambda o: ["pdfVar"],
    ),
    "qcd_scale": SystematicType(
        "muR, muF by 2 and 1/2",
        {},
        _check_none,
        build=_build_qcd_scale,
        axes=lambda o: ["muRfact", "muFfact"],
    ),
}


def tensor_axes(syst: SystematicConfig) -> list[str]:
    """Axes the systematic's tensor must have (checked against the input by the setup)."""
    return SYSTEMATIC_TYPES[syst.type].axes(syst.options)
