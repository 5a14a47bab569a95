"""Yield uncertainties from the structured row-block Jacobian against ``jax.jacfwd`` of the
yields and a plain ``diag(J C J^T)``, on models with every kind of parameter."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fit_models import pyhf_workspace

from wremnants_dask.fitting import yield_errors
from wremnants_dask.fitting.fitinput import FitInput
from wremnants_dask.fitting.model import FitModel
from wremnants_dask.fitting.pyhf_io import from_pyhf
from wremnants_dask.fitting.synthmodel import build_synthetic

KW = dict(nsyst=12, nnorm=3, neta=6, npt=5, signal_per_bin=500.0, asymmetric=True)


def _reference(m: FitModel, x: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    J = np.asarray(jax.jacfwd(m.yields)(jnp.asarray(x)))  # [nbins, nproc, npar]
    var = np.einsum("bpi,ij,bpj->bp", J, cov, J)
    Jt = J.sum(1)
    return var, np.einsum("bi,ij,bj->b", Jt, cov, Jt)


def _check(fi: FitInput, x: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    m = FitModel(fi)
    rng = np.random.default_rng(7)
    A = rng.normal(0, 0.1, (fi.npar, fi.npar))
    cov = A @ A.T + np.diag(rng.uniform(0.01, 0.2, fi.npar))
    ref, ref_tot = _reference(m, x, cov)
    # a tiny block size forces several row blocks
    monkeypatch.setattr(yield_errors, "_BLOCK_BYTES", 8 * fi.nproc * fi.npar * 7)
    nu, var, var_tot = yield_errors.yield_variances(m, x, cov=cov)
    np.testing.assert_allclose(nu, np.asarray(m.yields(jnp.asarray(x))), rtol=1e-14)
    np.testing.assert_allclose(var, ref, rtol=1e-9, atol=1e-12 * ref.max())
    np.testing.assert_allclose(var_tot, ref_tot, rtol=1e-9, atol=1e-12 * ref_tot.max())
    sig = rng.uniform(0.1, 1.0, fi.npar)
    _, var, var_tot = yield_errors.yield_variances(m, x, sigma=sig)
    ref, ref_tot = _reference(m, x, np.diag(sig**2))
    np.testing.assert_allclose(var, ref, rtol=1e-9, atol=1e-12 * ref.max())
    np.testing.assert_allclose(var_tot, ref_tot, rtol=1e-9, atol=1e-12 * ref_tot.max())


@pytest.mark.parametrize("sparse", [False, True])
def test_synthetic_models(sparse, monkeypatch):
    fi, truth, _ = build_synthetic(sparse=sparse, **KW)
    rng = np.random.default_rng(3)
    _check(fi, truth + rng.normal(0, 0.7, fi.npar), monkeypatch)


def test_pyhf_model_all_modifiers(monkeypatch):
    """normfactor, normsys (code4), histosys, staterror, shapesys, shapefactor, lumi."""
    fi = from_pyhf(pyhf_workspace())
    rng = np.random.default_rng(5)
    x = np.clip(np.asarray(fi.param_init) + rng.normal(0, 0.2, fi.npar), 0.3, None)
    x = np.where(np.asarray(fi.param_constraint) == 1, rng.normal(0, 0.8, fi.npar), x)
    _check(fi, x, monkeypatch)


def test_needs_exactly_one_of_cov_and_sigma():
    fi, truth, _ = build_synthetic(**KW)
    with pytest.raises(ValueError, match="exactly one"):
        yield_errors.yield_variances(FitModel(fi), truth)


def _profiled_gamma(n: float, nu: float, k: float) -> float:
    """The BB-lite factor by numerical maximisation of Pois(n | g nu) Pois(k | g k) over g."""
    from scipy.optimize import minimize_scalar

    def nll(g: float) -> float:
        return g * (nu + k) - (n + k) * np.log(g)

    return minimize_scalar(nll, bounds=(1e-3, 10.0), method="bounded", options={"xatol": 1e-12}).x


@pytest.mark.parametrize("inject", [False, True])
def test_bb_lite_postfit_yields_are_profiled(inject, monkeypatch):
    """Post-fit BB-lite yields are what the likelihood compares to the data: each bin scaled by
    its profiled MC-statistics factor (checked by a numerical maximisation per bin), with
    uncertainties through the factor's dependence on the parameters. ``inject``: the
    unprofiled yields (the code before the fix) are shown to fail the same check."""
    fi, truth, _ = build_synthetic(**KW)
    m = FitModel(fi, bb_mode="lite")
    rng = np.random.default_rng(11)
    x = truth + rng.normal(0, 0.5, fi.npar)
    data = np.asarray(fi.data, float)
    nu0 = np.asarray(m.yields(jnp.asarray(x)))
    k = fi.nominal.sum(1) ** 2 / fi.sumw2.sum(1)  # effective MC count of each bin's total
    g = np.array([_profiled_gamma(n, t, kk) for n, t, kk in zip(data, nu0.sum(1), k)])
    assert np.abs(g - 1).max() > 0.01  # the check has teeth: the factors matter here
    A = rng.normal(0, 0.1, (fi.npar, fi.npar))
    cov = A @ A.T + np.diag(rng.uniform(0.01, 0.2, fi.npar))
    monkeypatch.setattr(yield_errors, "_BLOCK_BYTES", 8 * fi.nproc * fi.npar * 7)
    nu, var, var_tot = yield_errors.yield_variances(m, x, cov=cov, data=None if inject else data)

    def profiled(xx):
        y = m.yields(xx)
        return y * ((data + k) / (y.sum(1) + k))[:, None]

    J = np.asarray(jax.jacfwd(profiled)(jnp.asarray(x)))
    ref_var = np.einsum("bpi,ij,bpj->bp", J, cov, J)
    ok = np.allclose(nu, nu0 * g[:, None], rtol=1e-7) and np.allclose(var, ref_var, rtol=1e-9)
    assert ok != inject
