"""The deterministic W-mass-like synthetic fit model (tests, benchmarks, fitter peers).

Built as plain numpy arrays (no dependency on any fitter) so that our fitter, rabbit and pyhf
all fit the same model (``bench/fit_peers.py`` translates it for the peers). The default size
is the CMS W-mass fit: 48 eta x 30 pT x 2 charge = 2880 bins, 10 processes, one unconstrained
mass parameter (+-100 MeV templates of the W-like processes), ``nsyst`` shape systematics
(log-normal, up/down can be asymmetric), 20 log-normal normalisation systematics and MC-stat
``sumw2``; tests shrink every dimension (``neta``, ``npt``, ``nnorm``, ``signal_per_bin``).

Conventions: bins are C-ordered over (eta, pt, charge); every shape systematic is stored as
``log(up/nominal)`` and ``log(down/nominal)`` (so a symmetric one has ``logdown = -logup``);
the expected yield at parameters ``theta`` is (rabbit's and our log-normal model)
``nominal * exp(sum_k avg_k theta_k + hd_k phi(theta_k) + norms)`` with
``avg = (logup - logdown) / 2``, ``hd = (logup + logdown) / 2`` and ``phi`` the smooth
(pyhf code4p-like) interpolation.

Example::

    m = build_model(nsyst=1000, seed=1)
    fi = to_fit_input(m)          # our fitter's FitInput, through FitInputWriter
    fi, truth, writer = build_synthetic(nsyst=12, neta=6, npt=5)   # small, Poisson data
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import hist
import numpy as np

from .fitinput import FitInput
from .fitinput_writer import FitInputWriter

ETA_EDGES = np.linspace(-2.4, 2.4, 49)
PT_EDGES = np.linspace(26.0, 56.0, 31)
CHARGES = (-1, 1)
SHAPE = (len(ETA_EDGES) - 1, len(PT_EDGES) - 1, len(CHARGES))  # (48, 30, 2)
NBINS = int(np.prod(SHAPE))
MASS_NAME = "massShift100MeV"

MW = 80.379  # GeV
MZ = 91.1876
MASS_STEP = 0.1  # GeV: the mass templates are +-100 MeV
NNORM = 20

# name -> (total yield, sumw2/yield i.e. mean MC weight, pT shape, eta shape, charge asymmetry)
PROCESSES: dict[str, tuple[float, float, str, str, float]] = {
    "Wmunu": (5.0e7, 0.3, "jacobian_w", "w", 0.15),
    "Wtaunu": (1.5e6, 1.0, "soft", "w", 0.15),
    "Zmumu": (3.0e6, 0.5, "jacobian_z", "central", 0.0),
    "Ztautau": (2.0e5, 2.0, "soft", "central", 0.0),
    "DYlowMass": (1.0e5, 3.0, "falling", "flat", 0.0),
    "Top": (4.0e5, 1.5, "flat", "central", 0.0),
    "Diboson": (1.0e5, 1.0, "flat", "central", 0.02),
    "Fake": (3.0e6, 4.0, "falling", "flat", 0.03),
    "PhotonInduced": (5.0e4, 2.0, "jacobian_w", "flat", 0.0),
    "WmunuOOA": (2.0e5, 1.0, "jacobian_w", "w", 0.15),
}
SIGNAL = ("Wmunu",)


@dataclass
class SyntheticFitModel:
    """All arrays of the benchmark model; ``[nbins, nproc(, nsyst)]``, bins as in the module doc."""

    processes: list[str]
    signal: list[str]
    nominal: np.ndarray  # [nbins, nproc]
    sumw2: np.ndarray  # [nbins, nproc]
    data: np.ndarray  # [nbins]
    mass_name: str
    mass_logup: np.ndarray  # [nbins, nproc]: log(up/nom) of the +100 MeV template
    mass_logdown: np.ndarray  # [nbins, nproc]: log(down/nom) of the -100 MeV template
    syst_names: list[str]
    syst_kind: list[str]  # effStat, momentumScale, theory, bkgShape
    syst_logup: np.ndarray  # [nbins, nproc, nsyst]
    syst_logdown: np.ndarray  # [nbins, nproc, nsyst]
    norm_names: list[str]
    norm_logkup: np.ndarray  # [nproc, nnorm]: log(kappa_up), 0 where the process is untouched
    norm_logkdown: np.ndarray  # [nproc, nnorm]: log(kappa_down) (negative for a normal kappa)
    seed: int
    truth: dict[str, float] = field(default_factory=dict)
    asimov: bool = True
    eta_edges: np.ndarray = field(default_factory=lambda: ETA_EDGES)
    pt_edges: np.ndarray = field(default_factory=lambda: PT_EDGES)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(eta, pt, charge) bins."""
        return (len(self.eta_edges) - 1, len(self.pt_edges) - 1, len(CHARGES))

    def hist(self, values: np.ndarray, variances: np.ndarray | None = None) -> hist.Hist:
        """``values`` (and ``variances``: Weight storage) of the flattened bins as a hist."""
        h = hist.Hist(
            hist.axis.Regular(self.shape[0], self.eta_edges[0], self.eta_edges[-1], name="eta"),
            hist.axis.Regular(self.shape[1], self.pt_edges[0], self.pt_edges[-1], name="pt"),
            hist.axis.IntCategory(list(CHARGES), name="charge"),
            storage=hist.storage.Weight() if variances is not None else hist.storage.Double(),
        )
        if variances is not None:
            h.view()["value"] = values.reshape(self.shape)
            h.view()["variance"] = variances.reshape(self.shape)
        else:
            h.view()[...] = values.reshape(self.shape)
        return h

    @property
    def nbins(self) -> int:
        return int(self.nominal.shape[0])

    @property
    def nproc(self) -> int:
        return int(self.nominal.shape[1])

    @property
    def nsyst(self) -> int:
        return len(self.syst_names)

    def syst_processes(self, k: int) -> list[int]:
        """Indices of the processes shape systematic ``k`` touches (what the writers loop over)."""
        touched = np.any(self.syst_logup[:, :, k] != 0, axis=0) | np.any(
            self.syst_logdown[:, :, k] != 0, axis=0
        )
        return [int(p) for p in np.nonzero(touched)[0]]

    def describe(self) -> dict[str, Any]:
        """Sizes for benchmark tables."""
        return {
            "nbins": self.nbins,
            "nproc": self.nproc,
            "nsyst": self.nsyst,
            "nnorm": len(self.norm_names),
            "nparams": self.nsyst + len(self.norm_names) + 1,
            "seed": self.seed,
            "asimov": self.asimov,
            "nonzero_shape_entries": int(np.count_nonzero(self.syst_logup)),
        }


# ------------------------------------------------------------------ shapes
def _centers(edges: np.ndarray) -> np.ndarray:
    return 0.5 * (edges[1:] + edges[:-1])


def jacobian_pt(edges: np.ndarray, mass: float, smear: float = 3.0) -> np.ndarray:
    """Yield per pT bin of a lepton from a two-body decay of mass ``mass``: the Jacobian peak.

    Exact at rest (CDF ``1 - sqrt(1 - (2 pt / m)^2)``), smeared by a Gaussian of ``smear`` GeV
    standing in for the boson pT and the resolution; normalised over [0, m] so that a mass
    shift moves events across the acceptance edges, as in the real templates."""
    fine = np.arange(0.0, mass, 0.02)
    half = 0.5 * mass
    cdf = 1.0 - np.sqrt(np.clip(1.0 - (np.minimum(fine, half) / half) ** 2, 0.0, None))
    dens = np.diff(cdf)
    x = 0.5 * (fine[1:] + fine[:-1])
    kx = np.arange(-5 * smear, 5 * smear + 1e-9, 0.02)
    kern = np.exp(-0.5 * (kx / smear) ** 2)
    sm = np.convolve(dens, kern / kern.sum(), mode="full")
    xs = x[0] + kx[0] + 0.02 * np.arange(len(sm))
    c = np.concatenate([[0.0], np.cumsum(sm)])
    xe = np.concatenate([[xs[0] - 0.01], xs + 0.01])
    return np.diff(np.interp(edges, xe, c))


def _pt_shape(kind: str, mass: float, edges: np.ndarray) -> np.ndarray:
    pc = _centers(edges)
    if kind == "jacobian_w":  # core + boson-pT tail, so the high-pT bins are populated
        s = 0.7 * jacobian_pt(edges, mass) + 0.3 * jacobian_pt(edges, mass, smear=9.0)
    elif kind == "jacobian_z":
        s = 0.7 * jacobian_pt(edges, MZ) + 0.3 * jacobian_pt(edges, MZ, smear=9.0)
    elif kind == "soft":  # tau decays: a softened Jacobian edge plus a falling tail
        s = 0.6 * jacobian_pt(edges, 0.6 * mass, smear=5.0) + 0.4 * np.exp(-(pc - 26.0) / 7.0)
    elif kind == "falling":
        s = np.exp(-(pc - 26.0) / 8.0)
    else:
        s = 1.0 + 0.005 * (pc - 26.0)
    return s / s.sum()  # unit yield in the acceptance: the mass templates move shape only


def _eta_shape(kind: str, charge: int, asym: float, edges: np.ndarray) -> np.ndarray:
    v = _centers(edges) / 2.4
    if kind == "w":  # W+ broader in |eta|, W- more central: the charge asymmetry
        s = 1.0 - 0.25 * v**2 + charge * asym * (v**2 - 0.3)
    elif kind == "central":
        s = 1.0 - 0.35 * v**2
    else:
        s = np.ones_like(v)
    return s / s.sum()


def _process_yields(
    mass: float, eta_edges: np.ndarray, pt_edges: np.ndarray, scale: float = 1.0
) -> np.ndarray:
    """[eta, pt, charge, nproc] nominal yields (signal-like processes at boson mass ``mass``);
    the process totals of ``PROCESSES`` times ``scale``."""
    out = np.zeros((len(eta_edges) - 1, len(pt_edges) - 1, len(CHARGES), len(PROCESSES)))
    for p, (total, _w, ptk, etak, asym) in enumerate(PROCESSES.values()):
        pt = _pt_shape(ptk, mass, pt_edges)
        for ic, q in enumerate(CHARGES):
            frac = 0.5 * (1.0 + q * asym * 2.0)  # W+ : W- ~ 1.3 : 1 for asym 0.15
            eta = _eta_shape(etak, q, asym, eta_edges)
            out[:, :, ic, p] = scale * total * frac * np.outer(eta, pt)
    return out


# ------------------------------------------------------------------ systematics
def _legendre(u: np.ndarray, k: int) -> np.ndarray:
    return np.polynomial.legendre.legval(u, np.eye(k + 1)[k])


def _make_systematics(
    nsyst: int,
    rng: np.random.Generator,
    nominal4: np.ndarray,
    eta_edges: np.ndarray,
    pt_edges: np.ndarray,
    asymmetric: bool = True,
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Shape systematics with the structure of the real fit (see ``build_model``)."""
    neta, npt, nq, nproc = nominal4.shape
    names_p = list(PROCESSES)
    u = (_centers(pt_edges) - 41.0) / 15.0  # pT in [-1, 1]
    v = _centers(eta_edges) / 2.4  # eta in [-1, 1]
    logup = np.zeros((neta, npt, nq, nproc, nsyst))
    logdn = np.zeros_like(logup)
    # d log(yield) / d pT per process, for momentum-scale-like shifts
    dlog = np.gradient(np.log(np.maximum(nominal4, 1e-30)), _centers(pt_edges), axis=1)
    n_eff = int(round(0.5 * nsyst))
    n_scale = int(round(0.1 * nsyst))
    n_bkg = int(round(0.1 * nsyst))
    n_theory = nsyst - n_eff - n_scale - n_bkg
    kinds = ["effStat"] * n_eff + ["momentumScale"] * n_scale + ["theory"] * n_theory
    kinds += ["bkgShape"] * n_bkg
    prompt = [names_p.index(n) for n in ("Wmunu", "Zmumu")]
    w_like = [names_p.index(n) for n in ("Wmunu", "Wtaunu", "WmunuOOA")]
    bkgs = [names_p.index(n) for n in ("Top", "Diboson", "Fake", "Ztautau", "DYlowMass")]
    names = []
    for k, kind in enumerate(kinds):
        if kind == "effStat":  # one eta bin and charge, a Legendre mode in pT: very local
            ieta, iq, order = k % neta, (k // neta) % nq, (k // (neta * nq)) % 4
            names.append(f"effStat_eta{ieta}_q{iq}_p{order}_{k}")
            prof = rng.normal(0.0, 0.004) * _legendre(u, order)
            for p in prompt:
                logup[ieta, :, iq, p, k] = prof
            logdn[..., k] = -logup[..., k]
        elif kind == "momentumScale":  # a pT shift in a window of 4 eta bins
            i0 = int(rng.integers(0, neta - 3))
            shift = rng.normal(0.0, 0.02) * (1.0 + 0.3 * v[i0 : i0 + 4, None, None])  # GeV
            names.append(f"muonScale_eta{i0}_{k}")
            for p in prompt:
                logup[i0 : i0 + 4, :, :, p, k] = -dlog[i0 : i0 + 4, :, :, p] * shift
            logdn[..., k] = -logup[..., k]
        elif kind == "theory":  # global smooth in (eta, pT), 1-2 processes, asymmetric
            procs = [prompt[0]] if rng.random() < 0.6 else rng.choice(w_like, 2, replace=False)
            c = rng.normal(0.0, 1.0, (3, 3)) * np.array([[1.0], [0.5], [0.25]])
            surf = np.polynomial.legendre.leggrid2d(v, u, c)
            surf *= rng.uniform(0.002, 0.01) / max(np.abs(surf).max(), 1e-12)
            qf = 1.0 + rng.normal(0.0, 0.2) * np.array(CHARGES)
            asym = rng.uniform(-0.4, 0.4)  # drawn either way: otherwise the same model
            if not asymmetric:
                asym = 0.0
            names.append(f"theory_{k}")
            for p in procs:
                logup[:, :, :, p, k] = surf[:, :, None] * qf
                logdn[:, :, :, p, k] = -(1.0 + asym) * surf[:, :, None] * qf
        else:  # one background, a smooth 2-5% slope/curvature
            p = int(rng.choice(bkgs))
            c = rng.normal(0.0, 1.0, (2, 3))
            surf = np.polynomial.legendre.leggrid2d(v, u, c)
            surf *= rng.uniform(0.02, 0.05) / max(np.abs(surf).max(), 1e-12)
            names.append(f"bkgShape_{names_p[p]}_{k}")
            logup[:, :, :, p, k] = surf[:, :, None]
            logdn[:, :, :, p, k] = -surf[:, :, None]
    nb = neta * npt * nq
    return names, kinds, logup.reshape(nb, nproc, nsyst), logdn.reshape(nb, nproc, nsyst)


def _make_norms(
    rng: np.random.Generator, nproc: int, nnorm: int = NNORM
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``nnorm`` log-normal normalisations: lumi, one cross section per process, then random
    extras."""
    names_p = list(PROCESSES)
    up = np.zeros((nproc, nnorm))
    dn = np.zeros((nproc, nnorm))
    names = ["lumi"]
    mc = [i for i, n in enumerate(names_p) if n != "Fake"]
    up[mc, 0], dn[mc, 0] = np.log(1.012), -np.log(1.012)
    for j in range(1, nnorm):
        if j < nproc:
            procs = [j]  # skip Wmunu: its normalisation is measured
            names.append(f"xsec_{names_p[j]}")
        else:
            procs = sorted(rng.choice(np.arange(1, nproc), int(rng.integers(1, 4)), replace=False))
            names.append(f"norm_{j}")
        ku = rng.uniform(1.01, 1.1)
        kd = 1.0 / ku * rng.uniform(0.97, 1.03)  # slightly asymmetric
        for p in procs:
            up[p, j], dn[p, j] = np.log(ku), np.log(kd)
    return names, up, dn


def phi_smooth(theta: np.ndarray) -> np.ndarray:
    """``theta * f(theta)`` with f the smooth (code4p-like) step used by rabbit and our fitter."""
    t = np.asarray(theta, np.float64)
    t2 = t * t
    f = np.where(np.abs(t) < 1.0, t * (t2 * (3.0 * t2 - 10.0) + 15.0) / 8.0, np.sign(t))
    return t * f


def expected(model: SyntheticFitModel, params: dict[str, float] | None = None) -> np.ndarray:
    """Expected yields [nbins, nproc] at named parameter values (others at 0)."""
    params = params or {}
    logs = np.zeros_like(model.nominal)

    def add(lu: np.ndarray, ld: np.ndarray, th: float) -> None:
        logs[...] += 0.5 * (lu - ld) * th + 0.5 * (lu + ld) * float(phi_smooth(th))

    if model.mass_name in params:
        add(model.mass_logup, model.mass_logdown, params[model.mass_name])
    for k, n in enumerate(model.syst_names):
        if n in params:
            add(model.syst_logup[:, :, k], model.syst_logdown[:, :, k], params[n])
    for j, n in enumerate(model.norm_names):
        if n in params:
            add(model.norm_logkup[None, :, j], model.norm_logkdown[None, :, j], params[n])
    return model.nominal * np.exp(logs)


def build_model(
    nsyst: int = 1000,
    seed: int = 1,
    *,
    asimov: bool = True,
    truth: dict[str, float] | None = None,
    neta: int = SHAPE[0],
    npt: int = SHAPE[1],
    nnorm: int = NNORM,
    signal_per_bin: float | None = None,
    asymmetric: bool = True,
) -> SyntheticFitModel:
    """Build the benchmark model deterministically from ``seed``.

    Shape systematics: 50% efficiency-stat-like (one eta bin and charge, a Legendre mode in pT,
    on Wmunu and Zmumu), 10% momentum-scale-like (a pT shift of the templates in a window of 4
    eta bins), 30% theory-like (smooth in eta and pT, 1-2 W-like processes, asymmetric up/down),
    10% background shapes (one background each). Data: the expectation at ``truth`` (named
    parameter values, e.g. ``{"massShift100MeV": 0.5}``), Poisson-fluctuated unless ``asimov``.
    Smaller models: ``neta`` x ``npt`` bins over the same ranges (``neta`` >= 4), ``nnorm``
    normalisations, and yields scaled so that the signal averages ``signal_per_bin``; without
    ``asymmetric`` the theory-like systematics are symmetric too (the same random draws).
    """
    if neta < 4 or npt < 1 or nnorm < 1:
        raise ValueError(
            f"synthetic model needs neta >= 4, npt >= 1, nnorm >= 1: {neta, npt, nnorm}"
        )
    rng = np.random.default_rng(seed)
    eta_edges = np.linspace(ETA_EDGES[0], ETA_EDGES[-1], neta + 1)
    pt_edges = np.linspace(PT_EDGES[0], PT_EDGES[-1], npt + 1)
    nbins = neta * npt * len(CHARGES)
    scale = 1.0
    if signal_per_bin is not None:
        scale = signal_per_bin * nbins / _process_yields(MW, eta_edges, pt_edges)[..., 0].sum()
    nom4 = _process_yields(MW, eta_edges, pt_edges, scale)
    procs = list(PROCESSES)
    nominal = nom4.reshape(nbins, -1)
    wfac = np.array([v[1] for v in PROCESSES.values()])
    sumw2 = nominal * wfac[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        up = _process_yields(MW + MASS_STEP, eta_edges, pt_edges, scale).reshape(nbins, -1)
        dn = _process_yields(MW - MASS_STEP, eta_edges, pt_edges, scale).reshape(nbins, -1)
        mlu = np.where(nominal > 0, np.log(up / nominal), 0.0)
        mld = np.where(nominal > 0, np.log(dn / nominal), 0.0)
    # only the W-like processes move with mW
    moving = [procs.index(n) for n in ("Wmunu", "Wtaunu", "WmunuOOA", "PhotonInduced")]
    still = [i for i in range(len(procs)) if i not in moving]
    mlu[:, still] = 0.0
    mld[:, still] = 0.0
    names, kinds, slu, sld = _make_systematics(nsyst, rng, nom4, eta_edges, pt_edges, asymmetric)
    empty = nominal <= 0  # no variation of an empty bin (both writers would zero it anyway)
    slu[empty] = 0.0
    sld[empty] = 0.0
    nnames, nlu, nld = _make_norms(rng, len(procs), nnorm)
    m = SyntheticFitModel(
        processes=procs,
        signal=list(SIGNAL),
        nominal=nominal,
        sumw2=sumw2,
        data=np.zeros(nbins),
        mass_name=MASS_NAME,
        mass_logup=mlu,
        mass_logdown=mld,
        syst_names=names,
        syst_kind=kinds,
        syst_logup=slu,
        syst_logdown=sld,
        norm_names=nnames,
        norm_logkup=nlu,
        norm_logkdown=nld,
        seed=seed,
        truth=dict(truth or {}),
        asimov=asimov,
        eta_edges=eta_edges,
        pt_edges=pt_edges,
    )
    mu = expected(m, m.truth).sum(1)
    m.data = mu if asimov else rng.poisson(mu).astype(np.float64)
    return m


# ------------------------------------------------------------------ our fitter's input
def to_fit_input(
    model: SyntheticFitModel,
    *,
    sparse: bool = False,
    bb_mode: str = "lite",
    path: Any = None,
    signal_poi: bool = False,
) -> FitInput:
    """The model through ``FitInputWriter`` (our fitter's public input API).

    Without ``signal_poi`` there is no signal-strength POI: the W-mass fit's only free
    parameter is the mass (all processes are declared backgrounds, as for rabbit with
    ``--POIMode none``); with it, ``SIGNAL`` gets the writer's ``mu``. Returns the
    ``FitInput``; also writes it if ``path``."""
    return _writer(model, sparse=sparse, bb_mode=bb_mode, signal_poi=signal_poi, path=path)[0]


def _writer(
    model: SyntheticFitModel, *, sparse: bool, bb_mode: str, signal_poi: bool, path: Any = None
) -> tuple[FitInput, FitInputWriter]:
    w = FitInputWriter(systematic_type="log_normal", sparse=sparse, bb_mode=bb_mode)
    ch = "ch"
    w.add_channel(ch, model.hist(model.data).axes)
    w.add_data(model.hist(model.data), ch)
    for p, name in enumerate(model.processes):
        signal = signal_poi and name in model.signal
        w.add_process(model.hist(model.nominal[:, p], model.sumw2[:, p]), name, ch, signal=signal)
    nom = model.nominal
    for p in np.nonzero(np.any(model.mass_logup != 0, axis=0))[0]:
        w.add_shape_systematic(
            model.mass_name,
            model.processes[p],
            ch,
            up=model.hist(nom[:, p] * np.exp(model.mass_logup[:, p])),
            down=model.hist(nom[:, p] * np.exp(model.mass_logdown[:, p])),
            constrained=False,
            groups=["mass"],
        )
    for k, sname in enumerate(model.syst_names):
        for p in model.syst_processes(k):
            w.add_shape_systematic(
                sname,
                model.processes[p],
                ch,
                up=model.hist(nom[:, p] * np.exp(model.syst_logup[:, p, k])),
                down=model.hist(nom[:, p] * np.exp(model.syst_logdown[:, p, k])),
                groups=[model.syst_kind[k]],
            )
    for j, nname in enumerate(model.norm_names):
        for p in np.nonzero(model.norm_logkup[:, j] != 0)[0]:
            kap = (float(np.exp(model.norm_logkdown[p, j])), float(np.exp(model.norm_logkup[p, j])))
            w.add_norm_systematic(nname, [model.processes[p]], kap, groups=["norm"])
    if path is not None:
        w.write(path, args={"nsyst": model.nsyst, "seed": model.seed})
    return w.build(), w


def build_synthetic(
    nsyst: int = 1000,
    nnorm: int = NNORM,
    neta: int = SHAPE[0],
    npt: int = SHAPE[1],
    signal_per_bin: float = 2.0e4,
    seed: int = 1,
    sparse: bool = False,
    asymmetric: bool = False,
) -> tuple[FitInput, np.ndarray, FitInputWriter]:
    """(fit input, true parameter values, writer) of the model with a signal-strength POI
    and Poisson data at a known truth: mass shift 0.3, mu 1, every other parameter ~ N(0, 0.5).
    Symmetric systematics unless ``asymmetric`` (a near-Gaussian likelihood for the tests that
    compare covariance and refit impacts).
    """
    model = build_model(
        nsyst,
        seed,
        asimov=True,
        neta=neta,
        npt=npt,
        nnorm=nnorm,
        signal_per_bin=signal_per_bin,
        asymmetric=asymmetric,
    )
    fi, w = _writer(model, sparse=sparse, bb_mode="lite", signal_poi=True)
    rng = np.random.default_rng(seed + 1)
    truth = fi.param_init.copy()
    for i, t in enumerate(fi.param_type):
        if t in ("shape", "norm"):
            truth[i] = rng.normal(0.0, 0.5)
    truth[fi.param_index(model.mass_name)] = 0.3
    from .model import FitModel

    nu = np.asarray(FitModel(fi).yields(truth)).sum(1)
    fi.data = rng.poisson(nu).astype(np.float64)
    return fi, truth, w
