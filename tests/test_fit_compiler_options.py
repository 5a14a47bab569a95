"""XLA compile options are feature-detected: an option the installed XLA does not know is dropped
(jaxlib 0.11 removed ``xla_cpu_use_fusion_emitters``, and any unknown name fails every compile),
and the fit runs with the rest."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fit_models import hw, reg

from wremnants_dask.fitting import FitInputWriter
from wremnants_dask.fitting import model as fit_model
from wremnants_dask.fitting.fitter import Fitter

# an option no XLA has: stands for one that a newer jaxlib retired
BOGUS = "xla_wremnants_dask_no_such_option"


def test_long_standing_option_is_kept():
    """Detection does not drop what the backend accepts (XLA has had this one for years)."""
    assert fit_model.once_compiler_options()["xla_backend_optimization_level"] == 0


def test_unknown_option_is_dropped(monkeypatch):
    # the forced option really breaks a compile, as the retired one did with jaxlib 0.11
    with pytest.raises(Exception, match=BOGUS):
        jax.jit(lambda x: x + 1.0, compiler_options={BOGUS: True}).lower(jnp.zeros(2)).compile()
    monkeypatch.setitem(fit_model.ONCE_COMPILER_OPTIONS, BOGUS, True)
    opts = fit_model.once_compiler_options()
    assert BOGUS not in opts and "xla_backend_optimization_level" in opts
    assert fit_model.supported_compiler_options({BOGUS: 1}) == {}


def test_fit_runs_without_rejected_option(monkeypatch):
    """With an unknown option forced into the fitter's options, the minimiser, the Hessian and
    the post-fit yields (every program compiled with them) still give the closed-form results
    of n = mu s + b: mu = (n - b)/s, sigma = sqrt(n)/s, post-fit total n +- sqrt(n)."""
    monkeypatch.setitem(fit_model.ONCE_COMPILER_OPTIONS, BOGUS, True)
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
    post = f.postfit_yields(r)
    assert post["total"][0] == pytest.approx(n, rel=1e-7)
    assert post["total_errors"][0] == pytest.approx(np.sqrt(n), rel=1e-6)
