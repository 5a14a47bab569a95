"""The fast exact Hessians (structured, and chunked Hessian-vector products) against
``jax.hessian`` on models with every kind of parameter."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fit_models import pyhf_workspace

from wremnants_dask.fitting.fitinput import FitInput
from wremnants_dask.fitting.hessian import (
    make_hvp_hessian,
    make_structured_hessian,
    structured_ok,
)
from wremnants_dask.fitting.model import FitModel
from wremnants_dask.fitting.pyhf_io import from_pyhf
from wremnants_dask.fitting.synthmodel import build_synthetic

KW = dict(nsyst=12, nnorm=3, neta=6, npt=5, signal_per_bin=500.0, asymmetric=True)


def _check(fi: FitInput, x: np.ndarray, bb_mode: str | None = None, mem: float = 2e4) -> None:
    m = FitModel(fi, bb_mode=bb_mode)
    xj = jnp.asarray(x)
    H = np.asarray(jax.jit(jax.hessian(m.nll))(xj, m.obs))
    scale = np.abs(H).max()
    if structured_ok(m):
        # a tiny memory budget forces several (overlapping) row chunks of the tensor
        Hs = make_structured_hessian(m, mem_bytes=mem)(xj, m.obs)
        np.testing.assert_allclose(Hs, H, rtol=1e-9, atol=1e-11 * scale)
    Hv = make_hvp_hessian(m, mem_bytes=8 * 12 * (fi.nbins * fi.nproc + fi.npar) * 5)(xj, m.obs)
    np.testing.assert_allclose(Hv, H, rtol=1e-9, atol=1e-11 * scale)


@pytest.mark.parametrize("bb_mode", ["lite", "none"])
def test_synthetic_dense_model(bb_mode):
    fi, truth, _ = build_synthetic(**KW)
    rng = np.random.default_rng(3)
    _check(fi, truth + rng.normal(0, 0.7, fi.npar), bb_mode)  # |theta| > 1 and < 1 both


def test_sparse_and_bb_full_use_hvp():
    fs, truth, _ = build_synthetic(sparse=True, **KW)
    assert not structured_ok(FitModel(fs))
    assert not structured_ok(FitModel(build_synthetic(**KW)[0], bb_mode="full"))
    _check(fs, truth + 0.3)


def test_pyhf_model_all_modifiers():
    """normfactor, normsys (code4), histosys, staterror, shapesys, shapefactor, lumi."""
    fi = from_pyhf(pyhf_workspace())
    rng = np.random.default_rng(5)
    x = np.clip(np.asarray(fi.param_init) + rng.normal(0, 0.2, fi.npar), 0.3, None)
    x = np.where(np.asarray(fi.param_constraint) == 1, rng.normal(0, 0.8, fi.npar), x)
    _check(fi, x)


def _permuted(fi: FitInput, perm: np.ndarray) -> FitInput:
    """The same model with its parameters in the order ``perm`` (old index of each new one)."""
    new_of_old = np.empty_like(perm)
    new_of_old[perm] = np.arange(len(perm))
    kw = dict(vars(fi))
    for k in (
        "param_constraint param_center param_width param_init param_lower param_upper param_fixed"
    ).split():
        kw[k] = np.asarray(getattr(fi, k))[perm]
    kw["param_names"] = [fi.param_names[i] for i in perm]
    kw["param_type"] = [fi.param_type[i] for i in perm]
    for k in ("shape_param", "add_param", "norm_param"):
        kw[k] = new_of_old[np.asarray(getattr(fi, k))]
    if fi.mult_index is not None:
        kw["mult_index"] = np.where(
            fi.mult_index >= 0, new_of_old[np.maximum(fi.mult_index, 0)], -1
        )
    return FitInput(**kw)


def test_interleaved_parameters():
    """Shape parameters not contiguous (norms and the mass mixed in between)."""
    fi, truth, _ = build_synthetic(**KW)
    perm = np.random.default_rng(2).permutation(fi.npar)
    fp = _permuted(fi, perm)
    assert FitModel(fp).static.shape_block is None
    _check(fp, (truth + 0.4)[perm], "lite")
