"""Muon momentum-scale variations expressed as event weights (no extra histogram fill).

A relative scale shift delta maps the reconstructed pT x to x' = (1 + delta) x. If X has the
density p(x | pT_gen) of the Gaussian resolution model, X' has p'(x) = p(x / (1+delta)) / (1+delta),
so the weight p'(x) / p(x) evaluated at the observed pT reproduces, on average, the histogram
filled with directly shifted pT. Only muons matched to a generator muon get a weight.
"""

from __future__ import annotations

import numpy as np


def gauss_logpdf(x: np.ndarray, mean: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mean) / sigma) ** 2 - np.log(sigma)


def scale_weight(
    pt_reco: np.ndarray,
    pt_gen: np.ndarray,
    sigma: np.ndarray,
    delta: float | np.ndarray,
    mean_offset: float | np.ndarray = 0.0,
) -> np.ndarray:
    """p'(pt_reco) / p(pt_reco) for a relative scale shift ``delta`` (per muon).

    p is Gaussian with mean pt_gen * (1 + mean_offset) (the simulation's own scale offset,
    zero for an unbiased simulation) and width ``sigma`` (GeV). Muons without a valid generator
    match (NaN/non-positive pt_gen or sigma) get weight 1.
    """
    pt_reco = np.asarray(pt_reco, dtype=np.float64)
    mean = np.asarray(pt_gen, dtype=np.float64) * (1.0 + np.asarray(mean_offset, dtype=np.float64))
    sigma = np.asarray(sigma, dtype=np.float64)
    one_plus = 1.0 + np.asarray(delta, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        logw = (
            gauss_logpdf(pt_reco / one_plus, mean, sigma)
            - gauss_logpdf(pt_reco, mean, sigma)
            - np.log(one_plus)
        )
        w = np.exp(logw)
    bad = ~(np.isfinite(w) & (sigma > 0) & (mean > 0))
    return np.where(bad, 1.0, w)


def scale_tensor_per_muon(
    pt_reco: np.ndarray, pt_gen: np.ndarray, sigma: np.ndarray, delta: np.ndarray
) -> np.ndarray:
    """(n_muons, 2) weights for [down, up] = shifts [-delta, +delta] (delta per muon)."""
    delta = np.asarray(delta, dtype=np.float64)
    return np.stack(
        [scale_weight(pt_reco, pt_gen, sigma, -delta), scale_weight(pt_reco, pt_gen, sigma, delta)],
        axis=-1,
    )


def resolution_weight(
    pt_reco: np.ndarray, pt_gen: np.ndarray, sigma: np.ndarray, k: float | np.ndarray
) -> np.ndarray:
    """N(pt_reco; pt_gen, k sigma) / N(pt_reco; pt_gen, sigma): the Gaussian resolution scaled
    by ``k``. Muons without a valid generator match (NaN pt_gen or sigma) get weight 1."""
    pt_reco = np.asarray(pt_reco, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        z2 = ((pt_reco - np.asarray(pt_gen, dtype=np.float64)) / sigma) ** 2
        w = np.exp(-0.5 * z2 * (1.0 / (k * k) - 1.0)) / k
    return np.where(np.isfinite(w) & (np.asarray(sigma) > 0), w, 1.0)
