"""The fit: minimisation, covariance, and everything derived from a fitted model.

``Fitter(fit_input).fit()`` returns a ``FitResult``; the other methods (impacts, scans, GOF,
toys, post-fit yields) take that result. Batched refits (impacts, scans, toys) are ``vmap``-ed
calls of the same jitted minimiser with per-fit starting points, frozen-parameter masks and
observations.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.special

from . import device as devmod
from .fitinput import GAUSS, POISSON, FitInput, FitInputError
from .global_impacts import global_impacts
from .hessian import make_hessian, single_blas_thread
from .minimizer import (
    CONVERGED,
    HANDOFF,
    MAXITER,
    STALLED,
    STATUS_TEXT,
    MinimizerOptions,
    make_minimizer,
)
from .model import FitModel, mc_counts, once_compiler_options
from .yield_errors import make_device_variances, make_parts, yield_variances

_log = logging.getLogger(__name__)

# Single fits with a Hessian to follow let direct Gauss-Newton hand off at this EDM when it
# converges only linearly (minimizer.SLOW_EDM_RATIO); exact Newton steps finish (at most
# NEWTON_STEPS, also the limit of the polish after a converged minimiser). W-mass fit, 610
# parameters: 27 GN steps (4.4 s) become 7 + 2 Newton steps.
HANDOFF_EDM = 1e-3
#: a Gauss-Newton run that reaches its iteration limit below this EDM still hands off to the
#: exact Newton steps of the covariance (which then decide convergence)
MAXITER_HANDOFF_EDM = 0.1
NEWTON_STEPS = 4
# On the device path a dense step costs one float64 GEMM and Cholesky on the accelerator
# (20000 parameters: ~3 TFLOP, tens of ms on an H200, 3.2 GB per matrix), so direct steps go
# further than on the host; not yet measured on a GPU (scripts/device_check.sh does).
DEVICE_DENSE_GN_MAX = 32000


class FitError(RuntimeError):
    """The minimiser did not converge or the Hessian is not positive definite."""


def inverse_from_cholesky(L: np.ndarray) -> np.ndarray:
    """``(L L^T)^-1`` from the lower Cholesky factor by LAPACK potri (a third of the flops of
    inverting ``L`` and multiplying; 5000 parameters: ~2 s instead of ~11 s)."""
    inv, info = scipy.linalg.lapack.dpotri(L, lower=1, overwrite_c=1)
    if info != 0:
        raise FitError(f"covariance: LAPACK dpotri failed (info={info})")
    n, b = len(inv), 256
    iu = np.triu_indices(b, 1)
    for s in range(0, n, b):  # mirror the lower triangle in blocks (no n x n temporaries)
        e = min(n, s + b)
        inv[s:e, e:] = inv[e:, s:e].T
        blk = inv[s:e, s:e]
        k = iu if e - s == b else np.triu_indices(e - s, 1)
        blk[k] = blk.T[k]
    return inv


@dataclass
class FitResult:
    x: np.ndarray
    nll: float  # offset -log L (0 for a perfect fit with constraints at their centres)
    nll_full: float  # pyhf convention -logpdf
    edm: float
    niter: int
    ncg: int
    status: str
    free: np.ndarray  # bool mask of floating parameters
    obs: dict[str, Any]
    hessian: np.ndarray | None = None
    cov: np.ndarray | None = None  # [npar, npar], zero rows/cols for frozen parameters
    time_fit: float = 0.0
    time_hessian: float = 0.0
    newton_steps: int = 0  # exact Newton steps taken after the minimiser (see _covariance)
    extra: dict[str, Any] = field(default_factory=dict)
    grad: np.ndarray | None = None  # exact gradient at x (free parameters; 0 for frozen)
    # free parameters at a bound with the gradient pointing out of the allowed range: not part
    # of the Gaussian approximation (zero covariance), named in ``status``
    at_bounds: list[str] = field(default_factory=list)

    @property
    def errors(self) -> np.ndarray:
        if self.cov is None:
            raise FitError("no covariance: the fit was run without the Hessian")
        return np.sqrt(np.clip(np.diag(self.cov), 0, None))

    @property
    def correlation(self) -> np.ndarray:
        e = self.errors
        with np.errstate(invalid="ignore", divide="ignore"):
            c = self.cov / np.outer(e, e)
        return np.nan_to_num(c)


class Fitter:
    """Fits a ``FitInput``; see the module docstring."""

    def __init__(
        self,
        fi: FitInput,
        *,
        bb_mode: str | None = None,
        mode: str = "gn",
        tol_edm: float = 1e-8,
        maxiter: int = 200,
        freeze: tuple[str, ...] | list[str] = (),
        pois: list[str] | None = None,
        hessian_mem: float = 1.0e9,
        device: str = "auto",
        linalg: str = "auto",
        device_memory: float | None = None,
        dense_gn_max: int | None = None,
        covariance: bool = True,
    ) -> None:
        """``device``: ``auto`` (JAX's default backend), ``cpu`` or ``gpu``; ``linalg``:
        ``host`` (numpy/LAPACK), ``device`` (XLA on the device, no host round trips in the
        loop) or ``auto`` (device on an accelerator, host on a CPU; see ``device.py``).
        ``device_memory``: bytes the fit may use on the device (default: what the device
        reports free); a fit estimated larger fails with ``FitError`` before anything is
        placed. ``dense_gn_max``: direct (Cholesky) Gauss-Newton steps up to this many
        parameters, trust-region CG beyond (default 8000 on the host path,
        ``DEVICE_DENSE_GN_MAX`` on the device path). Where the direct steps' dense matrices
        would not fit in ``device_memory`` but trust-region CG with Hessian-vector products
        would, the minimiser takes CG steps (``device_info["steps"]``). ``covariance``:
        whether the fits will compute the covariance (counted in the memory estimate)."""
        self.fi = fi
        try:
            self.placement = devmod.resolve(device, linalg)
        except devmod.DeviceError as e:
            raise FitError(str(e)) from None
        linalg = self.placement.linalg
        if dense_gn_max is None:  # direct Gauss-Newton steps up to this many parameters
            dense_gn_max = (
                MinimizerOptions.dense_gn_max if linalg == "host" else DEVICE_DENSE_GN_MAX
            )
        direct = mode == "gn" and fi.npar <= dense_gn_max
        need = devmod.estimate_bytes(fi, linalg, direct, covariance)
        if direct and linalg == "device":
            avail = devmod.limit_bytes(self.placement, device_memory)
            cg = devmod.estimate_bytes(fi, linalg, False, covariance)
            if avail is not None and need["total"] > avail >= cg["total"]:
                # dense steps do not fit, Hessian-vector products do: trust-region CG
                _log.info(
                    "direct Gauss-Newton steps need %s on %s, %s available: trust-region CG",
                    devmod.gib(need["total"]),
                    self.placement.name,
                    devmod.gib(avail),
                )
                direct, dense_gn_max, need = False, 0, cg
        try:
            devmod.check_memory(self.placement, need, device_memory)
        except devmod.DeviceError as e:
            raise FitError(str(e)) from None
        dev = self.placement.device
        self.model = FitModel(fi, bb_mode=bb_mode, device=dev)
        held = devmod.held_bytes(self.model.arrays)
        self.device_info = {
            "device": self.placement.name,
            "linalg": linalg,
            "model_bytes": held,
            "estimated_bytes": need,
            "steps": "direct" if direct else "trust-region CG",
        }
        devmod.log_placement(self.device_info)
        self.opts = MinimizerOptions(
            mode=mode, tol_edm=tol_edm, maxiter=maxiter, linalg=linalg, dense_gn_max=dense_gn_max
        )
        self._minimize = make_minimizer(self.model, self.opts)
        self._hessian = make_hessian(self.model, hessian_mem, linalg)
        self.names = list(fi.param_names)
        self.pois = list(fi.pois if pois is None else pois)
        for p in self.pois:
            fi.param_index(p)
        free = ~fi.param_fixed.copy()
        for n in freeze:
            free[fi.param_index(n)] = False
        self.free = free
        a = self.model.arrays
        # run a few times per fit: compiled without LLVM optimisation, like the minimiser (a
        # pyhf import's gradient took 3-8 s to compile at the default level, 2-core machine)
        once = once_compiler_options()
        nll_j = jax.jit(self.model.nll, compiler_options=once)
        grad_j = jax.jit(jax.grad(self.model.nll), compiler_options=once)
        vg_j = jax.jit(jax.value_and_grad(self.model.nll), compiler_options=once)
        yields_j = jax.jit(self.model.yields)
        self._nll = lambda x, obs: nll_j(x, obs, a)
        self._grad = lambda x, obs: grad_j(x, obs, a)
        self._nll_grad = lambda x, obs: vg_j(x, obs, a)
        self._const = lambda obs: float(self.model.nll_constant(obs, a, xp=np))
        self._yields = lambda x: yields_j(x, a)
        # batched fits (scans, refit impacts, toys) take CG steps: vmapped matrix-vector
        # products stay in XLA, while direct steps would loop over the batch on the host
        # (21-point mW scan, 604 parameters: 18 s instead of 39 s)
        batched = make_minimizer(
            self.model,
            MinimizerOptions(
                mode=mode, tol_edm=tol_edm, maxiter=maxiter, dense_gn_max=0, linalg=linalg
            ),
        ).raw
        self._vmin = jax.jit(jax.vmap(batched, in_axes=(0, None, 0, None)))
        self._vmin_obs = jax.jit(jax.vmap(batched, in_axes=(0, 0, 0, None)))
        self._parts: Any = None  # yield_errors.make_parts, compiled on first use
        self._dev_var: Any = None  # yield_errors.make_device_variances (device path)

    # ------------------------------------------------------------------ observations
    @property
    def obs(self) -> dict[str, jnp.ndarray]:
        return self.model.obs

    def asimov_obs(self, x: np.ndarray | None = None) -> dict[str, jnp.ndarray]:
        """Expected data at ``x`` (default: the initial values) with matching auxiliary data."""
        x = self.model.x0 if x is None else np.asarray(x)
        data = np.asarray(self._yields(jnp.asarray(x))).sum(1) * self.fi.unmasked_bins()
        return {"data": jnp.asarray(data), "aux": jnp.asarray(self._aux_at(x))}

    def _aux_at(self, x: np.ndarray) -> np.ndarray:
        c = self.fi.param_constraint
        aux = np.asarray(self.fi.param_center, np.float64).copy()
        aux[c == GAUSS] = x[c == GAUSS]
        aux[c == POISSON] = (x * self.fi.param_width)[c == POISSON]
        return aux

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        obs: dict[str, jnp.ndarray] | None = None,
        x0: np.ndarray | None = None,
        free: np.ndarray | None = None,
        hessian: bool = True,
    ) -> FitResult:
        """Minimise; with ``hessian`` also the exact Hessian, covariance and an exact EDM."""
        obs = self.obs if obs is None else obs
        x0 = self.model.x0 if x0 is None else np.asarray(x0, np.float64)
        free = self.free if free is None else np.asarray(free, bool)
        fmask = jnp.asarray(free.astype(np.float64))
        # With the Hessian to come, slow (linear) Gauss-Newton convergence hands off to exact
        # Newton steps in _covariance; if those fail, Gauss-Newton finishes the job.
        res, handed_off = self._minimize_to_result(x0, obs, fmask, free, HANDOFF_EDM * hessian)
        if not hessian:
            res.at_bounds = self._at_bounds(res.x, res.grad, free)
            res.status = _status_text(res.at_bounds)
        if hessian:
            x_gn = res.x.copy()
            try:
                self._covariance(res)
            except FitError:
                if not handed_off:
                    raise
                again, _ = self._minimize_to_result(x_gn, obs, fmask, free, 0.0)
                again.niter += res.niter
                again.time_fit += res.time_fit
                self._covariance(again)
                return again
        return res

    def _minimize_to_result(
        self,
        x0: np.ndarray,
        obs: dict[str, jnp.ndarray],
        fmask: jnp.ndarray,
        free: np.ndarray,
        handoff: float,
    ) -> tuple[FitResult, bool]:
        """Run the minimiser; (result, whether it handed off before full convergence)."""
        t0 = time.perf_counter()
        r = self._minimize(jnp.asarray(x0), obs, fmask, handoff)
        r = {k: np.asarray(v) for k, v in r.items()}
        t1 = time.perf_counter()
        status = int(r["status"])
        # a stalled minimiser (no decrease found), or one at its iteration limit close to the
        # minimum, is judged by the exact EDM (after exact Newton steps) when the Hessian
        # follows (handoff > 0), and is not converged otherwise. At 5x the default W-mass
        # statistics Gauss-Newton crept along a flat valley (mu against the non-prompt yield)
        # and stopped at 200 iterations with edm 1.2e-3 to 1.7e-3, just above the hand-off
        if status == MAXITER and handoff > 0 and float(r["edm"]) < MAXITER_HANDOFF_EDM:
            status = HANDOFF
        if status not in (CONVERGED, HANDOFF) and not (status == STALLED and handoff > 0):
            raise FitError(
                f"fit did not converge: {STATUS_TEXT[status]} after {int(r['niter'])} "
                f"iterations (edm {float(r['edm']):.3g}, |grad|max {np.abs(r['grad']).max():.3g} "
                f"for parameter {self.names[int(np.argmax(np.abs(r['grad'])))]!r})"
            )
        res = FitResult(
            x=r["x"],
            nll=float(r["nll"]),
            nll_full=float(r["nll"] + self._const(obs)),
            edm=float(r["edm"]),
            niter=int(r["niter"]),
            ncg=int(r["ncg"]),
            status=STATUS_TEXT[CONVERGED],
            free=free,
            obs=obs,
            time_fit=t1 - t0,
            grad=r["grad"],
            extra={"device": dict(self.device_info)},
        )
        return res, status in (HANDOFF, STALLED)

    def _at_bounds(self, x: np.ndarray, g: np.ndarray | None, free: np.ndarray) -> list[str]:
        """Free parameters at a bound that the gradient pushes against (an active bound)."""
        g = np.asarray(self._grad(jnp.asarray(x), self.obs) if g is None else g)
        act = free & (((x <= self.model.lower) & (g > 0)) | ((x >= self.model.upper) & (g < 0)))
        return [self.names[i] for i in np.nonzero(act)[0]]

    def _covariance(self, res: FitResult) -> None:
        """Exact Hessian and covariance at ``res.x``, after up to ``NEWTON_STEPS`` exact Newton steps
        while the exact EDM is above tolerance (counted in ``res.newton_steps``)."""
        if self.placement.linalg == "device":
            return self._covariance_device(res)
        t0, c0 = time.perf_counter(), time.process_time()
        # small factorisations on one BLAS thread (threads lose below ~2500 parameters: a
        # 62-parameter dpotri took 0.2 s on two threads of the loaded 2-core machine)
        with single_blas_thread(self.model.static.npar < 2500):
            self._covariance_steps(res)
        res.time_hessian = time.perf_counter() - t0
        res.extra["cpu_hessian"] = time.process_time() - c0

    def _gradient_off_bounds(self, res: FitResult) -> tuple[np.ndarray, np.ndarray]:
        """The gradient at ``res.x`` and the free parameters not pinned at an active bound
        (those are named in ``res.at_bounds``: not part of the Gaussian approximation)."""
        g = res.grad if res.grad is not None else self._grad(jnp.asarray(res.x), res.obs)
        g = np.asarray(g)
        x = res.x
        active = ((x <= self.model.lower) & (g > 0)) | ((x >= self.model.upper) & (g < 0))
        res.at_bounds = [self.names[i] for i in np.nonzero(res.free & active)[0]]
        return g, np.nonzero(res.free & ~active)[0]

    def _not_positive_definite(self, Hf: np.ndarray, idx: np.ndarray) -> FitError:
        """The error for a Hessian that is not positive definite, naming the parameter that
        dominates its lowest eigenvector."""
        w, v = np.linalg.eigh(Hf)
        k = int(np.argmin(w))
        worst = self.names[idx[int(np.argmax(np.abs(v[:, k])))]]
        return FitError(
            f"Hessian at the minimum is not positive definite (eigenvalue {w[k]:.3g}, "
            f"dominated by parameter {worst!r})"
        )

    def _edm_error(self, res: FitResult, why: str) -> FitError:
        """The error for an exact EDM that stays above tolerance: after the Newton steps, or
        (``why="newton"``) because a Newton step does not decrease the NLL."""
        msg = f"exact EDM {res.edm:.3g} above tolerance {self.opts.tol_edm:.3g}"
        if why == "newton":
            return FitError(
                f"{msg} and the Newton step does not decrease the NLL (parameters at bounds: "
                f"{', '.join(res.at_bounds) or 'none'})"
            )
        return FitError(msg + (f" after {NEWTON_STEPS} Newton steps" if NEWTON_STEPS else ""))

    def _covariance_steps(self, res: FitResult) -> None:
        for step in range(NEWTON_STEPS + 1):
            H = self._hessian(jnp.asarray(res.x), res.obs)
            # parameters at an active bound are not part of the Gaussian approximation: the
            # EDM, the Newton step and the covariance are over the others
            g, idx = self._gradient_off_bounds(res)
            all_free = len(idx) == len(H)
            Hf = H if all_free else H[np.ix_(idx, idx)]
            try:
                L = scipy.linalg.cholesky(Hf, lower=True)
            except np.linalg.LinAlgError:
                raise self._not_positive_definite(Hf, idx) from None
            gi = scipy.linalg.solve_triangular(L, g[idx], lower=True)
            res.edm = 0.5 * float(gi @ gi)
            res.newton_steps = step
            if res.edm <= self.opts.tol_edm:
                break
            if step == NEWTON_STEPS:
                raise self._edm_error(res, "")
            # Newton step with the exact Hessian (the minimiser's EDM was Gauss-Newton based)
            x = res.x.copy()
            x[idx] -= scipy.linalg.solve_triangular(L, gi, lower=True, trans="T")
            x = np.clip(x, self.model.lower, self.model.upper)
            nll, grad = self._nll_grad(jnp.asarray(x), res.obs)  # one program for both
            nll = float(nll)
            if not nll <= res.nll + 1e-12 * max(1.0, abs(res.nll)):
                raise self._edm_error(res, "newton")
            res.x, res.nll, res.grad = x, nll, np.asarray(grad) * res.free
            res.nll_full = float(nll + self._const(res.obs))
        cov = inverse_from_cholesky(L)  # L is overwritten
        if not all_free:
            full = np.zeros_like(H)
            full[np.ix_(idx, idx)] = cov
            cov = full
        res.hessian, res.cov = H, cov
        res.status = _status_text(res.at_bounds)

    def _covariance_device(self, res: FitResult) -> None:
        """``_covariance`` with the Hessian, its Cholesky factor, the Newton steps and the
        inverse as XLA operations on the fit's device; only scalars (EDM, NLL, the
        positive-definiteness flag) come to the host until the final matrices."""
        t0, c0 = time.perf_counter(), time.process_time()
        for step in range(NEWTON_STEPS + 1):
            H = self._hessian(jnp.asarray(res.x), res.obs)
            g, idx = self._gradient_off_bounds(res)
            all_free = len(idx) == H.shape[0]
            Hf = H if all_free else _take2(H, jnp.asarray(idx))
            L, ok, gi, edm = _dev_factor(Hf, jnp.asarray(g[idx]))
            if not bool(ok):
                raise self._not_positive_definite(np.asarray(Hf), idx)
            res.edm = float(edm)
            res.newton_steps = step
            if res.edm <= self.opts.tol_edm:
                break
            if step == NEWTON_STEPS:
                raise self._edm_error(res, "")
            x = res.x.copy()
            x[idx] -= np.asarray(_dev_newton(L, gi))
            x = np.clip(x, self.model.lower, self.model.upper)
            nll = float(self._nll(jnp.asarray(x), res.obs))
            if not nll <= res.nll + 1e-12 * max(1.0, abs(res.nll)):
                raise self._edm_error(res, "newton")
            res.x, res.nll, res.grad = x, nll, None
            res.nll_full = float(nll + self._const(res.obs))
        cov = _dev_inverse(L)
        if not all_free:
            cov = _embed(cov, jnp.asarray(idx), H.shape[0])
        res.hessian, res.cov = np.asarray(H), np.asarray(cov)
        res.status = _status_text(res.at_bounds)
        res.time_hessian = time.perf_counter() - t0
        res.extra["cpu_hessian"] = time.process_time() - c0

    # ------------------------------------------------------------------ batched refits
    def batch_fit(
        self,
        x0: np.ndarray,
        free: np.ndarray,
        obs: dict[str, jnp.ndarray] | None = None,
        batch: int = 64,
    ) -> dict[str, np.ndarray]:
        """Fit many starting points/frozen masks (and optionally many observations) with vmap."""
        n = len(x0)
        batched_obs = obs is not None and obs["data"].ndim == 2
        fn = self._vmin_obs if batched_obs else self._vmin
        outs = []
        for s in range(0, n, batch):
            e = min(n, s + batch)
            pad = batch - (e - s) if n > batch else 0
            sel = np.r_[np.arange(s, e), np.full(pad, e - 1)].astype(int)
            o = obs if obs is not None else self.obs
            if batched_obs:
                o = {k: v[sel] for k, v in obs.items()}
            r = fn(
                jnp.asarray(x0[sel]),
                o,
                jnp.asarray(free[sel].astype(np.float64)),
                self.model.arrays,
            )
            outs.append({k: np.asarray(v)[: e - s] for k, v in r.items()})
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    # ------------------------------------------------------------------ impacts
    def impacts_covariance(self, res: FitResult) -> dict[str, Any]:
        """Impacts from the covariance: cov(poi, k)/sigma_k per parameter, and per group
        sqrt(C_pG C_GG^-1 C_Gp); 'stat' is the POI uncertainty with all nuisances fixed."""
        cov = res.cov
        e = res.errors
        pi = [self.fi.param_index(p) for p in self.pois]
        with np.errstate(invalid="ignore", divide="ignore"):
            per = np.nan_to_num(cov[pi, :] / e[None, :])
        groups = dict(self.fi.groups)
        grouped = np.zeros((len(pi), len(groups)))
        for j, (_, members) in enumerate(groups.items()):
            gi = [self.fi.param_index(m) for m in members if res.free[self.fi.param_index(m)]]
            if not gi:
                continue
            Cgg = cov[np.ix_(gi, gi)]
            Cpg = cov[np.ix_(pi, gi)]
            grouped[:, j] = np.sqrt(
                np.clip(np.einsum("ij,ij->i", Cpg @ np.linalg.pinv(Cgg), Cpg), 0, None)
            )
        H = res.hessian
        free_poi = [i for i in pi if res.free[i]]
        stat = np.zeros(len(pi))
        if free_poi:
            covp = np.linalg.inv(H[np.ix_(free_poi, free_poi)])
            for k, i in enumerate(pi):
                if i in free_poi:
                    stat[k] = np.sqrt(covp[free_poi.index(i), free_poi.index(i)])
        return {
            "pois": self.pois,
            "params": self.names,
            "impacts": per,
            "groups": list(groups),
            "grouped": grouped,
            "stat": stat,
            "total": e[pi],
        }

    def impacts_refit(
        self, res: FitResult, params: list[str] | None = None, batch: int = 64
    ) -> dict[str, Any]:
        """Impacts by refitting with each parameter fixed at its post-fit value +- sigma."""
        names = params or [
            n for i, n in enumerate(self.names) if res.free[i] and n not in self.pois
        ]
        idx = np.array([self.fi.param_index(n) for n in names], int)
        e = res.errors
        x0 = np.repeat(res.x[None, :], 2 * len(idx), axis=0)
        free = np.repeat(res.free[None, :], 2 * len(idx), axis=0)
        rows = np.arange(len(idx))
        x0[2 * rows, idx] += e[idx]
        x0[2 * rows + 1, idx] -= e[idx]
        free[2 * rows, idx] = False
        free[2 * rows + 1, idx] = False
        out = self.batch_fit(x0, free, res.obs, batch)
        bad = np.nonzero(out["status"] != CONVERGED)[0]
        if len(bad):
            raise FitError(f"refit for impact of {names[bad[0] // 2]!r} did not converge")
        pi = [self.fi.param_index(p) for p in self.pois]
        shift = out["x"][:, pi] - res.x[pi][None, :]
        return {
            "pois": self.pois,
            "params": names,
            "up": shift[0::2].T,
            "down": shift[1::2].T,
        }

    def impacts_global(self, res: FitResult) -> dict[str, Any]:
        """Global impacts (rabbit's definition, ``global_impacts``): d poi / d observable times
        the observable's uncertainty, per constrained parameter, group, data and MC counts."""
        if res.cov is None:
            raise FitError("global impacts need the covariance: run the fit with the Hessian")
        out = global_impacts(
            self.model,
            res.x,
            res.cov,
            res.free,
            res.obs,
            [self.fi.param_index(p) for p in self.pois],
            self.names,
            dict(self.fi.groups),
        )
        return {"pois": self.pois, **out}

    # ------------------------------------------------------------------ GOF and scans
    def gof_saturated(self, res: FitResult) -> dict[str, float]:
        """Saturated-model test: q = 2 (NLL - NLL_sat), ndf = bins - free unconstrained params."""
        q = 2.0 * res.nll  # the offset NLL is 0 for the saturated model
        c = self.fi.param_constraint
        nfree_unc = int(np.sum(res.free & (c == 0)))
        ndf = int(self.fi.unmasked_bins().sum()) - nfree_unc
        return {
            "q": q,
            "ndf": ndf,
            "p_value": float(scipy.special.chdtrc(ndf, q)) if ndf > 0 else np.nan,
        }

    def scan(
        self, res: FitResult, names: list[str], grid: np.ndarray, batch: int = 64
    ) -> np.ndarray:
        """2 Delta NLL at each row of ``grid`` [npoints, len(names)] (1D or 2D scans)."""
        grid = np.atleast_2d(np.asarray(grid, np.float64))
        if grid.shape[1] != len(names):
            grid = grid.T
        idx = [self.fi.param_index(n) for n in names]
        x0 = np.repeat(res.x[None, :], len(grid), axis=0)
        free = np.repeat(res.free[None, :], len(grid), axis=0)
        for j, i in enumerate(idx):
            x0[:, i] = grid[:, j]
            free[:, i] = False
        out = self.batch_fit(x0, free, res.obs, batch)
        bad = np.nonzero(out["status"] != CONVERGED)[0]
        if len(bad):
            raise FitError(f"scan point {grid[bad[0]]} of {names} did not converge")
        return 2.0 * (out["nll"] - res.nll)

    # ------------------------------------------------------------------ toys
    def toys(
        self,
        ntoys: int,
        x_true: np.ndarray | None = None,
        seed: int = 0,
        data: bool = True,
        constraints: bool = True,
        batch: int = 100,
        errors: bool = True,
        mcstat: bool = True,
    ) -> dict[str, np.ndarray]:
        """Pseudo-experiments at ``x_true``: Poisson data and/or randomised auxiliary data
        (frequentist constraint randomisation), fitted in vmapped batches. With ``mcstat``
        (and Barlow-Beeston lite in the model) the MC-statistics auxiliary counts are drawn
        too, k_obs ~ Poisson(k), as the templates would fluctuate with another MC sample;
        without it toys ignore the template uncertainty and under-cover where it matters.
        BB full keeps the nominal counts (see ``FitModel.bb_ratio``). With ``errors`` the
        per-toy POI uncertainties come from each toy's exact Hessian (dense; small models)."""
        x_true = self.model.x0 if x_true is None else np.asarray(x_true)
        rng = np.random.default_rng(seed)
        asi = self.asimov_obs(x_true)
        mu = np.asarray(asi["data"])
        d = (
            rng.poisson(np.broadcast_to(mu, (ntoys, len(mu)))).astype(float)
            if data
            else np.tile(mu, (ntoys, 1))
        )
        aux = np.tile(np.asarray(asi["aux"]), (ntoys, 1))
        if constraints:
            c, w = self.fi.param_constraint, self.fi.param_width
            g = c == GAUSS
            aux[:, g] = rng.normal(x_true[g], w[g], size=(ntoys, int(g.sum())))
            p = c == POISSON
            aux[:, p] = rng.poisson((x_true * w)[p], size=(ntoys, int(p.sum())))
        obs = {"data": jnp.asarray(d), "aux": jnp.asarray(aux)}
        k = mc_counts(np.asarray(self.model.arrays["kinv"]), np)
        if mcstat and self.model.static.bb_mode == "lite" and np.any(k > 0):
            obs["bb_aux"] = jnp.asarray(rng.poisson(k, size=(ntoys, *k.shape)).astype(float))
        x0 = np.tile(self.model.x0, (ntoys, 1))
        free = np.tile(self.free, (ntoys, 1))
        out = self.batch_fit(x0, free, obs, batch)
        out["data"], out["aux"] = d, aux
        if "bb_aux" in obs:
            out["bb_aux"] = np.asarray(obs["bb_aux"])
        if errors:
            pi = [self.fi.param_index(p) for p in self.pois]
            fidx = np.nonzero(self.free)[0]
            hfn_a = jax.jit(jax.vmap(jax.hessian(self.model.nll), in_axes=(0, 0, None)))
            hfn = lambda x, o: hfn_a(x, o, self.model.arrays)  # noqa: E731
            errs = []
            for s in range(0, ntoys, batch):
                sl = slice(s, min(ntoys, s + batch))
                H = np.asarray(hfn(jnp.asarray(out["x"][sl]), {k: v[sl] for k, v in obs.items()}))
                Hf = H[:, fidx][:, :, fidx]
                C = np.linalg.inv(Hf)
                pos = [int(np.nonzero(fidx == i)[0][0]) for i in pi]
                errs.append(np.sqrt(np.stack([C[:, j, j] for j in pos], axis=1)))
            out["poi_errors"] = np.concatenate(errs)
        return out

    # ------------------------------------------------------------------ yields
    def _yield_parts(self) -> Any:
        if self._parts is None:
            self._parts = make_parts(self.model)
        return self._parts

    def postfit_yields(
        self, res: FitResult | None, data: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Yields per bin and process, and bin totals, with uncertainties propagated through
        the covariance (``sigma^2 = diag(J C J^T)``, see ``yield_errors``; on the device with
        the device path). Post-fit BB-lite yields include the profiled MC-statistics factor of
        each bin, as the likelihood does. ``data``: the counts the fit was made to (default:
        the fit input's data). ``res=None`` gives pre-fit yields with the prior widths of the
        constrained parameters."""
        counts = None if res is None else np.asarray(self.obs["data"] if data is None else data)
        if self.placement.linalg == "device":
            if self._dev_var is None:
                self._dev_var = make_device_variances(self.model, self._yield_parts()) or False
            if self._dev_var:
                return self._yields_dict(res, self._dev_var, counts)
        if res is None:
            nu, var, var_tot = yield_variances(
                self.model,
                self.model.x0,
                sigma=self._prior_sigma() * self.free,
                parts=self._yield_parts(),
            )
        else:
            # the profiled MC-statistics factors (BB lite) are part of the post-fit prediction
            nu, var, var_tot = yield_variances(
                self.model,
                res.x,
                cov=res.cov,
                parts=self._yield_parts(),
                data=counts,
            )
        return {
            "values": nu,
            "errors": np.sqrt(var),
            "total": nu.sum(1),
            "total_errors": np.sqrt(var_tot),
        }

    def _yields_dict(
        self, res: FitResult | None, variances: Any, counts: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        if res is None:
            nu, var, var_tot = variances(self.model.x0, sigma=self._prior_sigma() * self.free)
        else:
            nu, var, var_tot = variances(res.x, cov=res.cov, data=counts)
        return {
            "values": nu,
            "errors": np.sqrt(var),
            "total": nu.sum(1),
            "total_errors": np.sqrt(var_tot),
        }

    def _prior_sigma(self) -> np.ndarray:
        """Pre-fit widths: Gaussian widths, 1/sqrt(tau) for Poisson constraints, 0 else."""
        c = self.fi.param_constraint
        sig = np.where(c == GAUSS, self.fi.param_width, 0.0)
        with np.errstate(divide="ignore"):
            return np.where(c == POISSON, 1.0 / np.sqrt(self.fi.param_width), sig)


@jax.jit
def _take2(H: jnp.ndarray, idx: jnp.ndarray) -> jnp.ndarray:
    return H[idx[:, None], idx[None, :]]


@partial(jax.jit, static_argnums=2)
def _embed(C: jnp.ndarray, idx: jnp.ndarray, n: int) -> jnp.ndarray:
    return jnp.zeros((n, n), C.dtype).at[idx[:, None], idx[None, :]].set(C)


@jax.jit
def _dev_factor(H: jnp.ndarray, g: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
    """(lower Cholesky factor, positive definite?, L^-1 g, exact EDM g.H^-1.g / 2)."""
    L = jax.lax.linalg.cholesky(H, symmetrize_input=False)
    ok = jnp.all(jnp.isfinite(jnp.diagonal(L)))
    gi = jax.lax.linalg.triangular_solve(L, g[:, None], left_side=True, lower=True)[:, 0]
    return L, ok, gi, 0.5 * (gi @ gi)


@jax.jit
def _dev_newton(L: jnp.ndarray, gi: jnp.ndarray) -> jnp.ndarray:
    """The Newton step H^-1 g = L^-T (L^-1 g)."""
    y = jax.lax.linalg.triangular_solve(
        L, gi[:, None], left_side=True, lower=True, transpose_a=True
    )
    return y[:, 0]


@jax.jit
def _dev_inverse(L: jnp.ndarray) -> jnp.ndarray:
    """``(L L^T)^-1 = L^-T L^-1`` (XLA has no potri: one triangular solve and one product)."""
    eye = jnp.eye(L.shape[0], dtype=L.dtype)
    Li = jax.lax.linalg.triangular_solve(L, eye, left_side=True, lower=True)
    C = Li.T @ Li
    return 0.5 * (C + C.T)


def _status_text(at_bounds: list[str]) -> str:
    """'converged', or 'converged with parameters at bounds: a, b' (named)."""
    if not at_bounds:
        return STATUS_TEXT[CONVERGED]
    return f"{STATUS_TEXT[CONVERGED]} with parameters at bounds: {', '.join(at_bounds)}"


def check_names(fi: FitInput, names: list[str]) -> None:
    """Raise a clear error for unknown parameter names (CLI options)."""
    for n in names:
        if n not in fi.param_names:
            raise FitInputError(f"unknown parameter {n!r}")


def fit(fi: FitInput, covariance: bool = True, **kwargs: Any) -> FitResult:
    """One-call API: ``Fitter(fi, **kwargs).fit(hessian=covariance)``."""
    return Fitter(fi, **kwargs).fit(hessian=covariance)
