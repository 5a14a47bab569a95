"""The closed-form derivatives of the yields in the parameters outside the shape tensor
(``fitting.rest_derivatives``) against JAX autodiff of the yields themselves, on a published
workspace (code4 normsys, code4p histosys sharing names with them, staterror/shapesys/lumi
factors) away from the nominal point (some |alpha| > 1, gammas off 1)."""

from __future__ import annotations

import gzip
import json
from functools import cache, partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wremnants_dask.fitting.fitter import Fitter
from wremnants_dask.fitting.model import once_compiler_options
from wremnants_dask.fitting.pyhf_io import from_pyhf
from wremnants_dask.fitting.rest_derivatives import compact_factors, rest_jacobian_hessian

DATA = Path(__file__).parent / "data" / "pyhf"


@pytest.fixture(scope="module")
def model_point():
    with gzip.open(DATA / "ewk3l_rjmimic_bkgonly.json.gz", "rt") as f:
        fi = from_pyhf(json.load(f))
    model = Fitter(fi).model
    rng = np.random.default_rng(1)
    x = model.x0 + rng.normal(0.0, 0.6, size=fi.npar)  # alphas beyond +-1 for some
    x = np.clip(x, np.maximum(model.lower, 0.05 * model.x0), model.upper)
    return model, jnp.asarray(x)


@cache
def autodiff_fn(model):
    """jax.jacfwd / jax.hessian of the yields in the other parameters (the reference), compiled
    once per model without LLVM optimisation (its compile time at the default level is ~10 s)."""

    @partial(jax.jit, compiler_options=once_compiler_options())
    def ref(x, c, a):
        oth = jnp.asarray(model.static.other_params)
        n_other = model.other_yields(x, a)
        D = jax.jacfwd(n_other)(x[oth])
        H = jax.hessian(lambda v: jnp.sum(c[:, None] * n_other(v)))(x[oth])
        return D, H

    return ref


def autodiff(model, x, c):
    D, H = autodiff_fn(model)(x, c, model.arrays)
    return np.asarray(D), np.asarray(H)


def rel_diff(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("shift", [0.0, 1e-6])
def test_closed_form_equals_autodiff(model_point, shift):
    """Equal to rounding; the reference at a point moved by 1e-6 in one parameter (shift)
    differs by more than the tolerance, so the comparison can fail."""
    model, x = model_point
    c = jnp.asarray(np.linspace(-1.0, 2.0, model.static.nbins))
    closed = jax.jit(lambda x, c, a: rest_jacobian_hessian(model, x, a, c))
    D, H = closed(x, c, model.arrays)
    D_ref, H_ref = autodiff(model, x.at[int(model.static.other_params[3])].add(shift), c)
    close = rel_diff(np.asarray(D), D_ref) < 1e-12 and rel_diff(np.asarray(H), H_ref) < 1e-12
    assert close == (shift == 0.0)
    np.testing.assert_allclose(np.asarray(H), np.asarray(H).T, atol=0)


def test_compact_factors():
    """Rows (bin, process) list their multiplicative parameters, -1 padded."""
    mult_index = np.array([[0, -1, 2], [1, 3, -1]])  # [nbins=2, nM=3]
    mult_proc = np.array([[True, False], [True, True], [False, True]])  # [nM, nproc=2]
    q = compact_factors(mult_index, mult_proc)
    assert q.tolist() == [[0, -1], [2, -1], [1, 3], [3, -1]]
