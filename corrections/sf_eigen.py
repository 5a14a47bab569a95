"""Smoothing of binned scale factors in pT and eigen-decomposition of the fit covariance.

Per eta bin the scale factor is fitted by a polynomial in pT; the fit covariance is diagonalised
and each eigenvector (scaled by the square root of its eigenvalue) becomes one independent
statistical variation. A tensor (n_eta x n_eigen) of up/down variations then carries the full
statistical uncertainty of the measurement, uncorrelated between entries, as in the CMS W-mass
analysis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EigenSmoothing:
    """Per eta bin: smoothed values and eigen variations (delta, added for up, subtracted for down)."""

    smooth: np.ndarray  # (n_eta, n_pt) polynomial fit evaluated at the pT bin centres
    variations: np.ndarray  # (n_eta, n_eigen, n_pt) one-sigma eigen shifts
    chi2: np.ndarray  # (n_eta,) fit chi2 of the smoothing
    ndf: int
    params: np.ndarray  # (n_eta, n_par) polynomial coefficients in scaled pT
    eigval: np.ndarray  # (n_eta, n_eigen)
    eigvec: np.ndarray  # (n_eta, n_par, n_eigen)


def _design(x: np.ndarray, degree: int) -> np.ndarray:
    return np.vander(x, degree + 1, increasing=True)


def scaled_pt(pt: np.ndarray, pt_lo: float, pt_hi: float) -> np.ndarray:
    """pT mapped onto [-1, 1] over the table's range: keeps the polynomial fit well conditioned."""
    return 2.0 * (np.asarray(pt, dtype=np.float64) - pt_lo) / (pt_hi - pt_lo) - 1.0


def positive_largest(eigval: np.ndarray, eigvec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``eigh`` output with each eigenvector (column) signed so that its largest-|component| is
    positive: LAPACK's signs are arbitrary (they can differ between rows, builds and machines),
    and a nuisance's "up" must mean the same shift wherever the payload is rebuilt."""
    big = np.take_along_axis(eigvec, np.argmax(np.abs(eigvec), axis=-2)[..., None, :], axis=-2)
    return eigval, eigvec * np.where(big < 0, -1.0, 1.0)


def smooth_and_decompose(
    values: np.ndarray, errors: np.ndarray, pt_centres: np.ndarray, degree: int, pt_range: tuple
) -> EigenSmoothing:
    """Weighted least-squares polynomial fit in pT of each eta row, then eigen-decompose.

    ``values``/``errors`` are (n_eta, n_pt). The returned variations satisfy
    sum_k delta_k delta_k^T = A C A^T (the fit covariance propagated to the pT bins), which the
    tests check.
    """
    values = np.asarray(values, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    if values.shape != errors.shape or values.ndim != 2:
        raise ValueError(f"values {values.shape} and errors {errors.shape} must be equal 2D shapes")
    if np.any(errors <= 0) or not np.all(np.isfinite(errors)):
        raise ValueError("scale-factor uncertainties must be positive and finite")
    n_eta, n_pt = values.shape
    if degree + 1 > n_pt:
        raise ValueError(f"polynomial degree {degree} needs more than {n_pt} pT bins")
    x = scaled_pt(pt_centres, *pt_range)
    design = _design(x, degree)  # (n_pt, n_par)
    w = 1.0 / errors**2  # (n_eta, n_pt)
    # Normal equations for all eta rows at once: (n_eta, n_par, n_par)
    ata = np.einsum("ip,ei,iq->epq", design, w, design)
    atb = np.einsum("ip,ei->ep", design, w * values)
    cov = np.linalg.inv(ata)
    params = np.einsum("epq,eq->ep", cov, atb)
    smooth = params @ design.T
    eigval, eigvec = positive_largest(*np.linalg.eigh(cov))  # ascending eigenvalues
    eigval = np.clip(eigval, 0.0, None)
    # delta_k(pt) = sqrt(lambda_k) * sum_j V_jk x^j  -> (n_eta, n_eigen, n_pt)
    variations = np.einsum("ejk,ek,ij->eki", eigvec, np.sqrt(eigval), design)
    chi2 = np.sum(w * (values - smooth) ** 2, axis=1)
    return EigenSmoothing(smooth, variations, chi2, n_pt - degree - 1, params, eigval, eigvec)


def binomial_error(eff: np.ndarray, n_probes: float) -> np.ndarray:
    """Binomial uncertainty of an efficiency measured with ``n_probes`` probes per bin.

    Floored at 0.5/n so a bin at 100% efficiency still has a finite weight in the fit.
    """
    eff = np.asarray(eff, dtype=np.float64)
    return np.sqrt(np.maximum(eff * (1.0 - eff), 0.25 / n_probes) / n_probes)


def ratio_error(
    eff_data: np.ndarray, eff_mc: np.ndarray, n_probes_data: float, n_probes_mc: float
) -> np.ndarray:
    """Uncertainty of SF = eff_data / eff_mc from independent binomial errors."""
    sf = eff_data / eff_mc
    rel = np.hypot(
        binomial_error(eff_data, n_probes_data) / eff_data,
        binomial_error(eff_mc, n_probes_mc) / eff_mc,
    )
    return sf * rel
