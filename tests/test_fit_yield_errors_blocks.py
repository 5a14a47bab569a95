"""Yield uncertainties over the non-zero columns of each row block (``_covariance_quads``)
against a plain ``diag(J C J^T)`` with ``J`` from ``jax.jacfwd`` of the (profiled) yields.

The model has the zero structure the block restriction exploits: systematics local in a few
bins, systematics on one process only, and a background with no parameter of its own (its
profiled BB-lite yields still depend on every parameter of the bin through the factor ``g``).
Small blocks make the column sets differ from block to block."""

from __future__ import annotations

import hist
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wremnants_dask.fitting import FitInputWriter, yield_errors
from wremnants_dask.fitting.model import FitModel

NX, NY = 12, 5


def _h(values: np.ndarray, variances: np.ndarray | None = None) -> hist.Hist:
    h = hist.Hist(
        hist.axis.Regular(NX, 0, 1, name="x"),
        hist.axis.Regular(NY, 0, 1, name="y"),
        storage=hist.storage.Weight() if variances is not None else hist.storage.Double(),
    )
    if variances is not None:
        h.view()["value"], h.view()["variance"] = values, variances
    else:
        h.view()[...] = values
    return h


def _model() -> tuple[FitModel, list[str]]:
    rng = np.random.default_rng(4)
    nom = {
        "sig": rng.uniform(200, 400, (NX, NY)),
        "bkgA": rng.uniform(50, 150, (NX, NY)),
        "bkgB": rng.uniform(20, 60, (NX, NY)),  # no parameter of its own
    }
    w = FitInputWriter(systematic_type="log_normal", bb_mode="lite")
    w.add_channel("ch", _h(nom["sig"]).axes)
    w.add_data(_h(rng.poisson(sum(nom.values())).astype(float)), "ch")
    for name, v in nom.items():
        # few MC events: the profiled factors differ from 1 by a few percent
        w.add_process(_h(v, v * rng.uniform(0.5, 3.0, v.shape)), name, "ch", signal=name == "sig")
    for i in range(NX):  # local: one x row, signal only
        up = nom["sig"].copy()
        up[i] *= 1 + rng.uniform(0.01, 0.05, NY)
        w.add_shape_systematic(f"local{i}", "sig", "ch", up=_h(up))
    for k in range(3):  # global, one background only, asymmetric
        s = rng.uniform(0.02, 0.08, (NX, NY))
        up, dn = nom["bkgA"] * (1 + s), nom["bkgA"] * (1 - 0.5 * s)
        w.add_shape_systematic(f"globalA{k}", "bkgA", "ch", up=_h(up), down=_h(dn))
    w.add_norm_systematic("normA", ["bkgA"], 1.1)
    fi = w.build()
    return FitModel(fi), list(fi.param_names)


def _profiled_reference(m: FitModel, x: np.ndarray, cov: np.ndarray, data: np.ndarray | None):
    k = np.where(np.asarray(m.arrays["kinv"]) > 0, 1.0 / np.asarray(m.arrays["kinv"]), 0.0)

    def y(xx: jnp.ndarray) -> jnp.ndarray:
        nu = m.yields(xx)
        if data is None:
            return nu
        return nu * ((data + k) / (nu.sum(1) + k))[:, None]

    J = np.asarray(jax.jacfwd(y)(jnp.asarray(x)))  # [nbins, nproc, npar]
    Jt = J.sum(1)
    return (
        np.asarray(y(jnp.asarray(x))),
        np.einsum("bpi,ij,bpj->bp", J, cov, J),
        np.einsum("bi,ij,bj->b", Jt, cov, Jt),
    )


@pytest.mark.parametrize("profiled", [False, True])
@pytest.mark.parametrize("inject", [False, True])
def test_block_columns_match_dense_product(profiled, inject, monkeypatch):
    """``inject``: the covariance between parameters of different processes is dropped (what
    a restriction to each process's own columns would do to the totals and, through ``g``,
    to the profiled rows): the same comparison must then fail."""
    m, names = _model()
    s = m.static
    rng = np.random.default_rng(9)
    x = np.asarray(m.x0) + rng.normal(0, 0.5, s.npar)
    A = rng.normal(0, 0.1, (s.npar, s.npar))
    cov = A @ A.T + np.diag(rng.uniform(0.01, 0.2, s.npar))
    data = np.asarray(m.obs["data"], float) if profiled else None
    assert s.bb_mode == "lite"
    nu_ref, var_ref, tot_ref = _profiled_reference(m, x, cov, data)
    used = cov
    if inject:
        # the parameters of bkgA (globalA*, normA) against those of sig (local*, mu)
        grp = np.array([n.startswith(("globalA", "normA")) for n in names])
        used = cov * (grp[:, None] == grp[None, :])
    monkeypatch.setattr(yield_errors, "_COV_BLOCK_BINS", 7)  # blocks of 7 bins (9 blocks)
    nu, var, var_tot = yield_errors.yield_variances(m, x, cov=used, data=data)
    np.testing.assert_allclose(nu, nu_ref, rtol=1e-12)
    # 1e-9: rounding of sums of a few hundred terms, far below any change that matters
    ok = np.allclose(var, var_ref, rtol=1e-9, atol=0) and np.allclose(
        var_tot, tot_ref, rtol=1e-9, atol=0
    )
    assert ok != inject
    if profiled:  # the factor g matters here, so the check covers the profiled rows
        g = nu.sum(1) / np.asarray(m.yields(jnp.asarray(x))).sum(1)
        assert np.abs(g - 1).max() > 0.01
