"""Uncertainties of the yields per bin and process: ``diag(J C J^T)`` on the host, in row blocks.

``J = d yields / d x`` comes from the structure of the model rather than from one
Jacobian-vector product per parameter: the shape part is ``yields * (avg + hd * dphi)`` per
tensor entry (dense or sparse), the few other parameters (normalisations, additive and
multiplicative ones) take one forward-mode Jacobian. Rows of ``J`` are made in blocks of whole
bins, so memory stays bounded (a few blocks of ``rows x npar``) and each block meets the
covariance in one BLAS product.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .model import FitModel, once_compiler_options

_BLOCK_BYTES = 64 << 20  # one row block of J (float64)


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
    nu, dn_other, dphi = (
        np.asarray(v) if v is not None else None
        for v in (parts or make_parts(model))(jnp.asarray(x), model.arrays)
    )
    blocks = _row_blocks(model, nu.reshape(-1), dn_other, dphi)
    if data is None or model.static.bb_mode != "lite":
        return nu, blocks
    g, dg = bb_lite_factors(model, nu.sum(1), np.asarray(data, np.float64))
    return nu * g[:, None], _profiled_blocks(blocks, nu, g, dg)


def _profiled_blocks(
    blocks: Iterator[tuple[int, int, np.ndarray]], nu: np.ndarray, g: np.ndarray, dg: np.ndarray
) -> Iterator[tuple[int, int, np.ndarray]]:
    npr = nu.shape[1]
    for b0, b1, J in blocks:
        Jr = J.reshape(b1 - b0, npr, -1)
        Jt = Jr.sum(1)
        Jr = g[b0:b1, None, None] * Jr + (nu[b0:b1] * dg[b0:b1, None])[:, :, None] * Jt[:, None]
        yield b0, b1, Jr.reshape(J.shape)


def _row_blocks(
    model: FitModel, nu: np.ndarray, dn_other: np.ndarray | None, dphi: np.ndarray | None
) -> Iterator[tuple[int, int, np.ndarray]]:
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
    bins_per_block = max(1, _BLOCK_BYTES // (8 * npr * npar))
    for b0 in range(0, s.nbins, bins_per_block):
        b1 = min(s.nbins, b0 + bins_per_block)
        r0, r1 = b0 * npr, b1 * npr
        J = np.zeros((r1 - r0, npar))
        if s.nT and s.shape_sparse:
            lo, hi = np.searchsorted(sp_rows, [r0, r1])  # entries are sorted by row
            rows = sp_rows[lo:hi]
            np.add.at(J, (rows - r0, cols[sp_cols[lo:hi]]), nu[rows] * sp_val[lo:hi])
        elif s.nT:
            J[:, cols] = nu[r0:r1, None] * model.host_shape_rows(slice(r0, r1), dphi)
        if dn_other is not None:
            J[:, oth] += dn_other[r0:r1]
        yield b0, b1, J


def yield_variances(
    model: FitModel,
    x: np.ndarray,
    cov: np.ndarray | None = None,
    sigma: np.ndarray | None = None,
    parts: Any = None,
    data: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The yields [nbins, nproc], their variances and those of the bin totals [nbins].

    Either ``cov`` (post-fit covariance: ``diag(J C J^T)``) or ``sigma`` (independent widths,
    pre-fit: ``(J * J) @ sigma**2``). ``parts``: ``make_parts(model)``, reused. ``data``:
    post-fit, the observed counts, so that BB-lite yields are the profiled ones
    (``jacobian_row_blocks``).
    """
    if (cov is None) == (sigma is None):
        raise ValueError("give exactly one of cov and sigma")
    s = model.static
    var = np.zeros((s.nbins, s.nproc))
    var_tot = np.zeros(s.nbins)
    sig2 = None if sigma is None else np.asarray(sigma, np.float64) ** 2

    def quad(J: np.ndarray) -> np.ndarray:
        if sig2 is not None:
            return (J * J) @ sig2
        return np.einsum("ij,ij->i", J @ cov, J)

    nu, blocks = jacobian_row_blocks(model, x, parts, data)
    for b0, b1, J in blocks:
        var[b0:b1] = quad(J).reshape(b1 - b0, s.nproc)
        var_tot[b0:b1] = quad(J.reshape(b1 - b0, s.nproc, -1).sum(1))
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
