"""Generator weights: genWeight with aMC@NLO-like negative weights, LHE PDF and scale weights.

The PDF eigenvectors and scale variations are smooth, fixed functions of the hard system's
rapidity, pT (and W charge): the same functions for every sample and seed, so a varied
histogram is a physical reweighting, not noise. NanoAOD convention: LHE weights are ratios to
the nominal, LHEPdfWeight[0] = 1 and LHEScaleWeight[4] = (muR, muF) = (1, 1) = 1.
"""

from __future__ import annotations

import numpy as np

N_PDF = 103  # nominal + 100 Hessian eigenvectors + 2 alphaS
N_HESSIAN = 100
SCALE_FACTORS = ((0.5, 0.5), (0.5, 1), (0.5, 2), (1, 0.5), (1, 1), (1, 2), (2, 0.5), (2, 1), (2, 2))

_coef_rng = np.random.default_rng(20240913)  # fixed: eigenvector shapes are not event-seeded
_AMP = 0.003 + 0.015 * np.exp(-np.arange(N_HESSIAN) / 25.0)
_C = _coef_rng.normal(0.0, 1.0, (N_HESSIAN, 5))
_C /= np.abs(_C).sum(axis=1, keepdims=True)


def pdf_weights(y: np.ndarray, pt: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """(n, 103) float32 ratios; eigenvectors at the 0.3-1.8% level, smooth in y and pT."""
    t = np.clip(y / 4.2, -1.0, 1.0)
    lpt = np.log1p(pt / 20.0) / np.log1p(15.0)
    basis = np.stack(
        [
            t * t,
            0.5 * (3 * t**4 - 1),
            lpt,
            np.sign(charge) * t,
            t * lpt * np.sign(charge) + lpt * t * t,
        ],
        axis=1,
    )  # (n, 5)
    var = 1.0 + (basis @ _C.T) * _AMP[None, :]
    als = 0.012 * (0.3 + 0.7 * pt**2 / (pt**2 + 25.0**2))
    out = np.empty((y.size, N_PDF), dtype=np.float32)
    out[:, 0] = 1.0
    out[:, 1 : 1 + N_HESSIAN] = var
    out[:, 101] = 1.0 - als
    out[:, 102] = 1.0 + als
    return out


def scale_weights(y: np.ndarray, pt: np.ndarray) -> np.ndarray:
    """(n, 9) float32 ratios in NanoAOD [muR, muF] order; ~2% at low pT, 10-15% in the tail."""
    g = 0.02 + 0.11 * pt**2 / (pt**2 + 30.0**2)
    ay = np.abs(np.clip(y / 4.2, -1, 1))
    out = np.empty((y.size, 9), dtype=np.float32)
    for i, (r, f) in enumerate(SCALE_FACTORS):
        lr, lf = np.log2(r), np.log2(f)
        out[:, i] = 1.0 - g * (lr + 0.4 * lf * (1.0 - 0.5 * ay)) + 0.01 * lr * lf
    out[:, 4] = 1.0
    return out


def gen_weights(rng: np.random.Generator, n: int, neg_fraction: float, abs_w: float) -> np.ndarray:
    """+-abs_w with a fraction ``neg_fraction`` of negative weights (float32)."""
    neg = rng.uniform(size=n) < neg_fraction
    return np.where(neg, -abs_w, abs_w).astype(np.float32)
