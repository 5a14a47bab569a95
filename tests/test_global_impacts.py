"""Global impacts against refits and against the POI variance.

Independent truths: (1) d poi / d observable by refitting with that observable moved up and
down (central differences), for a global observable, a data count and an MC count; (2) on
expected (Asimov) data the likelihood's curvature is the observables' Fisher information, so
the global impacts of all observables must add in quadrature to the POI's error from the
Hessian.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from wremnants_dask.fitting import Fitter
from wremnants_dask.fitting.global_impacts import observables, poi_derivatives
from wremnants_dask.fitting.synthmodel import MASS_NAME, build_synthetic


@pytest.fixture(scope="module")
def model():
    fi, _, _ = build_synthetic(nsyst=4, nnorm=2, neta=4, npt=4, signal_per_bin=500.0)
    return fi


@pytest.mark.parametrize("bb", ["none", "lite"])
def test_asimov_global_impacts_add_up_to_the_error(model, bb):
    f = Fitter(model, bb_mode=bb, pois=[MASS_NAME], tol_edm=1e-11)
    res = f.fit(obs=f.asimov_obs())
    g = f.impacts_global(res)
    err = res.errors[model.param_index(MASS_NAME)]
    np.testing.assert_allclose(g["total"][0], err, rtol=1e-8)
    assert (g["binByBinStat"][0] > 0.1 * err) == (bb == "lite")
    # every group is needed: without the constrained nuisances the sum falls short
    assert np.hypot(g["stat"][0], g["binByBinStat"][0]) < 0.999 * err


def _refit_derivative(f: Fitter, res, key: str, i: int, step: float, poi: int) -> float:
    xs = []
    for s in (+1, -1):
        o = {k: np.array(v, dtype=float) for k, v in observables(f.model, res.obs).items()}
        o[key][i] += s * step
        r = f.fit(obs={k: jnp.asarray(v) for k, v in o.items()}, x0=res.x, hessian=False)
        xs.append(r.x[poi])
    return (xs[0] - xs[1]) / (2 * step)


@pytest.mark.parametrize("inject", [False, True])
def test_derivatives_match_refits(model, inject):
    """``inject``: the implicit-function derivative with the wrong sign (as a sign slip in
    d x / d obs = -C dg/dobs would give) is shown to fail the comparison."""
    f = Fitter(model, bb_mode="lite", pois=[MASS_NAME], tol_edm=1e-11)
    res = f.fit()
    p = model.param_index(MASS_NAME)
    d = poi_derivatives(f.model, res.x, res.cov, res.free, observables(f.model, res.obs), p)
    sign = -1.0 if inject else 1.0
    nuis = int(np.argmax(np.abs(d["aux"])))  # the global observable that matters most
    b = int(np.argmax(np.abs(d["data"])))
    k = int(np.argmax(np.abs(d["bb_aux"])))
    checks = [
        ("aux", nuis, 0.3 * model.param_width[nuis], 2e-3),
        ("data", b, 5.0, 1e-4),
        ("bb_aux", k, 0.02 * float(np.asarray(observables(f.model, res.obs)["bb_aux"])[k]), 1e-3),
    ]
    ok = []
    for key, i, step, rtol in checks:
        fd = _refit_derivative(f, res, key, i, step, p)
        ok.append(np.isclose(sign * d[key][i], fd, rtol=rtol, atol=0))
    assert all(ok) if not inject else not any(ok)
