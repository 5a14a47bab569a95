"""Interpolation of asymmetric variations: ours ("smooth", pyhf code4p form) and the CMS fitter
rabbit's ("rabbit"), each against an independent formula written here, and through the model.

rabbit (independent statement of its form): with x = 2 theta,
    alpha = clip((15 x - 10 x^3 + 3 x^5) / 8, -1, 1),   log n = theta (avg + alpha hd)
ours: the same polynomial in x = theta, sign(theta) beyond |theta| = 1.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from fit_models import hw, reg

from wremnants_dask.fitting import FitInputWriter
from wremnants_dask.fitting.interp import phi
from wremnants_dask.fitting.model import FitModel

THETA = np.concatenate([np.linspace(-2.5, 2.5, 201), [-1.0, -0.5, 0.5, 1.0, 0.25, -0.75]])


def alpha_rabbit(theta):
    x = 2 * np.asarray(theta, float)
    return np.clip((15 * x - 10 * x**3 + 3 * x**5) / 8, -1, 1)


def alpha_smooth(theta):
    x = np.asarray(theta, float)
    return np.where(np.abs(x) < 1, (15 * x - 10 * x**3 + 3 * x**5) / 8, np.sign(x))


@pytest.mark.parametrize(("mode", "ref"), [("rabbit", alpha_rabbit), ("smooth", alpha_smooth)])
def test_phi_against_formula(mode, ref):
    got = np.asarray(phi(jnp.asarray(THETA), mode))
    np.testing.assert_allclose(got, THETA * ref(THETA), rtol=1e-14, atol=1e-15)
    other = alpha_smooth if ref is alpha_rabbit else alpha_rabbit
    inside = (np.abs(THETA) > 0.05) & (np.abs(THETA) < 0.95)
    # the two forms differ inside |theta| < 1: each test distinguishes them
    assert np.all(np.abs(got - THETA * other(THETA))[inside] > 1e-4)


def test_switch_points_and_smoothness():
    # rabbit is linear (|theta|) from 1/2, ours from 1; both C2 at the switch
    t = np.array([0.5, 0.7, 1.0, 1.7])
    np.testing.assert_allclose(np.asarray(phi(jnp.asarray(t), "rabbit")), t, rtol=1e-15)
    assert float(phi(jnp.asarray(0.7), "smooth")) < 0.7
    import jax

    for mode, t0 in (("rabbit", 0.5), ("smooth", 1.0)):
        d1 = jax.grad(lambda x, m=mode: phi(x, m))
        d2 = jax.grad(d1)
        eps = 1e-7
        assert float(d1(t0 - eps)) == pytest.approx(float(d1(t0 + eps)), abs=1e-5)
        assert float(d2(t0 - eps)) == pytest.approx(float(d2(t0 + eps)), abs=1e-4)
    with pytest.raises(ValueError, match="unknown interpolation"):
        phi(jnp.asarray(0.1), "linear")


@pytest.mark.parametrize(("mode", "ref"), [("rabbit", alpha_rabbit), ("smooth", alpha_smooth)])
def test_model_yields(mode, ref):
    """One bin, one asymmetric log-normal shape systematic (up x1.10, down x0.95)."""
    ax = reg(1)
    nom, up, dn = 100.0, 110.0, 95.0
    w = FitInputWriter(bb_mode="none", shape_interp=mode, norm_interp=mode)
    w.add_channel("c", [ax])
    w.add_data(hw(ax, [nom]), "c")
    w.add_process(hw(ax, [nom]), "sig", "c", signal=True)
    w.add_shape_systematic("s", "sig", "c", up=hw(ax, [up]), down=hw(ax, [dn]))
    fi = w.build()
    model = FitModel(fi)
    i = fi.param_names.index("s")
    avg = 0.5 * (np.log(up / nom) - np.log(dn / nom))
    hd = 0.5 * (np.log(up / nom) + np.log(dn / nom))
    for theta in (-1.3, -1.0, -0.6, -0.2, 0.3, 0.75, 1.0, 2.0):
        x = np.zeros(len(fi.param_names))
        x[fi.param_names.index("mu")] = 1.0
        x[i] = theta
        got = float(np.asarray(model.yields(jnp.asarray(x)))[0, 0])
        expect = nom * np.exp(theta * (avg + ref(theta) * hd))
        assert got == pytest.approx(expect, rel=1e-12)
    # at +-1 both forms give the templates
    for theta, target in ((1.0, up), (-1.0, dn)):
        x = np.zeros(len(fi.param_names))
        x[fi.param_names.index("mu")] = 1.0
        x[i] = theta
        assert float(np.asarray(model.yields(jnp.asarray(x)))[0, 0]) == pytest.approx(
            target, rel=1e-12
        )
