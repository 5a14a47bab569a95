"""Uncertainties of the yields per bin and process: ``diag(J C J^T)`` on the host, in row blocks.

``J = d yields / d x`` comes from the structure of the model rather than from one
Jacobian-vector product per parameter: the shape part is ``yields * (avg + hd * dphi)`` per
tensor entry (dense or sparse), the few other parameters (normalisations, additive and
multiplicative ones) take one forward-mode Jacobian. Rows of ``J`` are made in blocks of whole
bins, so memory stays bounded (a few blocks of ``rows x npar``).

With a covariance each block meets only the part of ``C`` its Jacobian touches: the columns
of ``J`` that are not zero for a process in a block of neighbouring bins (most systematics
act on one or two processes, many on a few bins) select a sub-matrix of ``C`` and the product
runs over those columns alone (``_covariance_quads``). Dropping exact zeros changes only the
order of the sums (rounding), so the variances are those of the dense product, at a fraction
of its flops (synthetic model, 2000 systematics: 5% of the tensor is non-zero).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .hessian import single_blas_thread
from .model import FitModel, once_compiler_options

_BLOCK_BYTES = 64 << 20  # one row block of J (float64)
# bins per row block of the covariance path: fewer bins leave fewer non-zero columns per block
# (neighbouring bins share their local systematics) while the products stay BLAS-sized
_COV_BLOCK_BINS = 64


def _evaluate_parts(model: Any, x: np.ndarray, parts: Any) -> tuple[np.ndarray | None, ...]:
    """The yield parts (nu, the other processes' derivatives, the shape derivatives) at x as
    numpy arrays (``parts``: a compiled ``make_parts(model)``, else built here)."""
    return tuple(
        np.asarray(v) if v is not None else None
        for v in (parts or make_parts(model))(jnp.asarray(x), model.arrays)
    )


def make_parts(model: FitModel) -> Any:
    """Compiled ``(x, arrays) -> (yields, d yields / d other params or None, d phi / d theta
    per tensor column or None)``: everything the row blocks need from JAX, in one program.
    Keep it and pass it as ``parts=`` to compile once per model."""
    s = model.static

    def parts(x: jnp.ndarray, a: dict[str, Any]) -> tuple[Any, Any, Any]:
        nu = model.yields(x, a)
        dn_other = model.other_jacobian(x, a) if s.other_params else None
        dphi = model.shape_dphi(x, a) if s.nT and s.shape_hd else None
        return nu, dn_other, dphi

    return jax.jit(parts, compiler_options=once_compiler_options())


def bb_lite_factors(
    model: FitModel, tot: Any, data: Any, xp: Any = np, kinv: Any = None
) -> tuple[Any, Any]:
    """Per bin, the Barlow-Beeston-lite factor the likelihood profiles, and its derivative in
    the bin's predicted total: maximising ``Pois(n | g nu) Pois(k | g k)`` over ``g`` gives
    ``g = (n + k) / (nu + k)`` (``k`` = effective MC count). Bins without MC-statistics terms
    (and models not in BB-lite mode) get ``g = 1``. Post-fit yields are ``g * nu``: that is
    what the fit compares to the data. ``xp=jnp`` (with the traced ``kinv``) inside a
    compiled program."""
    if model.static.bb_mode != "lite":
        return xp.ones_like(tot), xp.zeros_like(tot)
    kinv = xp.asarray(model.arrays["kinv"]) if kinv is None else kinv
    has = kinv > 0
    k = xp.where(has, 1.0 / xp.where(has, kinv, 1.0), 0.0)
    den = xp.where(has, tot + k, 1.0)
    return xp.where(has, (data + k) / den, 1.0), xp.where(has, -(data + k) / den**2, 0.0)


def jacobian_row_blocks(
    model: FitModel, x: np.ndarray, parts: Any = None, data: np.ndarray | None = None
) -> tuple[np.ndarray, Iterator[tuple[int, int, np.ndarray]]]:
    """The yields at ``x`` [nbins, nproc], and the row blocks ``(b0, b1, J)`` with
    ``J`` = d yields[b0:b1] / d x as ``[(b1-b0) * nproc, npar]``.

    With ``data`` (post-fit) and a BB-lite model, the yields are the profiled ones,
    ``g(x) nu(x)`` (``bb_lite_factors``), and ``J`` includes the dependence of ``g`` on ``x``:
    ``d(g nu_p) = g d nu_p + nu_p g' d nu_tot``."""
    nu, dn_other, dphi = _evaluate_parts(model, x, parts)
    blocks = _row_blocks(model, nu.reshape(-1), dn_other, dphi)
    if data is None or model.static.bb_mode != "lite":
        return nu, blocks
    g, dg = bb_lite_factors(model, nu.sum(1), np.asarray(data, np.float64))
    return nu * g[:, None], _profiled_blocks(blocks, nu, g, dg)


def _profiled_blocks(
    blocks: Iterator[tuple[int, int, np.ndarray]], nu: np.ndarray, g: np.ndarray, dg: np.ndarray
) -> Iterator[tuple[int, int, np.ndarray]]:
    for b0, b1, J in blocks:
        yield b0, b1, _profile_block(J, nu[b0:b1], g[b0:b1], dg[b0:b1])


def _profile_block(J: np.ndarray, nu: np.ndarray, g: np.ndarray, dg: np.ndarray) -> np.ndarray:
    """The row block of the profiled yields ``g nu_p``: ``g J_p + nu_p g' J_t`` (bins of the
    block: ``nu`` [bins, nproc], ``g``, ``dg`` [bins])."""
    nb, npr = nu.shape
    Jr = J.reshape(nb, npr, -1)
    Jt = Jr.sum(1)
    Jr = g[:, None, None] * Jr + (nu * dg[:, None])[:, :, None] * Jt[:, None]
    return Jr.reshape(J.shape)


def _row_blocks(
    model: FitModel,
    nu: np.ndarray,
    dn_other: np.ndarray | None,
    dphi: np.ndarray | None,
    max_bins: int | None = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    build, bounds = _block_builder(model, nu, dn_other, dphi, max_bins)
    for b0, b1 in bounds:
        yield b0, b1, build(b0, b1)


def _block_builder(
    model: FitModel,
    nu: np.ndarray,
    dn_other: np.ndarray | None,
    dphi: np.ndarray | None,
    max_bins: int | None = None,
) -> tuple[Any, list[tuple[int, int]]]:
    """``(build, bounds)``: ``build(b0, b1)`` makes the row block of bins ``b0:b1``
    (independent of the others, so blocks can be made in parallel threads), ``bounds`` the
    blocks of whole bins that cover the model."""
    s, a = model.static, model.arrays
    npr, npar = s.nproc, s.npar
    oth = np.asarray(s.other_params, dtype=np.int64)
    if dn_other is not None:
        dn_other = dn_other.reshape(s.nbins * npr, len(oth))
    cols = np.asarray(a["shape_param"]) if s.nT else None
    if s.nT and s.shape_sparse:
        sp_rows = np.asarray(a["sp_rows"])
        sp_cols = np.asarray(a["sp_cols"])
        sp_val = np.asarray(a["sp_avg"])
        if dphi is not None:
            sp_val = sp_val + np.asarray(a["sp_hd"]) * dphi[sp_cols]
    elif s.nT:
        avg = np.asarray(a["shape_avg"])
        hd = np.asarray(a["shape_hd"]) if s.shape_hd else None
    bins_per_block = max(1, _BLOCK_BYTES // (8 * npr * npar))
    if max_bins is not None:
        bins_per_block = min(bins_per_block, max_bins)

    def build(b0: int, b1: int) -> np.ndarray:
        r0, r1 = b0 * npr, b1 * npr
        J = np.zeros((r1 - r0, npar))
        if s.nT and s.shape_sparse:
            lo, hi = np.searchsorted(sp_rows, [r0, r1])  # entries are sorted by row
            rows = sp_rows[lo:hi]
            np.add.at(J, (rows - r0, cols[sp_cols[lo:hi]]), nu[rows] * sp_val[lo:hi])
        elif s.nT and s.shape_block is not None:  # the tensor's columns are one range
            Jc = J[:, s.shape_block : s.shape_block + s.nT]  # written in place, no temporaries
            if s.shape_hd:
                np.multiply(hd[r0:r1], dphi[None, :], out=Jc)
                Jc += avg[r0:r1]
            else:
                Jc[...] = avg[r0:r1]
            Jc *= nu[r0:r1, None]
        elif s.nT:
            J[:, cols] = nu[r0:r1, None] * model.host_shape_rows(slice(r0, r1), dphi)
        if dn_other is not None:
            J[:, oth] += dn_other[r0:r1]
        return J

    bounds = [(b0, min(s.nbins, b0 + bins_per_block)) for b0 in range(0, s.nbins, bins_per_block)]
    return build, bounds


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def yield_variances(
    model: FitModel,
    x: np.ndarray,
    cov: np.ndarray | None = None,
    sigma: np.ndarray | None = None,
    parts: Any = None,
    data: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The yields [nbins, nproc], their variances and those of the bin totals [nbins].

    Either ``cov`` (post-fit covariance: ``diag(J C J^T)``, over the non-zero columns of each
    row block, ``_covariance_quads``) or ``sigma`` (independent widths, pre-fit:
    ``(J * J) @ sigma**2``). ``parts``: ``make_parts(model)``, reused. ``data``: post-fit, the
    observed counts, so that BB-lite yields are the profiled ones (``jacobian_row_blocks``).
    """
    if (cov is None) == (sigma is None):
        raise ValueError("give exactly one of cov and sigma")
    if sigma is not None:
        return _sigma_variances(model, x, np.asarray(sigma, np.float64), parts, data)
    s = model.static
    cov = np.asarray(cov, np.float64)
    nu, dn_other, dphi = _evaluate_parts(model, x, parts)
    profile = data is not None and s.bb_mode == "lite"
    if profile:
        g, dg = bb_lite_factors(model, nu.sum(1), np.asarray(data, np.float64))
        # the profiled total g(nu_t) nu_t has the derivative g + nu_t g' = g k / (nu_t + k):
        # in closed form, as g + nu_t g' cancels where k << nu_t
        kinv = np.asarray(model.arrays["kinv"])
        has = kinv > 0
        k = np.where(has, 1.0 / np.where(has, kinv, 1.0), 0.0)
        c_tot = np.where(has, g * k / np.where(has, nu.sum(1) + k, 1.0), 1.0)
        a = nu * dg[:, None]  # d(g nu_p) = g d nu_p + a_p d nu_t
    var = np.zeros((s.nbins, s.nproc))
    var_tot = np.zeros(s.nbins)
    build, bounds = _block_builder(model, nu.reshape(-1), dn_other, dphi, _COV_BLOCK_BINS)

    def one(b: tuple[int, int]) -> None:
        b0, b1 = b
        Jr = build(b0, b1).reshape(b1 - b0, s.nproc, -1)
        if profile:
            q, qt = _covariance_quads(Jr, cov, g[b0:b1], a[b0:b1])
            qt *= c_tot[b0:b1] ** 2
        else:
            q, qt = _covariance_quads(Jr, cov)
        var[b0:b1], var_tot[b0:b1] = q, qt

    # blocks in parallel threads, each product on one BLAS thread: the products are small
    # (64 bins x a few hundred columns), where BLAS's own threads lose (on the loaded 2-core
    # machine 450 such products took 30-40 s on two OpenBLAS threads, 2.5-3 s on one)
    with single_blas_thread(True), ThreadPoolExecutor(min(_threads(), len(bounds))) as ex:
        list(ex.map(one, bounds))
    if profile:
        nu = nu * g[:, None]
    return nu, np.clip(var, 0.0, None), np.clip(var_tot, 0.0, None)


def _covariance_quads(
    Jr: np.ndarray, cov: np.ndarray, g: np.ndarray | None = None, a: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``diag(J_p C J_p^T)`` per process p and ``diag(J_t C J_t^T)`` of the totals
    ``J_t = sum_p J_p`` for one row block ``Jr`` [bins, nproc, npar], over the columns that are
    not zero in the block: ``C`` restricted to the block's columns once, and to a process's
    own columns for its product. With ``g``, ``a`` [bins(, nproc)] (BB-lite post-fit) the
    process rows are the profiled ones, ``g J_p + a_p J_t``: their product with ``C`` is
    ``g (J_p C) + a_p (J_t C)``, so each process still multiplies only its own columns."""
    nb, npr, npar = Jr.shape
    nz = Jr.any(axis=0)  # [nproc, npar]: columns not zero for the process in this block
    cols = np.flatnonzero(nz.any(axis=0))
    q = np.zeros((nb, npr))
    if len(cols) == 0:
        return q, np.zeros(nb)
    pos = np.empty(npar, np.int64)
    pos[cols] = np.arange(len(cols))
    C = cov[np.ix_(cols, cols)]
    Jt = Jr[:, :, cols].sum(axis=1)
    Wt = Jt @ C
    qt = np.einsum("ij,ij->i", Wt, Jt)
    for p in range(npr):
        own = np.flatnonzero(nz[p])
        if len(own) == 0 and g is None:
            continue
        loc = pos[own]
        Jp = Jr[:, p, own]
        if g is None:
            q[:, p] = np.einsum("ij,ij->i", Jp @ C[np.ix_(loc, loc)], Jp)
            continue
        ap = a[:, p, None]
        Jpp = ap * Jt  # the profiled row over the block's columns
        Jpp[:, loc] += g[:, None] * Jp
        Wp = ap * Wt
        if len(own):
            Wp += g[:, None] * (Jp @ C[loc])
        q[:, p] = np.einsum("ij,ij->i", Wp, Jpp)
    return q, qt


def _sigma_variances(
    model: FitModel,
    x: np.ndarray,
    sigma: np.ndarray,
    parts: Any = None,
    data: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``yield_variances`` with independent widths: ``(J * J) @ sigma**2`` per row, the row
    blocks made and reduced in parallel threads (memory-bound numpy passes that release the
    GIL)."""
    s = model.static
    var = np.zeros((s.nbins, s.nproc))
    var_tot = np.zeros(s.nbins)
    sig2 = sigma**2
    nu, dn_other, dphi = _evaluate_parts(model, x, parts)
    profile = data is not None and s.bb_mode == "lite"
    if profile:
        g, dg = bb_lite_factors(model, nu.sum(1), np.asarray(data, np.float64))
    build, bounds = _block_builder(model, nu.reshape(-1), dn_other, dphi, _COV_BLOCK_BINS)

    def one(b: tuple[int, int]) -> None:
        b0, b1 = b
        J = build(b0, b1)
        if profile:
            J = _profile_block(J, nu[b0:b1], g[b0:b1], dg[b0:b1])
        var[b0:b1] = ((J * J) @ sig2).reshape(b1 - b0, s.nproc)
        Jt = J.reshape(b1 - b0, s.nproc, -1).sum(1)
        var_tot[b0:b1] = (Jt * Jt) @ sig2

    with single_blas_thread(True), ThreadPoolExecutor(min(_threads(), len(bounds))) as ex:
        list(ex.map(one, bounds))
    if profile:
        nu = nu * g[:, None]
    return nu, np.clip(var, 0.0, None), np.clip(var_tot, 0.0, None)


def make_device_variances(model: FitModel, parts: Any = None) -> Any:
    """``variances(x, cov=None, sigma=None)``: ``yield_variances`` as one XLA program on the
    fit's device (the device path: the tensor and the covariance stay there; only the
    [nbins, nproc] results come back). Row blocks of whole bins as on the host, in a
    ``fori_loop`` whose last block is shifted back to stay in bounds (its rows recomputed to
    the same values). None for sparse tensors (their blocks are scatter-adds: host only)."""
    s = model.static
    if s.nT and s.shape_sparse:
        return None
    parts = parts or make_parts(model)
    nb, npr, npar = s.nbins, s.nproc, s.npar
    bb = int(min(nb, max(1, _BLOCK_BYTES // (8 * npr * npar))))
    nblk = -(-nb // bb)
    oth = np.asarray(s.other_params, dtype=np.int64)
    cols = np.asarray(model.arrays["shape_param"]) if s.nT else None

    def run(
        x: jnp.ndarray, M: jnp.ndarray, a: dict[str, Any], with_cov: bool, n: Any, profile: bool
    ) -> Any:
        nu, dn_other, dphi = parts.__wrapped__(x, a)
        nuf = nu.reshape(-1)
        if profile:  # BB lite post-fit: g nu and its Jacobian (see jacobian_row_blocks)
            g, dg = bb_lite_factors(model, nu.sum(1), n, xp=jnp, kinv=a["kinv"])
        dno = dn_other.reshape(nb * npr, len(oth)) if dn_other is not None else None

        def quad(J: jnp.ndarray) -> jnp.ndarray:
            return jnp.sum((J @ M) * J, axis=1) if with_cov else (J * J) @ M

        def block(i: Any, acc: Any) -> Any:
            var, var_tot = acc
            b0 = jnp.minimum(i * bb, nb - bb)
            r0, R = b0 * npr, bb * npr
            J = jnp.zeros((R, npar))
            if s.nT:
                K = jax.lax.dynamic_slice_in_dim(a["shape_avg"], r0, R)
                if s.shape_hd:
                    K = K + jax.lax.dynamic_slice_in_dim(a["shape_hd"], r0, R) * dphi[None, :]
                w = jax.lax.dynamic_slice_in_dim(nuf, r0, R)
                J = J.at[:, cols].set(w[:, None] * K)
            if dno is not None:
                J = J.at[:, oth].add(jax.lax.dynamic_slice_in_dim(dno, r0, R))
            if profile:
                Jr = J.reshape(bb, npr, npar)
                gb = jax.lax.dynamic_slice_in_dim(g, b0, bb)
                dgb = jax.lax.dynamic_slice_in_dim(dg, b0, bb)
                nub = jax.lax.dynamic_slice_in_dim(nu, b0, bb)
                Jt = Jr.sum(1)
                J = gb[:, None, None] * Jr + (nub * dgb[:, None])[:, :, None] * Jt[:, None]
                J = J.reshape(R, npar)
            q = quad(J).reshape(bb, npr)
            qt = quad(J.reshape(bb, npr, npar).sum(1))
            var = jax.lax.dynamic_update_slice(var, q, (b0, 0))
            return var, jax.lax.dynamic_update_slice(var_tot, qt, (b0,))

        acc = (jnp.zeros((nb, npr)), jnp.zeros(nb))
        var, var_tot = jax.lax.fori_loop(0, nblk, block, acc)
        if profile:
            nu = nu * g[:, None]
        return nu, jnp.clip(var, 0.0, None), jnp.clip(var_tot, 0.0, None)

    jitted = jax.jit(run, static_argnums=(3, 5), compiler_options=once_compiler_options())

    def variances(
        x: np.ndarray,
        cov: np.ndarray | None = None,
        sigma: np.ndarray | None = None,
        data: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As ``yield_variances`` (``data``: post-fit BB-lite yields profiled)."""
        if (cov is None) == (sigma is None):
            raise ValueError("give exactly one of cov and sigma")
        M = jnp.asarray(cov if cov is not None else np.asarray(sigma, np.float64) ** 2)
        profile = data is not None and s.bb_mode == "lite"
        n = jnp.asarray(np.asarray(data, np.float64)) if profile else jnp.zeros(nb)
        out = jitted(jnp.asarray(x), M, model.arrays, cov is not None, n, profile)
        return tuple(np.asarray(v) for v in out)

    return variances
