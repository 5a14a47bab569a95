"""Direct Gauss-Newton hands off to exact Newton steps when it converges only linearly; the
minimum and covariance must equal those of a fit that runs Gauss-Newton to the end."""

from __future__ import annotations

import numpy as np

from wremnants_dask.fitting import fitter as fitter_mod
from wremnants_dask.fitting import minimizer
from wremnants_dask.fitting.fitter import Fitter
from wremnants_dask.fitting.synthmodel import build_synthetic

KW = dict(nsyst=20, nnorm=4, neta=8, npt=6, signal_per_bin=300.0, asymmetric=True)


def _reference():
    fi, _, _ = build_synthetic(**KW)
    ref = Fitter(fi).fit(x0=Fitter(fi).model.x0 + 0.8)
    # near the minimum, where the steps are undamped from the start
    x0 = ref.x + np.random.default_rng(2).normal(0, 0.05, fi.npar) * ref.free
    return fi, x0, ref


def _compare(res, ref):
    # Both fits stop within EDM 1e-8 of the minimum, i.e. ~sqrt(2e-8) = 1.4e-4 standard
    # deviations from it: their parameters agree to 1e-3 of each parameter's uncertainty.
    sigma = np.sqrt(np.diag(ref.cov))
    np.testing.assert_array_less(np.abs(res.x - ref.x), 1e-3 * sigma + 1e-12)
    assert abs(res.nll - ref.nll) < 1e-8
    np.testing.assert_allclose(res.cov, ref.cov, rtol=1e-4, atol=1e-10)


def _force_handoff(monkeypatch):
    """Every undamped step counts as slow, at any EDM: hand-off after the first one."""
    monkeypatch.setattr(minimizer, "SLOW_EDM_RATIO", 0.0)
    monkeypatch.setattr(fitter_mod, "HANDOFF_EDM", 1e6)


def test_no_handoff_without_slow_convergence():
    fi, x0, ref = _reference()
    res = Fitter(fi).fit(x0=x0)  # synthetic models converge fast
    assert res.newton_steps == 0
    _compare(res, ref)


def test_handoff_to_newton_matches_full_gauss_newton(monkeypatch):
    fi, x0, ref = _reference()
    _force_handoff(monkeypatch)
    res = Fitter(fi).fit(x0=x0)
    assert res.newton_steps >= 1
    assert res.edm <= 1e-8
    _compare(res, ref)


def test_failed_newton_steps_fall_back_to_gauss_newton(monkeypatch):
    fi, x0, ref = _reference()
    _force_handoff(monkeypatch)
    monkeypatch.setattr(fitter_mod, "NEWTON_STEPS", 0)  # the hand-off cannot finish
    runs = []
    original = Fitter._minimize_to_result

    def counted(self, *args):
        out = original(self, *args)
        runs.append(out[1])
        return out

    monkeypatch.setattr(Fitter, "_minimize_to_result", counted)
    res = Fitter(fi).fit(x0=x0)
    assert runs == [True, False]  # handed off, then Gauss-Newton to the end
    assert res.newton_steps == 0
    assert res.edm <= 1e-8
    _compare(res, ref)


def test_iteration_limit_near_the_minimum_hands_off(monkeypatch):
    """Gauss-Newton that stops at its iteration limit close to the minimum (at 5x the default
    W-mass statistics: 200 steps, edm 1.2e-3 to 1.7e-3) is finished by the exact Newton steps;
    far from it, or without a Hessian to follow, the limit is an error."""
    import pytest

    from wremnants_dask.fitting.fitter import FitError

    fi, x0, ref = _reference()
    monkeypatch.setattr(fitter_mod, "HANDOFF_EDM", 1e-14)  # no early hand-off: the limit hits
    res = Fitter(fi, maxiter=3).fit(x0=x0)
    assert res.newton_steps >= 1 and res.edm <= 1e-8
    _compare(res, ref)
    with pytest.raises(FitError, match="maximum iterations"):
        Fitter(fi, maxiter=3).fit(x0=x0, hessian=False)
    monkeypatch.setattr(fitter_mod, "MAXITER_HANDOFF_EDM", 0.0)  # the defect: no hand-off
    with pytest.raises(FitError, match="maximum iterations"):
        Fitter(fi, maxiter=3).fit(x0=x0)
