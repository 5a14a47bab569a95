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
