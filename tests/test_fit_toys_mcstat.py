"""Toys that also draw the MC-statistics auxiliary counts (Barlow-Beeston) cover; the profiled
likelihood with drawn counts equals a numeric profile over the gammas."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from fit_models import hw, reg
from scipy.special import gammaln

from wremnants_dask.fitting import FitInputWriter
from wremnants_dask.fitting.fitter import Fitter
from wremnants_dask.fitting.model import FitModel


def _neg_log_pois(n: np.ndarray, mu: np.ndarray) -> np.ndarray:
    return mu - n * np.log(mu) + gammaln(n + 1.0)


def _two_process_input(bb_mode: str):
    ax = reg(3)
    s, b = np.array([10.0, 25.0, 12.0]), np.array([50.0, 40.0, 60.0])
    sw_s, sw_b = 0.2 * s, 0.3 * b
    w = FitInputWriter(bb_mode=bb_mode)
    w.add_channel("ch", [ax])
    w.add_data(hw(ax, [66.0, 58.0, 80.0]), "ch")
    w.add_process(hw(ax, s, sw_s), "sig", "ch", signal=True)
    w.add_process(hw(ax, b, sw_b), "bkg", "ch")
    return w.build(), s, b, sw_s, sw_b


@pytest.mark.parametrize("empty_bin", [False, True])
def test_drawn_aux_counts_profile_equals_numeric(empty_bin: bool) -> None:
    """BB lite with drawn MC counts, one of them 0 (with data, or in a bin without data:
    gamma-hat = 0 there), equals a bounded numeric profile over the gamma of each bin, and
    its gradient and Hessian are finite."""
    fi, s, b, sw_s, sw_b = _two_process_input("lite")
    model = FitModel(fi)
    n = np.array([66.0, 0.0 if empty_bin else 58.0, 80.0])
    mu = 1.3
    x = np.asarray(model.x0, float).copy()
    x[fi.param_index("mu")] = mu
    tot = mu * s + b
    k = (s + b) ** 2 / (sw_s + sw_b)  # effective MC count of the bin total
    kobs = np.random.default_rng(4).poisson(k).astype(float)
    kobs[1] = 0.0
    obs = {"data": jnp.asarray(n), "aux": jnp.asarray(model.x0), "bb_aux": jnp.asarray(kobs)}
    xj = jnp.asarray(x)
    ours = float(model.nll(xj, obs)) + float(model.nll_constant(obs))
    total = 0.0
    for i in range(3):

        def f(g, i=i):
            return _neg_log_pois(n[i], g * tot[i]) + _neg_log_pois(kobs[i], g * k[i])

        best = scipy.optimize.minimize_scalar(
            f, bounds=(0.0, 10.0), method="bounded", options={"xatol": 1e-13}
        )
        total += best.fun
    assert ours == pytest.approx(total, rel=1e-9, abs=1e-8)
    assert np.all(np.isfinite(np.asarray(jax.grad(model.nll)(xj, obs))))
    assert np.all(np.isfinite(np.asarray(jax.hessian(model.nll)(xj, obs))))


def test_drawn_counts_need_bb_lite() -> None:
    fi, *_ = _two_process_input("full")
    model = FitModel(fi)
    obs = {"data": jnp.ones(3), "aux": jnp.asarray(model.x0), "bb_aux": jnp.ones((3, 2))}
    with pytest.raises(ValueError, match="bb_mode 'lite'"):
        model.nll(jnp.asarray(model.x0), obs)


def _mc_stat_dominated_input():
    """10 bins of 100 signal events whose templates carry 4x the data variance (k = 25)."""
    ax = reg(10)
    nominal = np.full(10, 100.0)
    w = FitInputWriter(bb_mode="lite")
    w.add_channel("ch", [ax])
    w.add_data(hw(ax, nominal), "ch")
    w.add_process(hw(ax, nominal, np.full(10, 400.0)), "sig", "ch", signal=True)
    return w.build()


def test_toys_drawing_mc_counts_cover_and_nominal_counts_do_not() -> None:
    fi = _mc_stat_dominated_input()
    fitter = Fitter(fi)
    res = fitter.fit()
    i_mu = fi.param_index("mu")
    sigma = float(res.errors[i_mu])
    # data variance 100 and template variance 100^2 / 25 per bin: sigma ~ sqrt(500/100^2/10)
    assert sigma == pytest.approx(np.sqrt(500.0 / 1e4 / 10), rel=0.1)
    pulls = {}
    for mcstat in (True, False):
        t = fitter.toys(300, seed=3, mcstat=mcstat, errors=False)
        assert np.all(t["status"] == 0)
        assert ("bb_aux" in t) == mcstat
        pulls[mcstat] = (t["x"][:, i_mu] - 1.0) / sigma
    # 300 toys: the spread of a unit Gaussian is known to ~4%
    assert np.std(pulls[True]) == pytest.approx(1.0, abs=0.15)
    assert abs(np.mean(pulls[True])) < 0.2
    # only the data fluctuate: the spread is the data's share, sqrt(100 / 500)
    assert np.std(pulls[False]) == pytest.approx(np.sqrt(0.2), abs=0.1)


def test_toys_converge_when_draws_leave_bins_empty() -> None:
    """Bins with about one MC event and one data event: many toys draw k_obs = 0 and n = 0."""
    ax = reg(12)
    w = FitInputWriter(bb_mode="lite")
    w.add_channel("ch", [ax])
    w.add_data(hw(ax, np.full(12, 20.0)), "ch")
    w.add_process(hw(ax, np.full(12, 1.0), np.full(12, 1.0)), "sig", "ch", signal=True)
    w.add_process(hw(ax, np.full(12, 19.0), np.full(12, 0.5)), "bkg", "ch")
    lowstat = w.build()
    w = FitInputWriter(bb_mode="lite")
    w.add_channel("ch", [ax])
    w.add_data(hw(ax, np.full(12, 1.0)), "ch")
    w.add_process(hw(ax, np.full(12, 1.0), np.full(12, 1.0)), "sig", "ch", signal=True)
    fitter = Fitter(w.build())
    t = fitter.toys(60, seed=1, errors=False)
    assert np.any((t["data"] == 0) & (t["bb_aux"] == 0))  # the case is exercised
    assert np.all(t["status"] == 0)
    assert np.all(np.isfinite(t["x"]))
    assert np.all(Fitter(lowstat).toys(20, seed=2, errors=False)["status"] == 0)
