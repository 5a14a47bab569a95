"""A deterministic W-mass-like synthetic fit model (for benchmarks and scaling tests).

eta (48) x pt (30) x charge (2) = 2880 bins, 10 processes, ``nsyst`` shape systematics (70%
localised in a 6-bin eta window like efficiency-statistics nuisances, 30% global like PDF
variations; each touches one to three processes), ``nnorm`` log-normal normalisations, one
unconstrained mass parameter from +-1 templates of the signal, BB-lite MC statistics. Data are
Poisson fluctuations of the model at a known truth (mass shift 0.3, nuisances ~ N(0, 0.5)).
"""

from __future__ import annotations

import hist
import numpy as np

from .fitinput import FitInput
from .fitinput_writer import FitInputWriter

PROCESSES = [
    "Wmunu",
    "Zmumu",
    "Ztautau",
    "Wtaunu",
    "Top",
    "Diboson",
    "QCD",
    "LowMass",
    "Other1",
    "Other2",
]
FRACTIONS = [1.0, 0.12, 0.03, 0.05, 0.02, 0.01, 0.08, 0.01, 0.005, 0.005]


def _axes(neta: int, npt: int):
    return (
        hist.axis.Regular(neta, -2.4, 2.4, name="eta", underflow=False, overflow=False),
        hist.axis.Regular(npt, 26.0, 56.0, name="pt", underflow=False, overflow=False),
        hist.axis.IntCategory([-1, 1], name="charge"),
    )


def _h(axes, values, variances=None):
    h = hist.Hist(*axes, storage=hist.storage.Weight())
    h.view().value = values
    h.view().variance = values * 0 if variances is None else variances
    return h


def build_synthetic(
    nsyst: int = 1000,
    nnorm: int = 20,
    neta: int = 48,
    npt: int = 30,
    signal_per_bin: float = 2.0e4,
    seed: int = 1,
    sparse: bool = False,
    asymmetric: bool = False,
) -> tuple[FitInput, np.ndarray, FitInputWriter]:
    """Return (fit input, true parameter values, writer) for the synthetic model."""
    rng = np.random.default_rng(seed)
    axes = _axes(neta, npt)
    eta = axes[0].centers[:, None, None]
    pt = axes[1].centers[None, :, None]
    q = np.array([-1.0, 1.0])[None, None, :]
    shape = (neta, npt, 2)
    w = FitInputWriter(sparse=sparse, bb_mode="lite")
    w.add_channel("ch", axes)
    noms = {}
    for k, (p, f) in enumerate(zip(PROCESSES, FRACTIONS)):
        jac = np.exp(-0.5 * ((pt - 40.0 - 2 * k) / (9.0 + k)) ** 2) * (1.0 + 0.05 * k * eta**2)
        nom = signal_per_bin * f * jac * (1.0 + 0.1 * q) * np.ones(shape)
        noms[p] = nom
        w.add_process(_h(axes, nom, nom * (0.05 + 0.01 * k)), p, "ch", signal=(p == "Wmunu"))
    # the W mass: a Jacobian-peak shift of the signal, unconstrained
    nom = noms["Wmunu"]
    slope = 0.004 * (pt - 40.0) / 10.0 * np.ones(shape)
    w.add_shape_systematic(
        "massShiftW",
        "Wmunu",
        "ch",
        up=_h(axes, nom * (1 + slope)),
        down=_h(axes, nom * (1 - slope)),
        constrained=False,
        groups=["mass"],
    )
    for k in range(nsyst):
        glob = k % 10 >= 7
        nproc = 1 + (k % 3 == 0) + (k % 5 == 0)
        procs = [PROCESSES[0]] + [PROCESSES[(k * 7 + j) % 9 + 1] for j in range(nproc - 1)]
        amp = 0.002 + 0.01 * rng.random()
        if glob:
            var = amp * np.cos(np.pi * (k % 13) * (pt - 26) / 30.0) * (1 + 0.2 * eta)
        else:
            e0 = rng.integers(0, max(1, neta - 5))
            win = ((np.arange(neta) >= e0) & (np.arange(neta) < e0 + 6))[:, None, None]
            var = amp * win * (1 + 0.5 * (pt - 41) / 15.0) * (1 + 0.3 * q)
        var = var * np.ones(shape)
        grp = "pdf" if glob else "effStat"
        for p in dict.fromkeys(procs):
            n = noms[p]
            dn = n * (1 - var * (1.3 if asymmetric else 1.0))
            w.add_shape_systematic(
                f"syst{k}", p, "ch", up=_h(axes, n * (1 + var)), down=_h(axes, dn), groups=[grp]
            )
    for k in range(nnorm):
        procs = [PROCESSES[1 + k % 9]]
        w.add_norm_systematic(f"norm{k}", procs, 1.0 + 0.02 + 0.05 * (k % 4), groups=["norm"])
    # data: the model at a known truth, Poisson fluctuated
    empty = _h(axes, np.zeros(shape))
    w.add_data(empty, "ch")
    fi = w.build()
    truth = fi.param_init.copy()
    for i, t in enumerate(fi.param_type):
        if t in ("shape", "norm"):
            truth[i] = rng.normal(0.0, 0.5)
    truth[fi.param_index("massShiftW")] = 0.3
    from .model import FitModel

    nu = np.asarray(FitModel(fi).yields(truth)).sum(1)
    fi.data = rng.poisson(nu).astype(np.float64)
    return fi, truth, w
