"""Batched weighted least-squares smoothing of ratios (fake rates) with a log-polynomial.

The model is ``log r(x) = sum_j p_j t(x)**j`` with ``t`` the abscissa mapped linearly onto
[-1, 1] (for conditioning). One set of normal equations per row of the leading ("batch")
dimensions is built with ``einsum`` and all rows are solved at once, so every eta/charge bin and
every systematic variation is fitted in one call. Uncertainties are expressed as eigen-variations
of each row's parameter covariance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LogPolyFit", "eigen_shifts", "fit_log_polynomial", "fit_log_ratio", "poly_basis"]


def poly_basis(x: np.ndarray, order: int, x_range: tuple[float, float]) -> np.ndarray:
    """(len(x), order + 1) matrix of powers of ``t = 2 (x - lo) / (hi - lo) - 1``."""
    lo, hi = x_range
    if not hi > lo:
        raise ValueError(f"x_range must be increasing, got {x_range}")
    t = 2.0 * (np.asarray(x, dtype=float) - lo) / (hi - lo) - 1.0
    return t[:, None] ** np.arange(order + 1)[None, :]


@dataclass(frozen=True)
class LogPolyFit:
    """Result of ``fit_log_polynomial``; arrays carry the batch shape ``B``."""

    params: np.ndarray  # B + (p,)
    cov: np.ndarray  # B + (p, p)
    basis: np.ndarray  # (n, p), the design matrix at the fitted abscissae
    chi2: np.ndarray  # B
    ndf: np.ndarray  # B, number of used points minus p

    def log_ratio(self, basis: np.ndarray | None = None) -> np.ndarray:
        """Fitted log-ratio, B + (n,), at the fit abscissae or at another ``basis``."""
        b = self.basis if basis is None else basis
        return self.params @ b.T

    def ratio(self, basis: np.ndarray | None = None) -> np.ndarray:
        """Fitted (smoothed) ratio, B + (n,)."""
        return np.exp(self.log_ratio(basis))


def _check_rows(n_used: np.ndarray, p: int, order: int, what: str) -> None:
    if np.any(n_used < p):
        n_bad = int(np.count_nonzero(n_used < p))
        raise ValueError(
            f"{what}: {n_bad} of {n_used.size} rows have fewer than {p} points with a positive "
            f"value and variance; lower the polynomial order ({order}) or merge bins"
        )


def _wls(basis: np.ndarray, y: np.ndarray, w: np.ndarray, n_used: np.ndarray) -> LogPolyFit:
    """Batched weighted least squares via the normal equations (one inverse per row)."""
    n, p = basis.shape
    outer = (basis[:, :, None] * basis[:, None, :]).reshape(n, p * p)
    a = (w @ outer).reshape(w.shape[:-1] + (p, p))  # sum_n w_n X_ni X_nj, one BLAS call
    b = (w * y) @ basis
    cov = np.linalg.inv(a)
    params = (cov @ b[..., None])[..., 0]
    resid = y - params @ basis.T
    chi2 = np.sum(w * resid**2, axis=-1)
    return LogPolyFit(params=params, cov=cov, basis=basis, chi2=chi2, ndf=n_used - basis.shape[1])


def _prepare(x: np.ndarray, n: int, order: int, x_range: tuple[float, float] | None, what: str):
    x = np.asarray(x, dtype=float)
    if n != x.shape[0]:
        raise ValueError(f"{what}: last axis has {n} points, x has {x.shape[0]}")
    xr = (float(x.min()), float(x.max())) if x_range is None else x_range
    return poly_basis(x, order, xr)


def fit_log_polynomial(
    x: np.ndarray,
    ratio: np.ndarray,
    ratio_var: np.ndarray,
    order: int,
    *,
    x_range: tuple[float, float] | None = None,
    what: str = "ratio",
) -> LogPolyFit:
    """Fit ``log(ratio)`` along the last axis as a polynomial in ``x``, every row at once.

    Weights are ``1 / var(log r) = r**2 / var(r)``; points with ``r <= 0`` or ``var(r) <= 0``
    get weight 0. A row with fewer than ``order + 1`` usable points raises a ValueError naming
    ``what``. Returns parameters, covariance ``(X^T W X)^-1``, chi2 and ndf per row.
    """
    ratio = np.asarray(ratio, dtype=float)
    ratio_var = np.broadcast_to(np.asarray(ratio_var, dtype=float), ratio.shape)
    basis = _prepare(x, ratio.shape[-1], order, x_range, what)
    ok = (ratio > 0) & (ratio_var > 0) & np.isfinite(ratio) & np.isfinite(ratio_var)
    n_used = ok.sum(axis=-1)
    _check_rows(n_used, order + 1, order, what)
    safe_r = np.where(ok, ratio, 1.0)
    w = np.where(ok, safe_r**2 / np.where(ok, ratio_var, 1.0), 0.0)
    return _wls(basis, np.log(safe_r), w, n_used)


def fit_log_ratio(
    x: np.ndarray,
    num: np.ndarray,
    num_var: np.ndarray,
    den: np.ndarray,
    den_var: np.ndarray,
    order: int,
    *,
    iterations: int = 2,
    x_range: tuple[float, float] | None = None,
    what: str = "ratio",
    basis: np.ndarray | None = None,
) -> LogPolyFit:
    """Fit ``log(num / den)`` as a polynomial in ``x`` with weights from the fitted model.

    ``basis`` (n, p), if given, replaces the polynomial design matrix (``x`` and ``order`` then
    only name the points and the minimum count ``p``): a linear model in log space, e.g. a pT
    polynomial plus mT terms over the stacked points of several mT bins.

    Weights ``1 / var(log r)`` computed from the observed counts favour upward fluctuations of
    the numerator and bias the smoothed ratio by a sizeable fraction of its uncertainty. After a
    first fit with observed weights, each of ``iterations`` passes recomputes them at the
    expected counts given the fitted ratio ``r`` and the observed total:
    ``den_hat = (num + den) / (1 + r)``, ``num_hat = r den_hat``, with variances shifted by
    ``hat - observed`` (Poisson-like data, variance = count) and then refits.
    """
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    shape = np.broadcast_shapes(num.shape, den.shape, np.shape(num_var), np.shape(den_var))
    num, den = np.broadcast_to(num, shape), np.broadcast_to(den, shape)
    num_var = np.broadcast_to(np.asarray(num_var, dtype=float), shape)
    den_var = np.broadcast_to(np.asarray(den_var, dtype=float), shape)
    if basis is None:
        basis = _prepare(x, shape[-1], order, x_range, what)
    elif basis.shape[0] != shape[-1]:
        raise ValueError(f"{what}: basis has {basis.shape[0]} rows for {shape[-1]} points")
    ok = (num > 0) & (den > 0) & (num_var > 0) & (den_var > 0)
    n_used = ok.sum(axis=-1)
    _check_rows(n_used, basis.shape[1], order, what)
    all_ok = bool(ok.all())  # common case: skip the masking passes over the full tensor
    c, d = (num, den) if all_ok else (np.where(ok, num, 1.0), np.where(ok, den, 1.0))
    vc, vd = (
        (num_var, den_var) if all_ok else (np.where(ok, num_var, 1.0), np.where(ok, den_var, 1.0))
    )
    y = np.log(c / d)

    def weights(vc_: np.ndarray, c_: np.ndarray, vd_: np.ndarray, d_: np.ndarray) -> np.ndarray:
        w = 1.0 / (vc_ / c_**2 + vd_ / d_**2)
        return w if all_ok else np.where(ok, w, 0.0)

    fit = _wls(basis, y, weights(vc, c, vd, d), n_used)
    for _ in range(iterations):
        r = fit.ratio()
        d_hat = (c + d) / (1.0 + r)
        c_hat = r * d_hat
        vc_hat = np.maximum(vc + (c_hat - c), 1e-6 * vc)
        vd_hat = np.maximum(vd + (d_hat - d), 1e-6 * vd)
        fit = _wls(basis, y, weights(vc_hat, c_hat, vd_hat, d_hat), n_used)
    return fit


def eigen_shifts(cov: np.ndarray) -> np.ndarray:
    """Eigen-variations of a batch of covariance matrices: B + (k, p), shift k = sqrt(l_k) u_k.

    The shifts are independent one-sigma parameter variations: sum_k outer(s_k, s_k) = cov.
    Negative eigenvalues from rounding are set to zero. Each eigenvector is signed so that its
    largest-|component| is positive (LAPACK's signs are arbitrary and may differ from row to
    row and between machines; with this convention "up" means the same kind of shift).
    """
    lam, vec = np.linalg.eigh(cov)
    big = np.take_along_axis(vec, np.argmax(np.abs(vec), axis=-2)[..., None, :], axis=-2)
    vec = vec * np.where(big < 0, -1.0, 1.0)
    return np.swapaxes(vec * np.sqrt(np.clip(lam, 0.0, None))[..., None, :], -1, -2)
