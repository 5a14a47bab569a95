"""Smoothing of tag-and-probe scale factors in pT and its eigen-variations (no histogramming).

Toy SF measurements are drawn around a known quadratic in pT for many eta rows; the smoothing
must recover it (chi2 of the fitted parameters against the truth ~ n_par per row, a check that
fails when the truth is moved), its eigen-variations must reproduce the fit covariance (in
parameter space and propagated to pT), every eigenvector must have its largest-|component|
positive, and coarse bins below pt_min keep their measured SF with one variation each.
"""

from __future__ import annotations

import numpy as np
import pytest

from wremnants_dask.efficiency.smooth import sign_convention, smooth_step

PT_EDGES = np.array([15, 24, 28, 32, 36, 40, 44, 48, 80], dtype=float)
N_ETA = 400


def _truth(pt: np.ndarray) -> np.ndarray:
    x = (pt - 50.0) / 25.0
    return 0.97 + 0.01 * x - 0.008 * x * x


def _toys(shift: float = 0.0):
    rng = np.random.default_rng(7)
    centres = 0.5 * (PT_EDGES[1:] + PT_EDGES[:-1])
    err = rng.uniform(0.003, 0.01, (PT_EDGES.size - 1, N_ETA))
    sf = _truth(centres)[:, None] + err * rng.normal(size=err.shape)
    return sf + shift, err


def _param_chi2(shift: float) -> np.ndarray:
    sm = smooth_step(*_toys(shift), PT_EDGES, degree=2, pt_min=28.0)
    # the truth's coefficients in the smoothing's scaled pT (exact: truth is a quadratic)
    from wremnants_dask.corrections.sf_eigen import scaled_pt

    grid = np.linspace(28, 80, 7)
    design = np.vander(scaled_pt(grid, *sm.pt_range), 3, increasing=True)
    true_par = np.linalg.lstsq(design, _truth(grid), rcond=None)[0]
    d = sm.params - true_par
    return np.einsum("ep,epq,eq->e", d, np.linalg.inv(sm.cov), d)


@pytest.mark.parametrize(
    "shift",
    [0.0, pytest.param(0.004, marks=pytest.mark.xfail(strict=True, reason="truth moved"))],
)
def test_smoothing_recovers_the_truth(shift):
    chi2 = _param_chi2(shift)
    # chi2 with 3 dof per row: mean 3, standard error sqrt(6 / 400) ~ 0.12
    assert abs(chi2.mean() - 3.0) < 0.5, chi2.mean()


def test_eigen_variations_reproduce_the_covariance():
    sm = smooth_step(*_toys(), PT_EDGES, degree=2, pt_min=28.0)
    delta = sm.eigvec * np.sqrt(sm.eigval)[:, None, :]  # (eta, par, eig)
    np.testing.assert_allclose(
        np.einsum("epk,eqk->epq", delta, delta), sm.cov, rtol=1e-9, atol=1e-15
    )
    pt = np.linspace(28.5, 79.5, 30)
    _, var = sm.evaluate(pt)
    from wremnants_dask.corrections.sf_eigen import scaled_pt

    design = np.vander(scaled_pt(pt, *sm.pt_range), 3, increasing=True)
    want = np.einsum("ip,epq,jq->eij", design, sm.cov, design)
    np.testing.assert_allclose(np.einsum("eki,ekj->eij", var, var), want, rtol=1e-9, atol=1e-15)
    # sign convention: the largest-|component| of each eigenvector is positive
    k = np.argmax(np.abs(sm.eigvec), axis=1)
    assert np.all(np.take_along_axis(sm.eigvec, k[:, None, :], axis=1) > 0)
    flipped = sign_convention(-sm.eigvec)
    np.testing.assert_allclose(flipped, sm.eigvec)


def test_bins_below_pt_min_stay_binned():
    sf, err = _toys()
    sm = smooth_step(sf, err, PT_EDGES, degree=2, pt_min=28.0)
    assert sm.first == 2 and sm.n_eigen == 5
    nom, var = sm.evaluate(np.array([20.0, 26.0, 30.0]))
    np.testing.assert_allclose(nom[:, 0], sf[0])
    np.testing.assert_allclose(nom[:, 1], sf[1])
    np.testing.assert_allclose(var[:, 3, 0], err[0])
    np.testing.assert_allclose(var[:, 4, 1], err[1])
    assert np.all(var[:, 3:, 2] == 0) and np.all(var[:, :3, :2] == 0)
