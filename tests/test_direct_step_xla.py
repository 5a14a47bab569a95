"""The direct Gauss-Newton step in XLA (small problems) equals the host (LAPACK) step: trial
point, predicted reduction and EDM, damped or not, with bounds, frozen parameters, negative
curvature weights, and a failed factorisation (NaN step)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wremnants_dask.fitting.minimizer import _direct_step_host, direct_step_device


def problem(seed: int, n: int = 12, nb: int = 20):
    rng = np.random.default_rng(seed)
    J = rng.normal(size=(nb, n))
    w = rng.uniform(0.5, 2.0, nb)
    c = rng.uniform(0.0, 1.0, n)
    g = rng.normal(size=n)
    x = rng.normal(size=n)
    act = (rng.uniform(size=n) > 0.2).astype(float)
    lower, upper = x - rng.uniform(0.01, 2.0, n), x + rng.uniform(0.01, 2.0, n)
    return J, w, c, g, x, act, lower, upper


@pytest.mark.parametrize("lam", [0.0, 1e-3, 10.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_same_step_as_host(seed, lam):
    J, w, c, g, x, act, lo, hi = problem(seed)
    host = _direct_step_host(J, w, c, g, x, act, np.float64(lam), lo, hi)
    xla = jax.jit(direct_step_device)(*map(jnp.asarray, (J, w, c, g, x, act, lam, lo, hi)))
    np.testing.assert_allclose(np.asarray(xla[0]), host[0], rtol=1e-10, atol=1e-12)
    assert float(xla[1]) == pytest.approx(float(host[1]), rel=1e-9)
    assert float(xla[2]) == pytest.approx(float(host[2]), rel=1e-9)
    # and a different problem gives a different step (the comparison can fail)
    J2 = J.copy()
    J2[0, 0] += 1.0
    other = _direct_step_host(J2, w, c, g, x, act, np.float64(lam), lo, hi)
    assert not np.allclose(other[0], host[0], rtol=1e-10, atol=1e-12)


def test_failed_factorisation_is_nan():
    """An indefinite Gauss-Newton matrix with a positive diagonal, [[1, 2], [2, 1]] (a bin
    with negative curvature weight): no step (NaN) and an infinite EDM, as on the host."""
    J = np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    w = np.array([2.0, -1.0, -1.0])
    c, g, x, act = np.zeros(2), np.array([1.0, -0.5]), np.zeros(2), np.ones(2)
    lo, hi = np.full(2, -5.0), np.full(2, 5.0)
    host = _direct_step_host(J, w, c, g, x, act, np.float64(0.0), lo, hi)
    xla = jax.jit(direct_step_device)(*map(jnp.asarray, (J, w, c, g, x, act, 0.0, lo, hi)))
    assert np.all(np.isnan(host[0])) and np.all(np.isnan(np.asarray(xla[0])))
    assert np.isnan(float(xla[1])) and np.isnan(host[1])
    assert float(xla[2]) == host[2] == np.inf
