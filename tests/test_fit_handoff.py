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
    np.testing.assert_allclose(res.x, ref.x, rtol=0, atol=1e-5)
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
