"""Trust-region Newton minimiser with preconditioned Steihaug-CG, written in JAX.

The whole loop is one jit-compiled ``lax.while_loop``, so it also runs under ``jax.vmap`` (toys,
scans and refit impacts are batched fits). Curvature enters only through matrix-vector products:

* ``exact``: Hessian-vector products, forward-over-reverse (``jax.linearize`` of the gradient at
  each outer iterate, so every CG step costs one tangent pass);
* ``gn``: the Gauss-Newton (Fisher) operator ``J^T W J + C`` with ``J`` the Jacobian of the bin
  totals, built once per outer iterate from the linear structure of the systematics tensor. A CG
  step then costs two passes over ``J`` [nbins, npar] instead of over the tensor. The gradient is
  always exact, so the minimum is exact; only the convergence path differs. Not available with
  BB "full" (its data term is not a function of the bin totals).

CG is preconditioned with the Gauss-Newton diagonal (Jacobi). Convergence: the estimated
distance to the minimum ``edm = -m(p)`` of an interior CG step below ``tol_edm``. Bounds are
handled by an active set plus clipping of the trial step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from .model import FitModel

CONVERGED, MAXITER, NONFINITE = 0, 1, 2
STATUS_TEXT = {
    CONVERGED: "converged",
    MAXITER: "maximum iterations reached",
    NONFINITE: "non-finite NLL",
}


@dataclass(frozen=True)
class MinimizerOptions:
    mode: str = "gn"  # "gn" or "exact"
    tol_edm: float = 1e-8
    maxiter: int = 200
    maxcg: int = 1000
    eta: float = 1e-4  # minimum ratio actual/predicted reduction to accept a step
    dense_gn_max: int = 0  # form the Gauss-Newton matrix explicitly up to this many params
    delta0: float = 10.0  # initial trust radius (scaled units) per sqrt(free parameter)


def _boundary_tau(z, d, delta):
    """tau >= 0 with ||z + tau d|| = delta."""
    a = d @ d
    b = 2.0 * (z @ d)
    c = z @ z - delta**2
    disc = jnp.sqrt(jnp.maximum(b * b - 4 * a * c, 0.0))
    return (-b + disc) / (2 * jnp.where(a > 0, a, 1.0))


def steihaug(hs, g, delta, tol, maxcg):
    """Steihaug-Toint CG on the (scaled) model g.z + z.Hz/2 within ||z|| <= delta.

    Returns (z, r, interior, ncg) with r = g + H z (so the model value is (g.z + z.r)/2)."""

    def cond(st):
        return (~st["done"]) & (st["j"] < maxcg)

    def body(st):
        z, r, d = st["z"], st["r"], st["d"]
        Hd = hs(d)
        dHd = d @ Hd
        rr = r @ r
        alpha = rr / jnp.where(dHd > 0, dHd, 1.0)
        z_new = z + alpha * d
        neg = dHd <= 0
        out = jnp.sqrt(z_new @ z_new) >= delta
        tau = _boundary_tau(z, d, delta)
        hit = neg | out
        step = jnp.where(hit, tau, alpha)
        z_n = z + step * d
        r_n = r + step * Hd
        small = jnp.sqrt(r_n @ r_n) < tol
        beta = (r_n @ r_n) / jnp.where(rr > 0, rr, 1.0)
        return {
            "z": z_n,
            "r": r_n,
            "d": -r_n + beta * d,
            "j": st["j"] + 1,
            "done": hit | small,
            "interior": ~hit,
        }

    st0 = {
        "z": jnp.zeros_like(g),
        "r": g,
        "d": -g,
        "j": jnp.asarray(0),
        "done": jnp.sqrt(g @ g) <= tol,
        "interior": jnp.asarray(True),
    }
    st = jax.lax.while_loop(cond, body, st0)
    return st["z"], st["r"], st["interior"], st["j"]


def make_minimizer(model: FitModel, opts: MinimizerOptions = MinimizerOptions()) -> Any:
    """A ``minimize(x0, obs, free) -> dict`` for this model (vmap-able; jit-compiled with the
    model arrays as arguments, not constants).

    ``free`` is a float mask (1 = floating, 0 = frozen at its value in ``x0``)."""
    if opts.mode not in ("gn", "exact"):
        raise ValueError(f"minimizer mode must be 'gn' or 'exact', got {opts.mode!r}")
    mode = opts.mode
    if mode == "gn" and model.static.bb_mode == "full":
        mode = "exact"
    lower = jnp.asarray(model.lower)
    upper = jnp.asarray(model.upper)
    bounded = bool(jnp.any(jnp.isfinite(lower)) | jnp.any(jnp.isfinite(upper)))

    def minimize_a(x0, obs, free, arrays):
        fun = lambda x: model.nll(x, obs, arrays)  # noqa: E731
        vg = jax.value_and_grad(fun)
        grad = jax.grad(fun)

        def operator(x, g):
            at_lo = (x <= lower) & (g > 0)
            at_hi = (x >= upper) & (g < 0)
            act = free * (~at_lo & ~at_hi)
            J = model.jacobian_totals(x, arrays)
            w, c = model.gn_weights(x, obs, arrays)
            diag = (w[:, None] * J * J).sum(0) + c
            scale = act / jnp.sqrt(jnp.where(diag > 0, diag, 1.0))
            if mode == "gn":
                if model.static.npar <= opts.dense_gn_max:
                    # one GEMM per outer iterate, then each CG step is an npar^2 product
                    G = (J.T * w[None, :]) @ J + jnp.diag(c)

                    def hv(v):
                        return G @ v
                else:
                    JTr = J.T.copy()  # row-major for both matrix-vector products

                    def hv(v):
                        return JTr @ (w * (J @ v)) + c * v
            else:
                hv = jax.linearize(grad, x)[1]

            def hs(v):
                return scale * hv(scale * v)

            return hs, scale

        def cond(st):
            return (~st["done"]) & (st["it"] < opts.maxiter)

        def body(st):
            x, f, g, delta = st["x"], st["f"], st["g"], st["delta"]
            hs, scale = operator(x, g)
            gs = scale * g
            gnorm = jnp.sqrt(gs @ gs)
            tol = jnp.minimum(0.5, jnp.sqrt(gnorm)) * gnorm
            z, r, interior, ncg = steihaug(hs, gs, delta, tol, opts.maxcg)
            pred = -0.5 * (gs @ z + z @ r)  # predicted reduction (>= 0)
            p = scale * z
            xt = jnp.clip(x + p, lower, upper)
            if bounded:
                pe = xt - x
                zt = jnp.where(scale > 0, pe / jnp.where(scale > 0, scale, 1.0), 0.0)
                pred = jnp.where(jnp.any(xt != x + p), -(gs @ zt + 0.5 * zt @ hs(zt)), pred)
            ft, gt = vg(xt)
            ok = jnp.isfinite(ft) & jnp.all(jnp.isfinite(gt))
            ared = f - ft
            rho = ared / jnp.where(pred > 0, pred, 1e-300)
            accept = ok & ((rho > opts.eta) | ((pred <= 1e-14 * jnp.abs(f)) & (ared >= 0)))
            znorm = jnp.sqrt(z @ z)
            delta_n = jnp.where(~ok | (rho < 0.25), 0.25 * jnp.maximum(znorm, 1e-12 * delta), delta)
            delta_n = jnp.where(
                ok & (rho > 0.75) & ~interior, jnp.minimum(2.0 * delta_n, 1e8), delta_n
            )
            conv = interior & (pred < opts.tol_edm)
            return {
                "x": jnp.where(accept, xt, x),
                "f": jnp.where(accept, ft, f),
                "g": jnp.where(accept, gt, g),
                "delta": delta_n,
                "it": st["it"] + 1,
                "ncg": st["ncg"] + ncg,
                "edm": jnp.where(interior, pred, st["edm"]),
                "done": conv | (delta_n < 1e-14),
                "conv": conv,
            }

        x0 = jnp.clip(x0, lower, upper)
        f0, g0 = vg(x0)
        nfree = jnp.sum(free)
        st0 = {
            "x": x0,
            "f": f0,
            "g": g0,
            "delta": opts.delta0 * (jnp.sqrt(nfree) + 1.0),
            "it": jnp.asarray(0),
            "ncg": jnp.asarray(0),
            "edm": jnp.asarray(jnp.inf),
            "done": ~jnp.isfinite(f0),
            "conv": jnp.asarray(False),
        }
        st = jax.lax.while_loop(cond, body, st0)
        status = jnp.where(
            st["conv"], CONVERGED, jnp.where(jnp.isfinite(st["f"]), MAXITER, NONFINITE)
        )
        return {
            "x": st["x"],
            "nll": st["f"],
            "grad": st["g"] * free,
            "edm": st["edm"],
            "niter": st["it"],
            "ncg": st["ncg"],
            "status": status,
        }

    jitted = jax.jit(minimize_a)

    def minimize(x0, obs, free):
        return jitted(x0, obs, free, model.arrays)

    minimize.raw = minimize_a  # for vmap with the arrays unbatched
    return minimize
