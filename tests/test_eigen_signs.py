"""Eigen-variation sign convention: each eigenvector's largest-|component| is positive, so a
nuisance's "up" is the same shift for every row and on every machine (LAPACK's signs are
arbitrary). Checked on random covariance batches, where LAPACK returns both signs."""

from __future__ import annotations

import numpy as np

from wremnants_dask.corrections.sf_eigen import smooth_and_decompose
from wremnants_dask.fitsetup.smoothing import eigen_shifts


def _largest(vec: np.ndarray) -> np.ndarray:
    """The largest-|component| of each column vector (axis -2)."""
    i = np.argmax(np.abs(vec), axis=-2)
    return np.take_along_axis(vec, i[..., None, :], axis=-2)[..., 0, :]


def _random_covs(rng: np.random.Generator, n: int, p: int) -> np.ndarray:
    a = rng.normal(size=(n, p, p))
    return a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(p)


def test_fake_rate_eigen_shifts_signed_and_complete() -> None:
    cov = _random_covs(np.random.default_rng(3), 40, 3)
    raw = np.linalg.eigh(cov)[1]
    assert (_largest(raw) < 0).any()  # the raw LAPACK output does have negative ones here
    shifts = eigen_shifts(cov)  # (n, k, p)
    assert np.all(_largest(np.swapaxes(shifts, -1, -2)) > 0)
    # still a decomposition of the covariance
    np.testing.assert_allclose(np.einsum("nki,nkj->nij", shifts, shifts), cov, rtol=1e-10)


def test_scale_factor_eigenvectors_signed() -> None:
    rng = np.random.default_rng(5)
    pt = np.linspace(27, 55, 15)
    values = 1 + 0.02 * rng.normal(size=(30, 15))
    errors = rng.uniform(0.005, 0.03, size=(30, 15))
    res = smooth_and_decompose(values, errors, pt, 2, (26.0, 56.0))
    assert np.all(_largest(res.eigvec) > 0)
    # eigenvectors of the fit covariance: orthonormal, and the variations follow their signs
    np.testing.assert_allclose(
        np.einsum("epk,epl->ekl", res.eigvec, res.eigvec),
        np.broadcast_to(np.eye(3), (30, 3, 3)),
        atol=1e-12,
    )
