"""Exact first and second derivatives of the yields in the parameters that enter outside the
shape tensor (``FitModel.static.other_params``: additive variations, normalisation
systematics, multiplicative factors), written out from the structure of the model.

Per row ``r`` = (bin, process) the yield is ``nu = B E M T``: ``B = nominal + sum_k A_k(t_k)``
(additive variations, each a function of one parameter), ``E = exp(sum_k l_k(t_k))``
(normalisation systematics of the row's channel), ``M = prod_j x_j`` over the row's
multiplicative factors (``mult_q``: at most a few per row) and ``T`` the shape-tensor factor,
constant here. Every term depends on one parameter, so its first and second derivatives are
elementwise (one forward-mode pass with a tangent of ones), and the Jacobian and the Hessian of
``sum_r c_r nu_r`` are a few products of ``[rows, nother]`` matrices plus diagonals.

Why not ``jax.jacfwd``/``jax.hessian``: those push ``nother`` tangents through every
interpolation polynomial (a pyhf import: all parameters are "other", and a 224-parameter
workspace has code4 tensors of [50, 7, 102] per tangent), which XLA compiled in 12-32 s and ran
in seconds per call; the closed forms compile in well under a second at optimisation level 0.
``tests/test_fit_hessian.py`` and ``tests/test_rest_derivatives.py`` compare them with
``jax.jacfwd``/``jax.hessian`` of the yields.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .interp import code4_logfactor, phi


def compact_factors(mult_index: np.ndarray, mult_proc: np.ndarray) -> np.ndarray:
    """The multiplicative factors of each row (bin x process, row-major) as parameter indices
    [nbins * nproc, K], -1 padded, K the most factors of any row (a pyhf import: 2, e.g. a
    staterror gamma and a normfactor), from ``mult_index`` [nbins, nM] and ``mult_proc``
    [nM, nproc]."""
    nb, nm = mult_index.shape
    npr = mult_proc.shape[1]
    idx = np.broadcast_to(mult_index[:, None, :], (nb, npr, nm)).reshape(nb * npr, nm)
    sel = ((mult_index[:, :, None] >= 0) & mult_proc[None]).transpose(0, 2, 1).reshape(-1, nm)
    k = max(1, int(sel.sum(1).max(initial=0)))
    order = np.argsort(~sel, axis=1, kind="stable")[:, :k]
    rows = np.arange(nb * npr)[:, None]
    return np.where(sel[rows, order], idx[rows, order], -1).astype(np.int64)


def _derivs(f: Any, t: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """``f(t)``, ``f'`` and ``f''`` for an ``f`` whose every output element depends on one
    element of ``t`` (broadcast along the last axis): a tangent of ones then gives the partial
    derivatives element by element."""
    ones = jnp.ones_like(t)

    def d1(u: jnp.ndarray) -> jnp.ndarray:
        return jax.jvp(f, (u,), (ones,))[1]

    v0, v1 = jax.jvp(f, (t,), (ones,))
    return v0, v1, jax.jvp(d1, (t,), (ones,))[1]


def _columns(model: Any) -> np.ndarray:
    """Position of each parameter among ``static.other_params`` (nother for the others, so a
    scatter with ``mode='drop'`` ignores them)."""
    s = model.static
    col = np.full(s.npar + 1, len(s.other_params), np.int64)  # last entry: index -1
    col[np.asarray(s.other_params, np.int64)] = np.arange(len(s.other_params))
    return col


def _parts(model: Any, x: jnp.ndarray, a: dict[str, Any]) -> dict[str, Any]:
    """Per-row values and derivatives of B, log E and the factors of M (see the module doc)."""
    s = model.static
    nrows, no = s.nbins * s.nproc, len(s.other_params)
    col = jnp.asarray(_columns(model))
    p: dict[str, Any] = {"B": a["nominal"].reshape(nrows), "logE": jnp.zeros(nrows)}
    if s.nA:
        th = x[a["add_param"]]
        ph0, ph1, ph2 = _derivs(lambda t: phi(t, s.add_interp), th)
        p["B"] = p["B"] + a["add_avg"] @ th + a["add_hd"] @ ph0
        p["A1"] = a["add_avg"] + a["add_hd"] * ph1[None, :]  # [rows, nA]
        p["A2"] = a["add_hd"] * ph2[None, :]
        p["add_col"] = col[a["add_param"]]
    if s.nN:
        th = x[a["norm_param"]]
        up, dn = a["norm_up"], a["norm_dn"]
        if s.norm_interp == "code4":

            def lf(t: jnp.ndarray) -> jnp.ndarray:
                return code4_logfactor(t, up, dn, a["norm_coef"])
        else:

            def lf(t: jnp.ndarray) -> jnp.ndarray:
                return 0.5 * (up - dn) * t + 0.5 * (up + dn) * phi(t, s.norm_interp)

        l0, l1, l2 = _derivs(lf, th)  # [nchan, nproc, nN]
        cb = a["chan_of_bin"]
        p["logE"] = l0.sum(-1)[cb].reshape(nrows)
        p["N1"] = l1[cb].reshape(nrows, -1)
        p["N2"] = l2[cb].reshape(nrows, -1)
        p["norm_col"] = col[a["norm_param"]]
    if s.nM:
        q = a["mult_q"]  # [rows, K]
        p["F"] = jnp.where(q >= 0, x[jnp.maximum(q, 0)], 1.0)
        p["mult_col"] = col[q]  # -1 -> col[-1] = nother (dropped)
    p["no"] = no
    return p


def _others_product(F: jnp.ndarray, skip: tuple[int, ...]) -> jnp.ndarray:
    """Product over the factor columns of ``F`` [rows, K] except those in ``skip``."""
    out = jnp.ones(F.shape[0], F.dtype)
    for k in range(F.shape[1]):
        if k not in skip:
            out = out * F[:, k]
    return out


def _scatter_cols(vals: jnp.ndarray, cols: jnp.ndarray, no: int) -> jnp.ndarray:
    """[rows, n] values added into [rows, no] at columns ``cols`` [n]."""
    return jnp.zeros((vals.shape[0], no), vals.dtype).at[:, cols].add(vals, mode="drop")


def _gradients(p: dict[str, Any], nrows: int) -> tuple[Any, Any, Any]:
    """d B, d log E and d M per row [rows, nother] (None where the model has no such term)."""
    no = p["no"]
    GB = _scatter_cols(p["A1"], p["add_col"], no) if "A1" in p else None
    GL = _scatter_cols(p["N1"], p["norm_col"], no) if "N1" in p else None
    GM = None
    if "F" in p:
        F, mc = p["F"], p["mult_col"]
        rows = jnp.arange(nrows)
        GM = jnp.zeros((nrows, no), F.dtype)
        for k in range(F.shape[1]):
            GM = GM.at[rows, mc[:, k]].add(_others_product(F, (k,)), mode="drop")
    return GB, GL, GM


def rest_jacobian(
    model: Any, x: jnp.ndarray, a: dict[str, Any], expT: jnp.ndarray | None = None
) -> jnp.ndarray:
    """d yields / d (``static.other_params``) [nbins, nproc, nother]; ``expT`` [nbins, nproc]
    the shape-tensor factor at ``x`` (1 without a tensor)."""
    return _jacobian(model, x, a, expT)[0]


def _jacobian(model: Any, x: jnp.ndarray, a: dict[str, Any], expT: jnp.ndarray | None) -> tuple:
    s = model.static
    nrows = s.nbins * s.nproc
    p = _parts(model, x, a)
    B = p["B"]
    E = jnp.exp(p["logE"])
    if expT is not None:
        E = E * expT.reshape(nrows)
    M = _others_product(p["F"], ()) if "F" in p else jnp.ones(nrows)
    GB, GL, GM = _gradients(p, nrows)
    D = jnp.zeros((nrows, p["no"]))
    if GB is not None:
        D = D + M[:, None] * GB
    if GL is not None:
        D = D + (B * M)[:, None] * GL
    if GM is not None:
        D = D + B[:, None] * GM
    D = E[:, None] * D
    return D.reshape(s.nbins, s.nproc, p["no"]), (p, B, E, M, GB, GL, GM)


def rest_jacobian_hessian(
    model: Any,
    x: jnp.ndarray,
    a: dict[str, Any],
    c_bins: jnp.ndarray,
    expT: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(d yields / d x_o [nbins, nproc, nother], d^2/dx_o^2 of ``sum_b c_b sum_p nu_bp``
    [nother, nother]). With ``nu = B E M`` per row (module doc) and ``w = c E``:
    ``B_ij M + B E-cross terms``: sym(GB^T wM GL) + sym(GB^T w GM) + GL^T wBM GL
    + sym(GL^T wB GM) + diagonals of B'' and (log E)'' + the pairs of factors of M."""
    s = model.static
    D, (p, B, E, M, GB, GL, GM) = _jacobian(model, x, a, expT)
    no = p["no"]
    w = jnp.repeat(c_bins, s.nproc) * E
    H = jnp.zeros((no, no))
    diag = jnp.zeros(no)

    def sym(X: jnp.ndarray) -> jnp.ndarray:
        return X + X.T

    if GB is not None:
        diag = diag.at[p["add_col"]].add((w * M) @ p["A2"], mode="drop")
        if GL is not None:
            H = H + sym(GB.T @ ((w * M)[:, None] * GL))
        if GM is not None:
            H = H + sym(GB.T @ (w[:, None] * GM))
    if GL is not None:
        wbm = w * B * M
        diag = diag.at[p["norm_col"]].add(wbm @ p["N2"], mode="drop")
        H = H + GL.T @ (wbm[:, None] * GL)
        if GM is not None:
            H = H + sym(GL.T @ ((w * B)[:, None] * GM))
    if GM is not None:
        F, mc = p["F"], p["mult_col"]
        K = F.shape[1]
        for k in range(K):  # d2 M / dx_i dx_j: the product of the row's other factors
            for k2 in range(K):
                if k2 != k:
                    v = w * B * _others_product(F, (k, k2))
                    H = H.at[mc[:, k], mc[:, k2]].add(v, mode="drop")
    H = H + jnp.diag(diag)
    return D, H
