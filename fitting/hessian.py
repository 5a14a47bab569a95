"""Exact Hessian at the minimum, memory-bounded.

Two exact constructions, chosen per model:

* **structured** (dense shape tensor, data term a function of the bin totals, i.e. BB none or
  lite): with ``nu_b = sum_p n_bp`` and per-bin data loss ``l_b``,
  ``H = J^T diag(l'') J + sum_bp l'_b d2 n_bp + constraints``. For the log-normal shape
  parameters ``d2 n_bp / dt_s dt_t = n_bp (K_bps K_bpt + delta_st hd_bps phi''_s)`` with
  ``K = avg + hd phi'``, so the whole shape block is two matrix products (``K^T diag(c) K``
  streamed over row chunks of the tensor, and ``J^T W J``) instead of one tangent pass per
  parameter. The few parameters that enter elsewhere (normalisations, multiplicative POIs,
  additive variations) enter through ``D = dn/dx_o`` (``FitModel.other_yields``): their cross
  block with the tensor is ``K^T diag(c) D`` and their own block a small ``jax.hessian``. The
  products run in numpy (symmetric rank-k updates, BLAS syrk), ~3x faster than XLA's float64
  dot on this CPU.
* **hvp** (anything else, e.g. sparse tensors or BB full): ``jax.linearize`` of the gradient
  applied under ``vmap`` to chunks of unit vectors, the chunk size bounded by ``mem_bytes``.

Both are exact; ``tests/test_fit_hessian.py`` compares them with ``jax.hessian``.

With ``linalg="device"`` both return a JAX array built by XLA operations on the fit's device
(the tensor blocks as float64 matrix products over row chunks of the tensor, assembled on the
device), so nothing of size [npar, npar] or of the tensor passes through the host.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from threadpoolctl import ThreadpoolController

from .interp import phi
from .model import FitModel, once_compiler_options
from .rest_derivatives import rest_jacobian_hessian


def compiler_options(model: FitModel) -> dict[str, Any]:
    """XLA options for the Hessian programs of ``model``: ``once_compiler_options()`` (no LLVM
    optimisation). Their run time is BLAS over the shape tensor and the closed-form products of
    ``rest_derivatives``; before those, a pyhf import (no tensor) ran ``jax.hessian`` of the
    yields, whose generated code needed LLVM's optimisation (12-32 s of compilation per ATLAS
    workspace, 2-core machine)."""
    return once_compiler_options()


def chunk_size(model: FitModel, mem_bytes: float = 1.0e9) -> int:
    """Number of Hessian columns per chunk so that batched tangents fit in ``mem_bytes``."""
    s = model.static
    per = 8.0 * 12 * (s.nbins * s.nproc + s.npar)
    return int(max(1, min(s.npar, mem_bytes // per, 512)))


def structured_ok(model: FitModel) -> bool:
    """True where the structured construction applies (see the module docstring)."""
    s = model.static
    return s.bb_mode != "full" and not s.shape_sparse


def _unit_columns(npar: int, idx: np.ndarray) -> jnp.ndarray:
    V = np.zeros((len(idx), npar))
    V[np.arange(len(idx)), idx] = 1.0
    return jnp.asarray(V)


def make_hvp_hessian(model: FitModel, mem_bytes: float = 1.0e9, linalg: str = "host") -> Any:
    """``hessian(x, obs) -> np.ndarray`` from chunks of Hessian-vector products (a JAX array
    assembled on the device with ``linalg="device"``)."""
    npar = model.static.npar
    cs = chunk_size(model, mem_bytes)

    @partial(jax.jit, compiler_options=compiler_options(model))
    def block(x, obs, V, arrays):
        lin = jax.linearize(jax.grad(lambda y: model.nll(y, obs, arrays)), x)[1]
        return jax.vmap(lin)(V)

    if linalg == "device":

        @partial(jax.jit, compiler_options=compiler_options(model))
        def unit_block(x, obs, start, arrays):
            V = jax.nn.one_hot(jnp.minimum(start + jnp.arange(cs), npar - 1), npar, dtype=x.dtype)
            return block.__wrapped__(x, obs, V, arrays)

        @jax.jit
        def assemble(blocks):
            H = jnp.concatenate(blocks, axis=0)[:npar]
            return 0.5 * (H + H.T)

        def hessian_device(x: jnp.ndarray, obs: dict[str, jnp.ndarray]) -> jnp.ndarray:
            blocks = [unit_block(x, obs, s, model.arrays) for s in range(0, npar, cs)]
            return assemble(blocks)

        return hessian_device

    def hessian(x: jnp.ndarray, obs: dict[str, jnp.ndarray]) -> np.ndarray:
        H = np.empty((npar, npar))
        for start in range(0, npar, cs):
            stop = min(npar, start + cs)
            idx = np.r_[np.arange(start, stop), np.full(cs - (stop - start), start)]
            H[start:stop] = np.asarray(block(x, obs, _unit_columns(npar, idx), model.arrays))[
                : stop - start
            ]
        return 0.5 * (H + H.T)

    return hessian


_BLAS: list[ThreadpoolController] = []


def small_product(nrows: int, ncols: int) -> bool:
    """True for a Gram product ``A^T A`` of ``A`` [nrows, ncols] too small for OpenBLAS
    threads to pay (under 1e8 multiply-adds, ~10-20 ms on one core): on the loaded 2-core
    machine two threads spin and wait for milliseconds on products that take microseconds."""
    return nrows * ncols * ncols < 1e8


def single_blas_thread(single: bool) -> Any:
    """One BLAS thread inside the block if ``single`` (a ``with`` context). The controller is
    made once: each ``threadpoolctl.threadpool_limits()`` rescans the loaded libraries
    (~20 ms, a third of a 2-parameter fit)."""
    if not single:
        return contextlib.nullcontext()
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


def weighted_gram(A: np.ndarray, c: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``A^T diag(c) A`` for any sign of ``c``, as symmetric rank-k updates ``B^T B`` (BLAS
    syrk through numpy: half the flops of a general product, and ~3x faster than XLA's CPU
    dot for float64). Rows are grouped by the sign of ``c`` in one scaled copy of ``A``.
    ``out`` is accumulated into."""
    n = A.shape[1]
    out = np.zeros((n, n)) if out is None else out
    neg = c < 0
    if neg.any():
        order = np.argsort(neg, kind="stable")
        B = A[order]
        B *= np.sqrt(np.abs(c[order]))[:, None]
        npos = len(c) - int(neg.sum())
        Bp, Bn = B[:npos], B[npos:]
        out += Bp.T @ Bp
        out -= Bn.T @ Bn
    else:
        B = A * np.sqrt(c)[:, None]
        out += B.T @ B
    return out


def _row_chunk(nrows: int, ncols: int, mem_bytes: float) -> int:
    """Rows of the shape tensor per streamed chunk: two chunk-sized temporaries within
    ``mem_bytes``, but at least ``ncols`` rows where that fits in 4x the budget, so that each
    rank-k update is tall enough to amortise reading and writing the ``ncols^2`` result."""
    per_row = 2 * 8 * max(ncols, 1)
    rows = max(mem_bytes // per_row, min(ncols, 4 * mem_bytes // per_row))
    return int(max(1, min(nrows, rows)))


def make_structured_hessian(model: FitModel, mem_bytes: float = 0.5e9, linalg: str = "host") -> Any:
    """``hessian(x, obs) -> np.ndarray`` from the structure of the log-normal shape tensor
    (a JAX array computed on the device with ``linalg="device"``)."""
    s = model.static
    a0 = model.arrays
    nrows = s.nbins * s.nproc
    shape_idx = np.asarray(a0["shape_param"]) if s.nT else np.zeros(0, int)
    oth = np.asarray(s.other_params, int)
    if len(np.intersect1d(shape_idx, oth)):  # a parameter in the tensor and elsewhere too
        return make_hvp_hessian(model, mem_bytes, linalg)
    rc = _row_chunk(nrows, s.nT + len(oth), mem_bytes)

    @partial(jax.jit, compiler_options=compiler_options(model))
    def core(x, obs, arrays):
        """Per-bin curvatures, per-row weights, the Jacobian of the totals, the derivatives of
        the yields in the other parameters and their own (small) second-derivative block."""
        a = arrays
        nu = model.yields(x, a)  # [nbins, nproc]
        lite = s.bb_mode == "lite"
        kinv = a["kinv"] if lite else jnp.zeros(s.nbins)
        r = model.bb_ratio(obs, a) if lite else jnp.ones(s.nbins)
        args = (nu.sum(1), obs["data"], kinv, r)
        d1 = a["mask"] * jax.vmap(jax.grad(model.bin_loss))(*args)
        d2 = jax.vmap(jax.grad(jax.grad(model.bin_loss)))(*args)
        cons = lambda y: jnp.sum(model.constraint_terms(y, obs["aux"], a))  # noqa: E731
        diag = jax.jvp(jax.grad(cons), (x,), (jnp.ones_like(x),))[1]  # diagonal Hessian
        out = {"w": a["mask"] * d2, "diag": diag}
        if s.nT:
            th = x[a["shape_param"]]
            out["c_rows"] = (d1[:, None] * nu).reshape(-1)
            out["dphi"] = model.shape_dphi(x, a)
            d2phi = jax.vmap(jax.grad(jax.grad(lambda t: phi(t, s.shape_interp))))(th)
            if s.shape_hd:
                out["hd_diag"] = (out["c_rows"] @ a["shape_hd"]) * d2phi
        dn_other = None
        if len(oth):
            # closed forms (rest_derivatives), not jax.jacfwd/jax.hessian of the yields
            dn_other, out["Hoo"] = rest_jacobian_hessian(
                model, x, a, d1, model.shape_factor(x, a)
            )  # [nbins, nproc, nother], [nother, nother]
            out["D"] = dn_other.reshape(nrows, len(oth))
            out["c_bins"] = d1
        out["J"] = model.jacobian_totals(x, a, nu=nu, dn_other=dn_other)
        return out

    if linalg == "device":
        return _structured_device(model, core, rc)

    def tensor_blocks(o: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """Shape block ``K^T diag(c n) K`` (+ the phi'' diagonal) and cross block
        ``K^T diag(c) D`` with the other parameters, ``K = avg + hd phi'``, streamed over row
        chunks of the tensor."""
        T = np.zeros((s.nT, s.nT))
        X = np.zeros((s.nT, len(oth))) if len(oth) else None
        cb = np.repeat(o["c_bins"], s.nproc) if len(oth) else None
        for start in range(0, nrows, rc):
            sl = slice(start, min(nrows, start + rc))
            K = model.host_shape_rows(sl, o.get("dphi"))
            weighted_gram(K, o["c_rows"][sl], out=T)
            if X is not None:
                X += K.T @ (cb[sl, None] * o["D"][sl])
        if s.shape_hd:
            T[np.diag_indices(s.nT)] += o["hd_diag"]
        return T, X

    def hessian(x: jnp.ndarray, obs: dict[str, jnp.ndarray]) -> np.ndarray:
        o = {k: np.asarray(v) for k, v in core(x, obs, model.arrays).items()}
        with single_blas_thread(small_product(*o["J"].shape)):
            H = weighted_gram(o["J"], o["w"])  # J^T diag(l'') J: every parameter
        H[np.diag_indices(s.npar)] += o["diag"]
        if len(oth):
            H[np.ix_(oth, oth)] += o["Hoo"]
        if s.nT:
            T, X = tensor_blocks(o)
            if s.shape_block is not None:
                lo = s.shape_block
                H[lo : lo + s.nT, lo : lo + s.nT] += T
            else:
                np.add.at(H, (shape_idx[:, None], shape_idx[None, :]), T)
            if X is not None:
                np.add.at(H, (shape_idx[:, None], oth[None, :]), X)
                np.add.at(H, (oth[:, None], shape_idx[None, :]), X.T)
        return 0.5 * (H + H.T)

    return hessian


def _structured_device(model: FitModel, core: Any, rc: int) -> Any:
    """The structured Hessian as one XLA program: ``core`` and the tensor blocks
    ``K^T diag(c) K`` / ``K^T diag(c) D`` accumulated over row chunks of ``rc`` rows (a
    ``fori_loop``; the last chunk is shifted back to stay in bounds and its rows already
    counted get weight 0), then the assembly. Same sums as the host path, to rounding."""
    s = model.static
    nrows = s.nbins * s.nproc
    shape_idx = np.asarray(model.arrays["shape_param"]) if s.nT else np.zeros(0, int)
    oth = np.asarray(s.other_params, int)
    nchunks = -(-nrows // rc)

    def tensor_blocks(o, a):
        T = jnp.zeros((s.nT, s.nT))
        X = jnp.zeros((s.nT, len(oth))) if len(oth) else None
        cb = jnp.repeat(o["c_bins"], s.nproc) if len(oth) else None

        def body(i, acc):
            start_req = i * rc
            start = jnp.minimum(start_req, nrows - rc)
            fresh = (start + jnp.arange(rc)) >= start_req  # rows not in an earlier chunk
            K = jax.lax.dynamic_slice_in_dim(a["shape_avg"], start, rc)
            if s.shape_hd:
                K = K + jax.lax.dynamic_slice_in_dim(a["shape_hd"], start, rc) * o["dphi"][None]
            c = jnp.where(fresh, jax.lax.dynamic_slice_in_dim(o["c_rows"], start, rc), 0.0)
            T_, X_ = acc
            T_ = T_ + K.T @ (c[:, None] * K)
            if X_ is not None:
                cbs = jnp.where(fresh, jax.lax.dynamic_slice_in_dim(cb, start, rc), 0.0)
                D = jax.lax.dynamic_slice_in_dim(o["D"], start, rc)
                X_ = X_ + K.T @ (cbs[:, None] * D)
            return T_, X_

        T, X = jax.lax.fori_loop(0, nchunks, body, (T, X))
        if s.shape_hd:
            T = T + jnp.diag(o["hd_diag"])
        return T, X

    @partial(jax.jit, compiler_options=compiler_options(model))
    def hessian_a(x, obs, a):
        o = core.__wrapped__(x, obs, a)
        J = o["J"]
        H = J.T @ (o["w"][:, None] * J)
        H = H + jnp.diag(o["diag"])
        if len(oth):
            H = H.at[jnp.ix_(oth, oth)].add(o["Hoo"])
        if s.nT:
            T, X = tensor_blocks(o, a)
            if s.shape_block is not None:
                lo = s.shape_block
                H = H.at[lo : lo + s.nT, lo : lo + s.nT].add(T)
            else:
                H = H.at[jnp.ix_(shape_idx, shape_idx)].add(T)
            if X is not None:
                H = H.at[jnp.ix_(shape_idx, oth)].add(X)
                H = H.at[jnp.ix_(oth, shape_idx)].add(X.T)
        return 0.5 * (H + H.T)

    def hessian(x: jnp.ndarray, obs: dict[str, jnp.ndarray]) -> jnp.ndarray:
        return hessian_a(x, obs, model.arrays)

    return hessian


def make_hessian(model: FitModel, mem_bytes: float = 1.0e9, linalg: str = "host") -> Any:
    """Return ``hessian(x, obs) -> [npar, npar]`` (exact, memory-bounded): a numpy array with
    ``linalg="host"``, a JAX array on the fit's device with ``linalg="device"``."""
    if structured_ok(model):
        return make_structured_hessian(model, mem_bytes / 10, linalg)
    return make_hvp_hessian(model, mem_bytes, linalg)
