"""The fitter against pyhf on a HistFactory model with every modifier type."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest
from fit_models import hw, pyhf_workspace, reg

from wremnants_dask.fitting import FitInputWriter
from wremnants_dask.fitting.fitter import Fitter
from wremnants_dask.fitting.model import FitModel
from wremnants_dask.fitting.pyhf_io import from_pyhf, to_pyhf

CODES = [None, {"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}]


@pytest.fixture(scope="module")
def jax_backend():
    old = pyhf.get_backend()
    pyhf.set_backend("jax", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    yield
    pyhf.set_backend(*old)


def pyhf_reference(spec, codes=None):
    """pyhf best fit, -logpdf and covariance (pyhf's own model, JAX autodiff Hessian)."""
    ws = pyhf.Workspace(spec)
    pm = ws.model(modifier_settings=codes) if codes else ws.model()
    d = jnp.asarray(ws.data(pm))
    bf, twice = pyhf.infer.mle.fit(d, pm, return_fitted_val=True)
    bf = np.asarray(bf)
    H = np.asarray(jax.hessian(lambda p: -pm.logpdf(p, d)[0])(jnp.asarray(bf)))
    fr = ~np.array(pm.config.suggested_fixed())
    cov = np.zeros_like(H)
    cov[np.ix_(fr, fr)] = np.linalg.inv(H[np.ix_(fr, fr)])
    return pm, d, bf, float(twice) / 2, np.sqrt(np.diag(cov))


@pytest.mark.parametrize("codes", CODES, ids=["code4_code4p", "code1_code0"])
def test_logpdf_equals_pyhf(codes, jax_backend):
    spec = pyhf_workspace()
    ws = pyhf.Workspace(spec)
    pm = ws.model(modifier_settings=codes) if codes else ws.model()
    d = jnp.asarray(ws.data(pm))
    fi = from_pyhf(spec, modifier_settings=codes)
    m = FitModel(fi)
    nll = jax.jit(lambda x: m.nll(x, m.obs) + m.nll_constant(m.obs))
    perm = [pm.config.par_names.index(n) for n in fi.param_names]
    rng = np.random.default_rng(5)
    for _ in range(4):
        p = np.array(pm.config.suggested_init(), float)
        p += rng.uniform(-0.3, 0.3, len(p)) * np.where(p == 0, 3, 1)  # |alpha| beyond 1 too
        ref = -float(pm.logpdf(jnp.asarray(p), d)[0])
        assert float(nll(jnp.asarray(p[perm]))) == pytest.approx(ref, rel=1e-12)


def test_fit_matches_pyhf(jax_backend):
    spec = pyhf_workspace()
    pm, _, bf, nll_ref, err_ref = pyhf_reference(spec)
    fi = from_pyhf(spec)
    res = Fitter(fi).fit()
    perm = [pm.config.par_names.index(n) for n in fi.param_names]
    assert res.nll_full == pytest.approx(nll_ref, rel=1e-6)
    assert res.nll_full <= nll_ref + 1e-9  # ours is at least as deep
    np.testing.assert_allclose(res.x, bf[perm], atol=1e-4)
    floating = err_ref[perm] > 0
    np.testing.assert_allclose(res.errors[floating], err_ref[perm][floating], rtol=0.01)
    # fixed parameters (pyhf fixes staterror/shapesys bins without uncertainty) stay put
    assert np.all(res.x[fi.param_fixed] == fi.param_init[fi.param_fixed])


def test_export_roundtrip_is_exact(jax_backend):
    spec = pyhf_workspace()
    fi = from_pyhf(spec)
    spec2, ms, notes = to_pyhf(fi)
    assert notes == []
    a, b = pyhf.Workspace(spec), pyhf.Workspace(spec2)
    ma, mb = a.model(), b.model(modifier_settings=ms)
    rng = np.random.default_rng(2)
    for _ in range(3):
        p = np.array(ma.config.suggested_init()) + rng.uniform(-0.2, 0.2, ma.config.npars)
        q = np.array([p[ma.config.par_names.index(n)] for n in mb.config.par_names])
        la = float(ma.logpdf(jnp.asarray(p), jnp.asarray(a.data(ma)))[0])
        lb = float(mb.logpdf(jnp.asarray(q), jnp.asarray(b.data(mb)))[0])
        assert lb == pytest.approx(la, rel=1e-10)


def test_bb_full_matches_pyhf_shapesys(jax_backend):
    """Analytically profiled Barlow-Beeston 'full' == pyhf shapesys on every sample."""
    ax = reg(3)
    s = np.array([10.0, 25.0, 12.0])
    b = np.array([50.0, 40.0, 60.0])
    sw_s, sw_b = 0.2 * s, 0.3 * b  # MC variances
    n = np.array([66.0, 58.0, 80.0])
    w = FitInputWriter(bb_mode="full")
    w.add_channel("ch", [ax])
    w.add_data(hw(ax, n), "ch")
    w.add_process(hw(ax, s, sw_s), "sig", "ch", signal=True)
    w.add_process(hw(ax, b, sw_b), "bkg", "ch")
    res = Fitter(w.build(), mode="exact").fit()
    spec = {
        "channels": [
            {
                "name": "ch",
                "samples": [
                    {
                        "name": "sig",
                        "data": list(s),
                        "modifiers": [
                            {"name": "mu", "type": "normfactor", "data": None},
                            {"name": "mc_sig", "type": "shapesys", "data": list(np.sqrt(sw_s))},
                        ],
                    },
                    {
                        "name": "bkg",
                        "data": list(b),
                        "modifiers": [
                            {"name": "mc_bkg", "type": "shapesys", "data": list(np.sqrt(sw_b))}
                        ],
                    },
                ],
            }
        ],
        "observations": [{"name": "ch", "data": list(n)}],
        "measurements": [
            {
                "name": "m",
                "config": {"poi": "mu", "parameters": [{"name": "mu", "bounds": [[-5, 10]]}]},
            }
        ],
        "version": "1.0.0",
    }
    pm, _, bf, nll_ref, err_ref = pyhf_reference(spec)
    i = pm.config.par_slice("mu").start
    assert res.nll_full == pytest.approx(nll_ref, rel=1e-6)
    assert res.x[0] == pytest.approx(bf[i], abs=1e-4)
    assert res.errors[0] == pytest.approx(err_ref[i], rel=0.01)
