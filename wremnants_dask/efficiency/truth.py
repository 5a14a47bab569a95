"""The generator's true efficiency of each tag-and-probe bin, for closure tests on synthetic data.

truth.json tabulates the efficiency of every step on a fine (eta, pT) grid at the reconstructed
kinematics. A measured bin averages over the probes it holds, so its true efficiency is the
table averaged with the probe counts of that step on the fine grid (the ``probes`` histogram of
the tnp processor). Coarse bin edges must be fine-grid edges (0.1 in eta, 1 GeV in pT to 60).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from wremnants_dask.efficiency.spectra import Spectra


def _members(fine: np.ndarray, coarse: np.ndarray, what: str) -> np.ndarray:
    """(n_coarse, n_fine) membership of fine bins in coarse bins."""
    idx = np.searchsorted(fine, coarse)
    bad = (idx >= fine.size) | ~np.isclose(fine[np.minimum(idx, fine.size - 1)], coarse)
    if np.any(bad):
        raise ValueError(f"{what} edges {coarse[bad]} are not on the generator's grid {fine}")
    out = np.zeros((coarse.size - 1, fine.size - 1))
    for k in range(coarse.size - 1):
        out[k, idx[k] : idx[k + 1]] = 1.0
    return out


def true_efficiencies(spec: Spectra, truth: dict | str | Path, world: str) -> np.ndarray:
    """Per flat bin of ``spec``: the probe-weighted truth efficiency (``world`` mc or data)."""
    if not isinstance(truth, dict):
        truth = json.loads(Path(truth).read_text())
    eff = truth["efficiency"]
    t_eta, t_pt = np.asarray(eff["eta_edges"]), np.asarray(eff["pt_edges"])
    if not (np.allclose(t_eta, spec.fine_eta) and np.allclose(t_pt, spec.fine_pt)):
        raise ValueError("the probes histogram grid differs from the truth table grid")
    m_pt = _members(spec.fine_pt, spec.pt_edges, "pt")
    m_eta = _members(spec.fine_eta, spec.eta_edges, "eta")
    out = np.empty(spec.shape)
    for s, step in enumerate(spec.steps):
        table = np.asarray(eff[world][step]).T  # (pt, eta)
        n = spec.probes[s]
        num = m_pt @ (n * table) @ m_eta.T
        den = m_pt @ n @ m_eta.T
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s] = (num / den)[:, :, None]
    return out.ravel()


def pulls(
    eff: np.ndarray, err: np.ndarray, true: np.ndarray, n: np.ndarray | None = None
) -> np.ndarray:
    """(measured - true) / sigma, sigma the measured error taken to the true efficiency.

    A measured error grows with the measured inefficiency (binomial-like: sigma ~ sqrt(F) / N
    for F failing probes of N), so an efficiency that fluctuates up carries a smaller error and
    (eff - true) / err has a positive mean, ~1 / (2 sqrt(F)): +0.15 at F ~ 10. That, not a
    biased efficiency, was the +0.21 mean over the 576 bins of configs/tnp.yaml (100k Z + 50/pb):
    with this sigma the simulation's pulls have mean -0.00 (count) and -0.02 (fit) +- 0.04.
    See ``sigma_at_truth`` for sigma; ``n`` (the bins' probe counts) gives it for measurements
    at 0 or 1, which must be compared too: leaving out the bins that fluctuated to no failing
    probe biases the pulls low (issue 18).
    """
    eff, true = np.asarray(eff, dtype=np.float64), np.asarray(true, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (eff - true) / sigma_at_truth(eff, err, true, n)


def sigma_at_truth(
    eff: np.ndarray, err: np.ndarray, true: np.ndarray, n: np.ndarray | None = None
) -> np.ndarray:
    """The measured error ``err`` of ``eff`` taken to the true efficiency (see ``pulls``).

    sigma = err sqrt(t (1 - t) / (e (1 - e))) keeps what the error holds beyond the binomial
    part (background, shape parameters). A measurement at 0 or 1 (or beyond) has no binomial
    part to scale: there sigma is the binomial error at the truth, sqrt(t (1 - t) / n), with
    ``n`` the bin's probes (without ``n``: its own error, which at a bound is a one-sided or
    empty-count error of another scale).
    """
    eff, err, true = (np.asarray(a, dtype=np.float64) for a in (eff, err, true))
    inside = (eff > 0) & (eff < 1) & (true > 0) & (true < 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.sqrt(true * (1 - true) / (eff * (1 - eff)))
        if n is None:
            edge = err
        else:
            edge = np.where(
                (true > 0) & (true < 1), np.sqrt(true * (1 - true) / np.asarray(n, float)), err
            )
        return np.where(inside, err * scale, edge)
