"""The fitter against closed-form results on one- and two-bin models, and BB-lite profiling."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from fit_models import hw, reg

from wremnants_dask.fitting import FitInputWriter
from wremnants_dask.fitting.fitter import Fitter
from wremnants_dask.fitting.model import FitModel


def test_one_bin_counting():
    """n = mu s + b: mu_hat = (n - b)/s, sigma = sqrt(n)/s; Asimov gives mu = 1, q_sat = 0."""
    ax = reg(1)
    n, s, b = 130.0, 30.0, 80.0
    w = FitInputWriter(bb_mode="none")
    w.add_channel("c", [ax])
    w.add_data(hw(ax, [n]), "c")
    w.add_process(hw(ax, [s]), "sig", "c", signal=True)
    w.add_process(hw(ax, [b]), "bkg", "c")
    f = Fitter(w.build())
    r = f.fit()
    assert r.x[0] == pytest.approx((n - b) / s, rel=1e-7)
    assert r.errors[0] == pytest.approx(np.sqrt(n) / s, rel=1e-7)
    assert f.gof_saturated(r)["q"] == pytest.approx(0.0, abs=1e-10)
    ra = f.fit(obs=f.asimov_obs())
    assert ra.x[0] == pytest.approx(1.0, abs=1e-8)
    assert ra.errors[0] == pytest.approx(np.sqrt(s + b) / s, rel=1e-7)
    # 1D scan: exact Poisson profile at mu_hat +- sigma (no nuisances -> closed form)
    grid = np.array([[r.x[0] - r.errors[0]], [r.x[0] + r.errors[0]]])
    q = f.scan(r, ["mu"], grid)
    nu = grid[:, 0] * s + b
    exact = 2 * (nu - n - n * np.log(nu / n))
    np.testing.assert_allclose(q, exact, rtol=1e-8)


def test_on_off_two_bins():
    """SR: mu s + beta b, CR: beta tau b -> mu_hat = (n1 - n2/tau)/s, var = (n1 + n2/tau^2)/s^2."""
    ax = reg(1)
    s, b, tau = 20.0, 50.0, 4.0
    n1, n2 = 95.0, 230.0
    w = FitInputWriter(bb_mode="none")
    for c, n in (("SR", n1), ("CR", n2)):
        w.add_channel(c, [ax])
        w.add_data(hw(ax, [n]), c)
    w.add_process(hw(ax, [s]), "sig", "SR", signal=True)
    w.add_process(hw(ax, [0.0]), "sig", "CR", signal=True)
    w.add_process(hw(ax, [b]), "bkg", "SR")
    w.add_process(hw(ax, [tau * b]), "bkg", "CR")
    w.add_poi("mu", ["sig"])
    w.add_poi("beta", ["bkg"])
    fi = w.build()
    r = Fitter(fi, tol_edm=1e-12).fit()
    mu, beta = fi.param_index("mu"), fi.param_index("beta")
    assert r.x[beta] == pytest.approx(n2 / (tau * b), rel=1e-7)
    assert r.x[mu] == pytest.approx((n1 - n2 / tau) / s, rel=1e-7)
    assert r.errors[mu] == pytest.approx(np.sqrt(n1 + n2 / tau**2) / s, rel=1e-7)
    cov_mb = -(n2 / tau**2) / (s * tau * b) * tau  # d mu/d n2 * d beta/d n2 * var(n2)
    assert r.cov[mu, beta] == pytest.approx(cov_mb, rel=1e-7)


def test_lognormal_constraint_one_bin():
    """b with a log-normal kappa, mu fixed: theta_hat solves the 1D stationarity equation."""
    ax = reg(1)
    n, b, kappa = 120.0, 100.0, 1.1
    w = FitInputWriter(bb_mode="none")
    w.add_channel("c", [ax])
    w.add_data(hw(ax, [n]), "c")
    w.add_process(hw(ax, [b]), "bkg", "c")
    w.add_norm_systematic("bnorm", "bkg", kappa)
    fi = w.build()
    r = Fitter(fi, tol_edm=1e-12).fit()
    lk = np.log(kappa)
    # d/dtheta [nu - n log nu + theta^2/2] = 0 with nu = b exp(theta lk)
    th = scipy.optimize.brentq(lambda t: (b * np.exp(t * lk) - n) * lk + t, -5, 5, xtol=1e-14)
    assert r.x[0] == pytest.approx(th, abs=1e-6)
    nu = b * np.exp(th * lk)
    hess = n * 0 + nu * lk**2 + 1.0  # second derivative at the minimum
    assert r.errors[0] == pytest.approx(1 / np.sqrt(hess), rel=1e-7)


def test_bb_lite_profile_equals_explicit_minimisation():
    """The closed-form BB-lite gamma equals a numerical minimisation over gamma per bin."""
    ax = reg(3)
    nom = np.array([40.0, 10.0, 3.0])
    w2 = np.array([8.0, 4.0, 2.5])
    data = np.array([48.0, 6.0, 0.0])
    w = FitInputWriter(bb_mode="lite")
    w.add_channel("c", [ax])
    w.add_data(hw(ax, data), "c")
    w.add_process(hw(ax, nom, w2), "sig", "c", signal=True)
    m = FitModel(w.build())
    for mu in (0.7, 1.0, 1.3):
        ours = float(m.nll(jnp.asarray([mu]), m.obs))
        ref = 0.0
        for nb, kb, d in zip(nom * mu, nom**2 / w2, data):

            def f(g, nb=nb, kb=kb, d=d):
                nu = g * nb
                return nu - d - (d * np.log(nu / d) if d > 0 else 0) + kb * (g - 1 - np.log(g))

            ref += scipy.optimize.minimize_scalar(
                f, bounds=(1e-6, 10), method="bounded", options={"xatol": 1e-12}
            ).fun
        assert ours == pytest.approx(ref, rel=1e-9, abs=1e-9)
