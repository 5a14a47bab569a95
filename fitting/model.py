"""The binned likelihood of a ``FitInput`` as pure JAX functions (float64).

``nll(x, obs)`` is -log L minus a constant (each Poisson and constraint term is offset to 0 at
its own maximum, which keeps sums of thousands of large terms well conditioned);
``nll_constant(obs)`` restores pyhf's full ``-logpdf`` (lgamma and Gaussian normalisation).
``obs`` = {"data": [nbins], "aux": [npar]} is what toys and Asimov fits replace.

The Barlow-Beeston simulation-statistics parameters are profiled analytically inside the
likelihood: "lite" (one gamma per bin, closed form) or "full" (one per bin and process, a
monotone 1D root per bin, differentiable to second order by two Newton steps from the root).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from jax.scipy.special import gammaln, xlogy

from .fitinput import GAUSS, LARGE_ARRAY, POISSON, FitInput, aligned_empty
from .interp import code4_coefficients, code4_logfactor, phi
from .rest_derivatives import compact_factors, rest_jacobian

# XLA options for the programs run once per fit (minimiser, Hessian): their cost is in BLAS
# calls, tensor passes and host callbacks, not in generated loops, so LLVM's optimisation
# passes buy little run time and cost most of the compile time (100 systematics: compile + fit +
# covariance 6.4 s -> 4.2 s; 1000: 9.3 s -> 7.9 s, measured on the 2-core machine).
# XLA adds and retires its options between jaxlib releases (``xla_cpu_use_fusion_emitters`` is
# gone from jaxlib 0.11), and one unknown name fails every compile with INVALID_ARGUMENT: use
# ``once_compiler_options()``, which keeps only the options this backend accepts.
ONCE_COMPILER_OPTIONS: dict[str, Any] = {
    "xla_backend_optimization_level": 0,
    "xla_cpu_use_fusion_emitters": False,
}

# tensor models with at most this many parameters outside the tensor take their Jacobian in
# forward mode (FitModel.other_jacobian)
FORWARD_OTHER_MAX = 32

_SUPPORTED: dict[tuple, dict[str, Any]] = {}
_log = logging.getLogger(__name__)


def _compiles(options: dict[str, Any]) -> str | None:
    """None if the default backend compiles a tiny program with ``options``, else the error."""
    try:
        jax.jit(lambda x: x + 1.0, compiler_options=options).lower(jnp.zeros(2)).compile()
        return None
    except Exception as e:  # XlaRuntimeError / JaxRuntimeError, by jaxlib version
        return str(e)


def supported_compiler_options(options: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that the default backend's XLA accepts, found by compiling a
    tiny program (once per backend, jaxlib and option set; ~0.1 s a compile): all together
    first, then without the options the error names, else each alone. A rejected option
    costs compile time, not the fit."""
    key = (jax.default_backend(), jax.__version__, tuple((k, repr(v)) for k, v in options.items()))
    if key not in _SUPPORTED:
        kept = dict(options)
        while kept:
            err = _compiles(kept)
            if err is None:
                break
            bad = [k for k in kept if k in err] or [k for k in kept if _compiles({k: kept[k]})]
            bad = bad or list(kept)  # each compiles alone but not together: keep none
            for k in bad:
                _log.info("XLA compile option %s=%r dropped: %s", k, kept.pop(k), err[:200])
        _SUPPORTED[key] = kept
    return dict(_SUPPORTED[key])


def once_compiler_options() -> dict[str, Any]:
    """``ONCE_COMPILER_OPTIONS`` less those the installed XLA rejects, for ``jax.jit``."""
    return supported_compiler_options(ONCE_COMPILER_OPTIONS)


def shared_array(owner: Any, name: str) -> jnp.ndarray:
    """A JAX array for the large input tensor ``owner.<name>`` that shares its memory (DLPack
    on the CPU), so the model does not hold a second copy of the systematics tensor.

    XLA needs 64-byte aligned data to share: an unaligned tensor (e.g. built in memory by the
    writer) is moved once into aligned memory and ``owner.<name>`` replaced by it (same values),
    so the original is freed unless the caller holds it; ``read_fit_input`` already reads into
    aligned memory. The array must not be modified afterwards (``FitInput`` tensors never are)."""
    arr = np.asarray(getattr(owner, name))
    if arr.dtype != np.float64 or arr.size <= LARGE_ARRAY:
        return jnp.asarray(arr)
    if arr.ctypes.data % 64 or not arr.flags.c_contiguous:
        aligned = aligned_empty(arr.shape)
        aligned[...] = arr
        setattr(owner, name, aligned)
        arr = aligned
    try:
        out = jax.dlpack.from_dlpack(arr)
        if out.devices() == {jax.devices("cpu")[0]}:
            return out
    except (TypeError, ValueError, RuntimeError, BufferError):  # backend cannot share
        pass
    return jnp.asarray(arr)


def _pois(n: jnp.ndarray, nu: jnp.ndarray) -> jnp.ndarray:
    """Poisson -log L offset to 0 at nu = n."""
    return nu - n + xlogy(n, n) - xlogy(n, nu)


def mc_counts(kinv: Any, xp: Any = jnp) -> Any:
    """Effective MC counts k = 1/kinv of the Barlow-Beeston terms (0 where there are none):
    the nominal auxiliary observations, and the means toys draw them from."""
    return xp.where(kinv > 0, 1.0 / xp.where(kinv > 0, kinv, 1.0), 0.0)


def _pois_const(n: jnp.ndarray, xp: Any = jnp) -> jnp.ndarray:
    if xp is np:
        return scipy.special.gammaln(n + 1.0) + n - scipy.special.xlogy(n, n)
    return gammaln(n + 1.0) + n - xlogy(n, n)


@dataclass(frozen=True)
class Static:
    """Hashable structure of a model (static under jit)."""

    nbins: int
    nproc: int
    npar: int
    nT: int
    shape_sparse: bool
    shape_hd: bool
    shape_interp: str
    nA: int
    add_interp: str
    nN: int
    norm_interp: str
    nM: int
    bb_mode: str
    other_params: tuple[int, ...]  # parameters that enter outside the shape tensor
    shape_block: int | None  # first index if the shape parameters are contiguous


class FitModel:
    """Likelihood and its structured Jacobian for a fit input."""

    def __init__(self, fi: FitInput, bb_mode: str | None = None, device: Any = None) -> None:
        """``device``: the ``jax.Device`` the arrays are placed on (committed, so every
        program of the fit runs there); None: JAX's default device."""
        self.fi = fi
        bb = fi.bb_mode if bb_mode is None else bb_mode
        if bb not in ("none", "lite", "full"):
            raise ValueError(f"bb_mode must be none/lite/full, got {bb!r}")
        nb, npr = fi.nbins, fi.nproc
        a: dict[str, Any] = {}
        a["nominal"] = jnp.asarray(fi.nominal)
        a["mask"] = jnp.asarray(fi.unmasked_bins().astype(np.float64))
        a["constraint"] = jnp.asarray(fi.param_constraint)
        a["width"] = jnp.asarray(fi.param_width)
        # Barlow-Beeston inputs: 1/kstat (0 where no MC-stat uncertainty)
        with np.errstate(divide="ignore", invalid="ignore"):
            if bb == "lite":
                tot, w2 = fi.nominal.sum(1), fi.sumw2.sum(1)
                kinv = np.where((tot > 0) & (w2 > 0), w2 / tot**2, 0.0)
            else:
                kinv = np.where((fi.nominal > 0) & (fi.sumw2 > 0), fi.sumw2 / fi.nominal**2, 0.0)
        a["kinv"] = jnp.asarray(kinv)
        nT = len(fi.shape_param)
        sparse = fi.shape_sparse is not None
        has_hd = False
        if nT:
            a["shape_param"] = jnp.asarray(fi.shape_param)
            if sparse:
                sp = fi.shape_sparse
                a["sp_rows"], a["sp_cols"] = jnp.asarray(sp.rows), jnp.asarray(sp.cols)
                a["sp_bins"] = jnp.asarray(sp.rows // npr)
                a["sp_avg"] = shared_array(sp, "avg")
                has_hd = sp.hd is not None and bool(np.any(sp.hd != 0))
                if has_hd:
                    a["sp_hd"] = shared_array(sp, "hd")
            else:
                a["shape_avg"] = shared_array(fi, "shape_avg")
                has_hd = fi.shape_hd is not None and bool(np.any(fi.shape_hd != 0))
                if has_hd:
                    a["shape_hd"] = shared_array(fi, "shape_hd")
        nA = len(fi.add_param)
        if nA:
            a["add_param"] = jnp.asarray(fi.add_param)
            a["add_avg"] = shared_array(fi, "add_avg")
            a["add_hd"] = jnp.asarray(
                fi.add_hd if fi.add_hd is not None else np.zeros_like(fi.add_avg)
            )
        nN = len(fi.norm_param)
        if nN:
            a["norm_param"] = jnp.asarray(fi.norm_param)
            a["norm_up"], a["norm_dn"] = jnp.asarray(fi.norm_logup), jnp.asarray(fi.norm_logdn)
            a["chan_of_bin"] = jnp.asarray(fi.channel_of_bin())
            if fi.norm_interp == "code4":
                a["norm_coef"] = jnp.asarray(code4_coefficients(fi.norm_logup, fi.norm_logdn))
        nM = 0 if fi.mult_index is None else fi.mult_index.shape[1]
        if nM:
            a["mult_index"] = jnp.asarray(fi.mult_index)
            a["mult_proc"] = jnp.asarray(fi.mult_proc)
            # the same factors per (bin, process) row, for the closed-form derivatives
            a["mult_q"] = jnp.asarray(compact_factors(fi.mult_index, fi.mult_proc))
        other = set(fi.add_param.tolist()) | set(fi.norm_param.tolist())
        if nM:
            other |= set(np.unique(fi.mult_index[fi.mult_index >= 0]).tolist())
        self.static = Static(
            nbins=nb,
            nproc=npr,
            npar=fi.npar,
            nT=nT,
            shape_sparse=sparse,
            shape_hd=has_hd,
            shape_interp=fi.shape_interp,
            nA=nA,
            add_interp=fi.add_interp,
            nN=nN,
            norm_interp=fi.norm_interp,
            nM=nM,
            bb_mode=bb,
            other_params=tuple(sorted(other)),
            shape_block=(
                int(fi.shape_param[0])
                if nT
                and np.array_equal(
                    fi.shape_param, np.arange(fi.shape_param[0], fi.shape_param[0] + nT)
                )
                else None
            ),
        )
        self.obs = {"data": jnp.asarray(fi.data), "aux": jnp.asarray(fi.param_center)}
        if device is not None:  # no copy for arrays already there (the CPU's DLPack views)
            a = jax.device_put(a, device)
            self.obs = jax.device_put(self.obs, device)
        self.arrays = a
        self.lower = np.asarray(fi.param_lower, np.float64)
        self.upper = np.asarray(fi.param_upper, np.float64)
        self.x0 = np.asarray(fi.param_init, np.float64)

    # ------------------------------------------------------------------ yields
    def _shape_log(self, x: jnp.ndarray, a: dict[str, Any]) -> jnp.ndarray:
        s = self.static
        th = x[a["shape_param"]]
        ph = phi(th, s.shape_interp)
        if s.shape_sparse:
            v = a["sp_avg"] * th[a["sp_cols"]]
            if s.shape_hd:
                v = v + a["sp_hd"] * ph[a["sp_cols"]]
            return jax.ops.segment_sum(
                v, a["sp_rows"], num_segments=s.nbins * s.nproc, indices_are_sorted=True
            )
        out = a["shape_avg"] @ th
        if s.shape_hd:
            out = out + a["shape_hd"] @ ph
        return out

    def _rest(self, x: jnp.ndarray, a: dict[str, Any]) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(base yields incl. additive variations, log of norm factors) [nbins, nproc]."""
        s = self.static
        base = a["nominal"]
        if s.nA:
            th = x[a["add_param"]]
            d = a["add_avg"] @ th + a["add_hd"] @ phi(th, s.add_interp)
            base = base + d.reshape(s.nbins, s.nproc)
        lognorm = jnp.zeros((s.nbins, s.nproc))
        if s.nN:
            th = x[a["norm_param"]]
            if s.norm_interp == "code4":
                lf = code4_logfactor(th, a["norm_up"], a["norm_dn"], a["norm_coef"]).sum(-1)
            else:
                avg = 0.5 * (a["norm_up"] - a["norm_dn"])
                hd = 0.5 * (a["norm_up"] + a["norm_dn"])
                lf = avg @ th + hd @ phi(th, s.norm_interp)
            lognorm = lf[a["chan_of_bin"]]
        if s.nM:
            idx = a["mult_index"]
            xm = jnp.where(idx >= 0, x[jnp.maximum(idx, 0)], 1.0)  # [nbins, nM]
            fac = jnp.where(a["mult_proc"][None, :, :], xm[:, :, None], 1.0)
            base = base * jnp.prod(fac, axis=1)
        return base, lognorm

    def yields(self, x: jnp.ndarray, a: dict[str, Any] | None = None) -> jnp.ndarray:
        """Expected yields per bin and process [nbins, nproc] (before BB gammas)."""
        return self._yields(x, self.arrays if a is None else a)

    def _yields(self, x: jnp.ndarray, a: dict[str, Any]) -> jnp.ndarray:
        s = self.static
        base, lognorm = self._rest(x, a)
        logn = lognorm
        if s.nT:
            logn = logn + self._shape_log(x, a).reshape(s.nbins, s.nproc)
        return base * jnp.exp(logn)

    # ------------------------------------------------------------------ likelihood
    def bb_ratio(self, obs: dict[str, jnp.ndarray], a: dict[str, Any]) -> jnp.ndarray:
        """MC-statistics auxiliary observations as ratios r = k_obs / k to the effective MC
        counts k = 1/kinv: drawn per toy (``obs["bb_aux"]``: k_obs), else 1 (k_obs = k)."""
        if "bb_aux" not in obs:
            return jnp.ones_like(a["kinv"])
        if self.static.bb_mode != "lite":
            # BB full with drawn counts has corner solutions (a process whose count is 0 can
            # take all the data at a pinned t) that the closed form in _bb_full does not cover
            raise ValueError("drawn MC-statistics counts (obs['bb_aux']) need bb_mode 'lite'")
        return obs["bb_aux"] * a["kinv"]

    def bin_loss(
        self, nu: jnp.ndarray, n: jnp.ndarray, kinv: jnp.ndarray, r: jnp.ndarray
    ) -> jnp.ndarray:
        """Per-bin data term as a function of the bin total, BB lite profiled: the bin's gamma
        scales the prediction nu and the auxiliary MC count k_obs = r k ~ Poisson(gamma k)."""
        if self.static.bb_mode != "lite":
            return _pois(n, nu)
        has = kinv > 0
        # no data and no MC count (a toy's draw): gamma-hat = 0 and the bin's profiled term
        # is 0 for every nu; computed on safe inputs so that no NaN gradient leaks through
        empty = has & (n <= 0) & (r <= 0)
        r = jnp.where(empty, 1.0, r)
        k = 1.0 / jnp.where(has, kinv, 1.0)
        g = jnp.where(has, (n + r * k) / (nu + k), 1.0)
        cons = jnp.where(has, k * _pois(r, g), 0.0)  # Poisson(r k | g k), offset at g = r
        return jnp.where(empty, 0.0, _pois(n, g * nu) + cons)

    def _bb_full(self, nu: jnp.ndarray, n: jnp.ndarray, kinv: jnp.ndarray) -> jnp.ndarray:
        """Per-bin data term with one profiled gamma per process (nu, kinv: [nbins, nproc])."""
        tot = nu.sum(1)
        q = kinv * nu  # [nbins, nproc]

        def h(t):
            g = 1.0 / (1.0 + q * t[:, None])
            return (1.0 - t) * (nu * g).sum(1) - n, g

        qmax = jnp.max(q, axis=1)
        t_lo = jnp.where(qmax > 0, -1.0 / jnp.where(qmax > 0, qmax, 1.0), -jnp.inf)
        c = 1.0 - n / jnp.where(tot > 0, tot, 1.0)
        lo = jnp.maximum(jnp.minimum(0.0, c), t_lo * (1.0 - 1e-12))
        hi = jnp.maximum(0.0, c)

        def bisect(_, lohi):
            lo_, hi_ = lohi
            mid = 0.5 * (lo_ + hi_)
            pos = h(mid)[0] > 0
            return jnp.where(pos, mid, lo_), jnp.where(pos, hi_, mid)

        lo, hi = jax.lax.fori_loop(
            0, 80, bisect, (jax.lax.stop_gradient(lo), jax.lax.stop_gradient(hi))
        )
        t = jax.lax.stop_gradient(0.5 * (lo + hi))
        for _ in range(2):  # exact first and second derivatives through the root
            val, g = h(t)
            dh = -(nu * g).sum(1) - (1.0 - t) * (kinv * nu * nu * g * g).sum(1)
            t = t - val / jnp.where(dh != 0, dh, 1.0)
        g = jnp.where(kinv > 0, 1.0 / (1.0 + q * t[:, None]), 1.0)
        cons = jnp.where(
            kinv > 0, (g - 1.0 - jnp.log(g)) / jnp.where(kinv > 0, kinv, 1.0), 0.0
        ).sum(1)
        return _pois(n, (g * nu).sum(1)) + cons

    def constraint_terms(
        self, x: jnp.ndarray, aux: jnp.ndarray, a: dict[str, Any] | None = None
    ) -> jnp.ndarray:
        a = self.arrays if a is None else a
        c, w = a["constraint"], a["width"]
        gauss = 0.5 * ((x - aux) / w) ** 2
        isp = c == POISSON  # safe inputs so the unselected branch has no NaN gradient
        pois = _pois(jnp.where(isp, aux, 1.0), jnp.where(isp, x, 1.0) * w)
        return jnp.where(c == GAUSS, gauss, jnp.where(c == POISSON, pois, 0.0))

    def nll(
        self, x: jnp.ndarray, obs: dict[str, jnp.ndarray], a: dict[str, Any] | None = None
    ) -> jnp.ndarray:
        """-log L up to ``nll_constant(obs)``; ``a``: the model arrays (pass them as jit
        arguments so large tensors are not baked into compiled programs as constants)."""
        a = self.arrays if a is None else a
        nu = self._yields(x, a)
        return self.data_term(nu, obs, a) + jnp.sum(self.constraint_terms(x, obs["aux"], a))

    def nll_constant(
        self, obs: dict[str, jnp.ndarray], a: dict[str, Any] | None = None, xp: Any = jnp
    ) -> jnp.ndarray:
        """Constant making ``nll + constant`` equal pyhf's ``-logpdf`` (and rabbit's BB terms).
        ``xp=np`` evaluates it in numpy (a handful of elementwise terms: compiling them, or
        dispatching them one by one in JAX, costs more than it saves)."""
        a = self.arrays if a is None else a
        if xp is np:
            a = {k: np.asarray(a[k]) for k in ("constraint", "width", "kinv", "mask")}
            obs = {k: np.asarray(v) for k, v in obs.items()}
        c, w, aux = a["constraint"], a["width"], obs["aux"]
        cons = xp.where(
            c == GAUSS,
            xp.log(w * np.sqrt(2.0 * np.pi)),
            xp.where(c == POISSON, _pois_const(aux, xp), 0.0),
        ).sum()
        kinv = a["kinv"]
        k = xp.where(kinv > 0, obs["bb_aux"], 0.0) if "bb_aux" in obs else mc_counts(kinv, xp)
        bb = xp.where(kinv > 0, _pois_const(k, xp), 0.0)
        bb = bb.sum(1) if bb.ndim == 2 else bb
        return xp.sum(a["mask"] * (_pois_const(obs["data"], xp) + bb)) + cons

    # ------------------------------------------------------------------ Gauss-Newton pieces
    def data_term(self, nu: jnp.ndarray, obs: dict[str, jnp.ndarray], a: dict[str, Any]):
        """The data part of ``nll`` as a function of the yields [nbins, nproc]."""
        r = self.bb_ratio(obs, a)
        if self.static.bb_mode == "full":
            data = self._bb_full(nu, obs["data"], a["kinv"])
        else:
            data = self.bin_loss(nu.sum(1), obs["data"], a["kinv"], r)
        return jnp.sum(a["mask"] * data)

    def value_grad_gn(
        self, x: jnp.ndarray, obs: dict[str, jnp.ndarray], a: dict[str, Any] | None = None
    ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        """(nll, gradient, Jacobian of the totals, Gauss-Newton bin and constraint weights)
        from one evaluation of the yields: what a direct minimiser step needs, traced once
        (the compiled program is about half the size of separate calls)."""
        a = self.arrays if a is None else a
        nu, pull = jax.vjp(lambda y: self._yields(y, a), x)
        fd, dnu = jax.value_and_grad(self.data_term)(nu, obs, a)
        cons = lambda y: jnp.sum(self.constraint_terms(y, obs["aux"], a))  # noqa: E731
        fc, gc = jax.value_and_grad(cons)(x)
        J = self.jacobian_totals(x, a, nu=nu)
        w, c = self.gn_weights(x, obs, a, tot=nu.sum(1))
        return fd + fc, pull(dnu)[0] + gc, J, w, c

    def other_yields(self, x: jnp.ndarray, a: dict[str, Any]) -> Any:
        """``n(x_o)`` [nbins, nproc]: the yields as a function of the parameters that enter
        outside the shape tensor (``static.other_params``), the tensor part fixed at ``x``."""
        s = self.static
        oth = jnp.asarray(s.other_params)
        expT = (
            jnp.exp(self._shape_log(x, a).reshape(s.nbins, s.nproc))
            if s.nT
            else jnp.ones((s.nbins, s.nproc))
        )

        def n_other(xo: jnp.ndarray) -> jnp.ndarray:
            base, lognorm = self._rest(x.at[oth].set(xo), a)
            return base * jnp.exp(lognorm) * expT

        return n_other

    def jacobian_totals(
        self,
        x: jnp.ndarray,
        a: dict[str, Any] | None = None,
        nu: jnp.ndarray | None = None,
        dn_other: jnp.ndarray | None = None,
    ) -> jnp.ndarray:
        """d(bin totals)/dx [nbins, npar], using the linear structure of the shape tensor
        (``nu``: the yields at ``x``, ``dn_other``: d yields / d other parameters
        [nbins, nproc, nother], when the caller has them)."""
        s, a = self.static, (self.arrays if a is None else a)
        nu = self._yields(x, a) if nu is None else nu
        J = jnp.zeros((s.nbins, s.npar))
        if s.nT:
            dphi = self.shape_dphi(x, a)
            if s.shape_sparse:
                w = nu.reshape(-1)[a["sp_rows"]]
                v = a["sp_avg"] + (a["sp_hd"] * dphi[a["sp_cols"]] if s.shape_hd else 0.0)
                JT = jax.ops.segment_sum(
                    w * v, a["sp_bins"] * s.nT + a["sp_cols"], num_segments=s.nbins * s.nT
                ).reshape(s.nbins, s.nT)
            else:  # batched [1 x nproc] @ [nproc x nT] per bin: one pass over the tensor
                shp = (s.nbins, s.nproc, s.nT)
                JT = jnp.einsum("bp,bpk->bk", nu, a["shape_avg"].reshape(shp))
                if s.shape_hd:
                    JH = jnp.einsum("bp,bpk->bk", nu, a["shape_hd"].reshape(shp))
                    JT = JT + JH * dphi[None, :]
            if s.shape_block is not None:  # contiguous parameters: no scatter
                lo = s.shape_block
                J = jnp.concatenate([J[:, :lo], JT, J[:, lo + s.nT :]], axis=1)
            else:
                J = J.at[:, a["shape_param"]].add(JT)
        if s.other_params:
            oth = jnp.asarray(s.other_params)
            dn_other = self.other_jacobian(x, a) if dn_other is None else dn_other
            J = J.at[:, oth].add(dn_other.sum(1))
        return J

    def shape_dphi(self, x: jnp.ndarray, a: dict[str, Any]) -> jnp.ndarray:
        """``phi'(theta)`` per tensor column: ``d log n / d theta = avg + hd * phi'``."""
        s = self.static
        return jax.vmap(jax.grad(lambda t: phi(t, s.shape_interp)))(x[a["shape_param"]])

    def other_jacobian(self, x: jnp.ndarray, a: dict[str, Any]) -> jnp.ndarray:
        """d yields / d (``static.other_params``) [nbins, nproc, nother]: in closed form
        (``rest_derivatives``) where most parameters are "other" (no shape tensor, as a pyhf
        import, or more than ``FORWARD_OTHER_MAX`` of them), where ``jax.jacfwd`` compiled for
        many seconds and ran slowly; forward mode for the few normalisations of a tensor model
        (W-mass-sized, 21 others: 51 ms a call against 70 ms in closed form). Both exact."""
        s = self.static
        if s.nT and len(s.other_params) <= FORWARD_OTHER_MAX:
            oth = jnp.asarray(s.other_params)
            return jax.jacfwd(self.other_yields(x, a))(x[oth])
        return rest_jacobian(self, x, a, self.shape_factor(x, a))

    def shape_factor(self, x: jnp.ndarray, a: dict[str, Any]) -> jnp.ndarray | None:
        """``exp`` of the shape-tensor part of the log yields [nbins, nproc] (None without)."""
        s = self.static
        return jnp.exp(self._shape_log(x, a).reshape(s.nbins, s.nproc)) if s.nT else None

    def host_shape_rows(self, rows: slice, dphi: np.ndarray | None) -> np.ndarray:
        """Rows ``rows`` (flat bin x process) of ``K = avg + hd * phi'`` of the dense shape
        tensor, in numpy (views of the shared tensors; a new array only with ``hd``)."""
        a = self.arrays
        K = np.asarray(a["shape_avg"])[rows]
        if self.static.shape_hd:
            K = K + np.asarray(a["shape_hd"])[rows] * dphi[None, :]
        return K

    def gn_weights(
        self,
        x: jnp.ndarray,
        obs: dict[str, jnp.ndarray],
        a: dict[str, Any] | None = None,
        tot: jnp.ndarray | None = None,
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(per-bin curvature of the data term in its total, per-parameter constraint curvature)."""
        a = self.arrays if a is None else a
        nu = self._yields(x, a).sum(1) if tot is None else tot
        lite = self.static.bb_mode == "lite"
        kinv = a["kinv"] if lite else jnp.zeros_like(nu)
        r = self.bb_ratio(obs, a) if lite else jnp.ones_like(nu)
        d2 = jax.vmap(jax.grad(jax.grad(self.bin_loss)))(nu, obs["data"], kinv, r)
        w = a["mask"] * jnp.maximum(d2, 0.0)
        cons, wid, aux = a["constraint"], a["width"], obs["aux"]
        xs = jnp.where(cons == POISSON, x, 1.0)
        c = jnp.where(cons == GAUSS, 1.0 / wid**2, jnp.where(cons == POISSON, aux / xs**2, 0.0))
        return w, c
