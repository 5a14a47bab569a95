"""Simultaneous fits of pass and fail mass spectra, every bin in one batched JAX minimisation.

Model of a bin (m: pair mass, binned; the fit range is a slice of the histogram range):
  pass: N eps     (K(delta, sigma) T_pass)(m) + B_p e_p(m)
  fail: N (1-eps) (K(delta, sigma) T_fail)(m) + B_f e_f(m)
T: the simulation template of the bin (pass or fail spectrum, normalised over the histogram
range, so eps is the efficiency of the signal over that range). K: the template convolved with a
Gaussian of mean delta and width sigma (data/simulation scale and resolution differences);
every template bin is spread uniformly over its width, so the kernel is exact and smooth in
(delta, sigma) and is the identity at delta = 0, sigma -> 0. e: falling exponentials
exp(-lambda m), normalised over the fit range. Parameters (eps, N, b_p, b_f, lambda_p,
lambda_f, delta, log sigma) with B = b^2: a background is never negative, and where the data
would want it negative the minimum sits at b = 0 with positive curvature (a regular minimum, no
boundary). eps and N are linear parameters (symmetric Hessian errors); the
background slopes carry a weak Gaussian constraint (0.02 +- 0.1 /GeV) that only matters when a
spectrum has no background to speak of (keeps the Hessian regular there).

The minimiser is a damped Newton (Levenberg-Marquardt) iteration with the exact Hessian,
written for one bin and vmapped over all bins inside one jitted function (float64). A fit is
flagged when it did not converge (EDM), its Hessian is not positive definite, eps is outside
[0, 1] by more than its error, or the chi2 probability (Poisson deviance) is below a threshold.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm
from scipy import stats

from wremnants_dask.efficiency import shapes
from wremnants_dask.efficiency.bounds import BOUND_DNLL
from wremnants_dask.utils.jax_runtime import configure_jax

configure_jax()

PARAMS = (
    "eff",
    "n_signal",
    "bkg_pass",
    "bkg_fail",
    "slope_pass",
    "slope_fail",
    "shift",
    "log_sigma",
    "log_alpha",  # Crystal-Ball tail start (in sigma); fixed for the other signal shapes
    "log_n_minus_1",  # Crystal-Ball tail power
)
N_PAR = len(PARAMS)
SIGNALS = ("template", "voigt", "cb")
BACKGROUNDS = ("exp", "linear")
SLOPE_PRIOR = (0.02, 0.1)  # /GeV: centre and width of the weak constraint on the slopes
SHIFT_PRIOR = 1.0  # GeV: width of the weak constraint on the data/simulation mass shift (at 0)
LOG_SIGMA_PRIOR = (np.log(0.5), 1.0)  # weak constraint on log(sigma / GeV) of the extra smearing
SIGMA_FIXED = 1e-6  # GeV: kernel = identity to 1e-6 (templates fitted to their own sample)
MU_FLOOR = 1e-6
NO_BKG = 0.0  # background yield of a pure-signal sample (simulation fitted to itself)


@dataclass
class FitResult:
    eff: np.ndarray
    err: np.ndarray
    params: np.ndarray  # (n_bins, N_PAR)
    cov: np.ndarray  # (n_bins, N_PAR, N_PAR), zero rows/columns for fixed parameters
    nll: np.ndarray
    edm: np.ndarray
    chi2: np.ndarray
    ndof: np.ndarray
    chi2_prob: np.ndarray
    pos_def: np.ndarray
    converged: np.ndarray
    iterations: int
    at_bound: np.ndarray | None = None  # eff held at 0 or 1 (signal yield would go negative)


#: The per-bin arrays of a ``FitResult`` (all its fields but the iteration count).
BIN_FIELDS = (
    "eff",
    "err",
    "params",
    "cov",
    "nll",
    "edm",
    "chi2",
    "ndof",
    "chi2_prob",
    "pos_def",
    "converged",
    "at_bound",
)


def _g(z: jnp.ndarray) -> jnp.ndarray:
    """Antiderivative of the normal CDF: z Phi(z) + phi(z)."""
    return z * norm.cdf(z) + norm.pdf(z)


def smear_kernel(n_fit: int, i0: int, n_tmpl: int, width: float, shift, sigma) -> jnp.ndarray:
    """The convolution kernel k[d] of the template smearing: a mass uniform in template bin j,
    shifted by ``shift`` and smeared by a Gaussian of width ``sigma``, falls into fit bin i with
    probability k[i + i0 - j + n_tmpl - 1] (fit bin i is histogram bin i0 + i).

    Both binnings share one uniform grid, so the probability depends on i - j only: it is
    sigma/width times the second difference of G(z) = z Phi(z) + phi(z) (the Gaussian integrated
    over both bins), ~140 evaluations per bin and iteration, exact and smooth in (shift, sigma),
    the identity as sigma -> 0 at shift 0.
    """
    d = i0 - n_tmpl + jnp.arange(n_fit + n_tmpl + 2)  # offsets in bins, one beyond each end
    g = _g((d * width - shift) / sigma)
    return sigma / width * (g[2:] - 2.0 * g[1:-1] + g[:-2])


def smear_matrix(templates: np.ndarray, n_fit: int, i0: int) -> np.ndarray:
    """M[..., i, d] = template[..., n_tmpl - 1 + i - d]: the smeared spectrum is M @ kernel.

    Built once per fit outside the minimisation (numpy), so the differentiated model is a
    matrix-vector product (XLA's batched convolutions and gathers are slow on CPU under vmap).
    """
    n_tmpl = templates.shape[-1]
    i = np.arange(n_fit)[:, None]
    d = np.arange(n_fit + n_tmpl)[None, :]
    j = n_tmpl - 1 + i - d
    ok = (j >= 0) & (j < n_tmpl)
    return np.where(ok, templates[..., np.clip(j, 0, n_tmpl - 1)], 0.0)


def smear(template: np.ndarray, kernel: jnp.ndarray, n_fit: int, i0: int = 0) -> jnp.ndarray:
    """Expected fit-range spectrum of one template smeared with ``smear_kernel``."""
    return smear_matrix(np.asarray(template), n_fit, i0) @ kernel


def _exp_shape(centres: jnp.ndarray, slope: jnp.ndarray) -> jnp.ndarray:
    x = -slope * (centres - centres.mean())
    x = x - x.max()
    e = jnp.exp(x)
    return e / e.sum()


def _expected(theta, t_pass, t_fail, grid, model=("template", "exp")):
    """Expected pass and fail spectra; ``t_pass``/``t_fail`` are ``smear_matrix`` outputs."""
    eff, n, bp, bf, lp, lf, shift, log_sigma = (theta[i] for i in range(8))
    (n_fit, i0, width), centres = grid
    if model[0] == "template":
        n_tmpl = t_pass.shape[-1] - n_fit
        k = smear_kernel(n_fit, i0, n_tmpl, width, shift, jnp.exp(log_sigma))
        s_p, s_f = t_pass @ k, t_fail @ k
    else:
        s_p = s_f = shapes.signal_shape(model[0], theta, centres, width)
    bkg = _exp_shape if model[1] == "exp" else shapes.linear_shape
    mu_p = n * eff * s_p + bp**2 * bkg(centres, lp)
    mu_f = n * (1.0 - eff) * s_f + bf**2 * bkg(centres, lf)
    return _floor(mu_p), _floor(mu_f)


def _floor(mu: jnp.ndarray) -> jnp.ndarray:
    """mu above MU_FLOOR, continued below it by an exponential with the same value and slope
    (a negative background may not make a bin's expectation negative; smooth for Newton)."""
    safe = jnp.minimum(mu, MU_FLOOR)
    return jnp.where(
        mu > MU_FLOOR, mu, MU_FLOOR * jnp.exp(jnp.maximum(safe / MU_FLOOR - 1.0, -30.0))
    )


def priors(signal: str = "template", background: str = "exp") -> tuple[np.ndarray, np.ndarray]:
    """(centre, width) per parameter of the weak Gaussian constraints (width inf: none).

    Slopes: 0.02 +- 0.1 /GeV (exponential), 0 +- 1 (tanh of the linear slope); only matter
    without background. Shift 0 +- 1 GeV. log sigma: the extra smearing of the template
    log(0.5 GeV) +- 1, the full resolution of an analytic shape log(1.5 GeV) +- 2. Crystal
    Ball: log alpha log(1.5) +- 1, log(n - 1) log(2) +- 1 (the tail of a few-event fail
    spectrum says little about them).
    """
    c = np.zeros(N_PAR)
    w = np.full(N_PAR, np.inf)
    c[4:6], w[4:6] = SLOPE_PRIOR if background == "exp" else (0.0, 1.0)
    c[6], w[6] = 0.0, SHIFT_PRIOR
    c[7], w[7] = LOG_SIGMA_PRIOR if signal == "template" else (np.log(1.5), 2.0)
    c[8], w[8] = np.log(1.5), 1.0
    c[9], w[9] = np.log(2.0), 1.0
    return c, w


def _nll(theta, n_pass, n_fail, t_pass, t_fail, grid, theta0, model=("template", "exp")):
    mu_p, mu_f = _expected(theta, t_pass, t_fail, grid, model)
    # empty bins contribute mu only (0 log mu would be NaN where mu sits on the floor)
    nll = jnp.sum(mu_p - jnp.where(n_pass > 0, n_pass * jnp.log(mu_p), 0.0))
    nll = nll + jnp.sum(mu_f - jnp.where(n_fail > 0, n_fail * jnp.log(mu_f), 0.0))
    c, w = priors(*model)
    prior = jnp.sum(((theta - c) / w) ** 2)
    return nll + 0.5 * prior


def _deviance(theta, n_pass, n_fail, t_pass, t_fail, grid, model=("template", "exp")):
    mu_p, mu_f = _expected(theta, t_pass, t_fail, grid, model)

    def dev(n, mu):
        return 2.0 * jnp.sum(mu - n + jnp.where(n > 0, n * jnp.log(jnp.maximum(n, 1e-300) / mu), 0))

    return dev(n_pass, mu_p) + dev(n_fail, mu_f)


def _saddle_free_step(g: jnp.ndarray, H: jnp.ndarray, lam) -> jnp.ndarray:
    """Damped Newton step on |H|: H (scaled to unit diagonal) is eigen-decomposed and each
    direction's curvature replaced by its absolute value plus the damping ``lam``.

    A plain Newton step converges to any stationary point. With B = b^2 the point b = 0 is
    stationary for every spectrum, and a saddle (a maximum along b) where the data want a small
    positive background: the plain step walked there in ~4 % of the data bins of the shipped
    binning and stopped with a Hessian that is not positive definite. On |H| every step is a
    descent direction, so b moves away from a saddle instead of onto it.
    """
    d = 1.0 / jnp.sqrt(jnp.abs(jnp.diag(H)) + 1e-12)
    lam_h, vec = jnp.linalg.eigh(H * d[:, None] * d[None, :])
    gs = vec.T @ (g * d)
    return -d * (vec @ (gs / (jnp.abs(lam_h) + lam + 1e-12)))


def _fit_one(
    theta0, free, n_pass, n_fail, t_pass, t_fail, centres, geom, n_iter, newton=False, model=None
):
    model = model or ("template", "exp")
    grid = (geom, centres)
    args = (n_pass, n_fail, t_pass, t_fail, grid)

    def f(th):
        return _nll(th, *args, theta0, model)

    grad = jax.grad(f)
    hess = jax.hessian(f)

    def masked(th, active=None):
        g = grad(th)
        fr = free if active is None else free * (1.0 - active)
        g = g * fr
        H = hess(th) * fr[:, None] * fr[None, :] + jnp.diag(1.0 - fr)
        return g, H

    def at_bound(th):
        """eff on a physical bound with the gradient pointing out: held there this iteration
        (a negative signal yield has no likelihood; the floor would make the minimum a kink)."""
        g0 = grad(th)[0]
        out = ((th[0] <= 0.0) & (g0 > 0.0)) | ((th[0] >= 1.0) & (g0 < 0.0))
        return jnp.zeros(N_PAR).at[0].set(jnp.where(out & (free[0] > 0), 1.0, 0.0))

    def body(_, state):
        th, lam, fval = state
        g, H = masked(th, at_bound(th))
        if newton:  # the plain damped Newton step (kept to show what the saddle-free one fixes)
            scale = jnp.abs(jnp.diag(H)) + 1e-12
            step = jnp.linalg.solve(H + lam * jnp.diag(scale) + 1e-12 * jnp.eye(N_PAR), -g)
        else:
            step = _saddle_free_step(g, H, lam)
        th_new = th + step * free
        th_new = th_new.at[0].set(jnp.clip(th_new[0], 0.0, 1.0))
        f_new = f(th_new)
        ok = jnp.isfinite(f_new) & (f_new <= fval)
        th = jnp.where(ok, th_new, th)
        fval = jnp.where(ok, f_new, fval)
        lam = jnp.where(ok, jnp.maximum(lam * 0.2, 1e-9), jnp.minimum(lam * 10.0, 1e9))
        return th, lam, fval

    th, _, fval = jax.lax.fori_loop(0, n_iter, body, (theta0, 1e-3, f(theta0)))
    bound = at_bound(th)
    g, H = masked(th, bound)
    edm = 0.5 * g @ jnp.linalg.solve(H, g)
    # the covariance from the full Hessian (at a bound: the curvature there, the scale of the
    # one-sided error)
    _, H = masked(th)
    chol = jnp.linalg.cholesky(H)
    pos_def = jnp.all(jnp.isfinite(chol))
    cov = jnp.linalg.inv(H) * free[:, None] * free[None, :]
    return th, cov, fval, edm, pos_def, _deviance(th, *args, model), bound[0] > 0


@functools.lru_cache(maxsize=16)
def _fit_batch(
    geom: tuple[int, int, float], n_iter: int, newton: bool = False, model=("template", "exp")
):
    """The jitted fit of a batch of bins (vmap of ``_fit_one``) for one geometry and model."""
    one = functools.partial(_fit_one, geom=geom, n_iter=n_iter, newton=newton, model=model)
    return jax.jit(jax.vmap(one, in_axes=(0, None, 0, 0, 0, 0, None)))


def mass_grid(edges: np.ndarray, i0: int, i1: int) -> tuple[tuple[int, int, float], jnp.ndarray]:
    """((n_fit, i0, width), centres) of the fit bins i0..i1-1 on the uniform histogram grid."""
    width = float(edges[1] - edges[0])
    if not np.allclose(np.diff(edges), width, rtol=1e-9, atol=1e-9):
        raise ValueError("the tag-and-probe fit needs uniform mass bins (pair.mass_bins)")
    centres = 0.5 * (edges[i0:i1] + edges[i0 + 1 : i1 + 1])
    return (int(i1 - i0), int(i0), width), jnp.asarray(centres)


def _nll_flat(theta, n_pass, n_fail, t_pass, t_fail, centres, geom, theta0):
    return _nll(theta, n_pass, n_fail, t_pass, t_fail, (geom, centres), theta0)


_nll_and_grad = jax.jit(jax.value_and_grad(_nll_flat), static_argnums=(6,))
_nll_hessian = jax.jit(jax.hessian(_nll_flat), static_argnums=(6,))


def normalised_templates(passing: np.ndarray, failing: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-bin templates normalised to unit sum; an empty pass or fail template (the simulation
    has no probe of that kind in the bin) takes the bin's pass+fail shape instead."""
    both = passing + failing
    out = []
    for t in (passing, failing):
        use = np.where((t.sum(axis=1) > 0)[:, None], t, both)
        s = use.sum(axis=1, keepdims=True)
        out.append(np.divide(use, s, out=np.zeros_like(use, dtype=np.float64), where=s > 0))
    return out[0], out[1]


def initial_values(
    n_pass: np.ndarray, n_fail: np.ndarray, signal: str = "template", background: str = "exp"
) -> np.ndarray:
    """Starting point: counted efficiency, total yield, 1 % background (b = sqrt B), shape
    parameters at the centres of their priors."""
    p, f = n_pass.sum(axis=1), n_fail.sum(axis=1)
    tot = np.maximum(p + f, 1.0)
    th = np.zeros((n_pass.shape[0], N_PAR))
    th[:, 0] = np.clip(p / tot, 0.02, 0.98)
    th[:, 1] = tot
    th[:, 2] = np.sqrt(0.01 * np.maximum(p, 1.0))
    th[:, 3] = np.sqrt(0.01 * np.maximum(f, 1.0))
    c, _ = priors(signal, background)
    th[:, 4:] = c[4:]
    return th


BOUND_SCAN = np.concatenate([[0.0], np.geomspace(1e-5, 1.0, 160)])  # distances from a bound


def _scan_nll(theta, n_pass, n_fail, t_pass, t_fail, centres, geom, model):
    """NLL with eff moved off its bound by each BOUND_SCAN distance, the total signal yield
    N held: without background that is the profile over N (N-hat = all signal probes whatever
    eff), so the rise is the binomial -n ln(1 - d) and the error the exact one-sided
    Clopper-Pearson limit (holding the other side's yield instead gave the Poisson n d / (1 - d),
    1 % smaller at 50 probes)."""
    e0 = theta[0]
    sign = jnp.where(e0 >= 1.0, -1.0, 1.0)

    def one(d):
        th = theta.at[0].set(e0 + sign * d)
        return _nll(th, n_pass, n_fail, t_pass, t_fail, (geom, centres), theta, model)

    return jax.vmap(one)(jnp.asarray(BOUND_SCAN))


@functools.lru_cache(maxsize=16)
def _scan_batch(geom: tuple[int, int, float], model: tuple[str, str]):
    one = functools.partial(_scan_nll, geom=geom, model=model)
    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None)))


def bound_errors(nll_scan: np.ndarray, rise: float = BOUND_DNLL) -> np.ndarray:
    """Per row of NLL values on BOUND_SCAN: the distance where NLL has risen by ``rise``
    (linear interpolation; the last distance where it never does). The Hessian is no error at
    a bound: an empty spectrum there has no curvature, or the expectation sits on the floor.
    The rise -ln(1 - BOUND_CL) = 1.148 makes [1 - err, 1] the one-sided Clopper-Pearson
    interval at BOUND_CL for a bin without background (efficiency.bounds); 1/2 would give an
    interval that misses the truth up to exp(-1/2) = 61 % of the time."""
    diff = nll_scan - nll_scan[:, :1]
    out = np.empty(diff.shape[0])
    for r, row in enumerate(diff):
        k = int(np.argmax(row >= rise)) if np.any(row >= rise) else row.size - 1
        if k == 0 or row[k] < rise:
            out[r] = BOUND_SCAN[k]
            continue
        x0, x1, y0, y1 = BOUND_SCAN[k - 1], BOUND_SCAN[k], row[k - 1], row[k]
        out[r] = x0 + (rise - y0) * (x1 - x0) / (y1 - y0)
    return out


def fit_efficiencies(
    n_pass: np.ndarray,
    n_fail: np.ndarray,
    tmpl_pass: np.ndarray,
    tmpl_fail: np.ndarray,
    mass_edges: np.ndarray,
    fit_range: tuple[float, float],
    *,
    own_sample: bool = False,
    n_iter: int = 40,
    chunk: int = 4096,
    newton: bool = False,
    signal: str = "template",
    background: str = "exp",
    fix_eff: float | None = None,
) -> FitResult:
    """Fit every bin (rows of the (n_bins, n_mass) spectra over ``mass_edges``) at once.

    ``own_sample=True``: the simulation fitted with its own templates: the kernel is the
    identity and the background is fixed to zero (a pure-signal sample; a free background would
    only trade yield with the signal and inflate the error). Observed spectra are restricted to ``fit_range``; templates use the whole
    histogram range.
    """
    edges = np.asarray(mass_edges, dtype=np.float64)
    i0, i1 = np.searchsorted(edges, fit_range)
    if not (np.isclose(edges[i0], fit_range[0]) and np.isclose(edges[i1], fit_range[1])):
        raise ValueError(f"fit range {fit_range} does not fall on mass bin edges")
    obs_p, obs_f = n_pass[:, i0:i1].astype(np.float64), n_fail[:, i0:i1].astype(np.float64)
    t_p, t_f = normalised_templates(
        np.asarray(tmpl_pass, dtype=np.float64), np.asarray(tmpl_fail, dtype=np.float64)
    )
    if signal not in SIGNALS or background not in BACKGROUNDS:
        raise ValueError(f"unknown model {signal}/{background}: {SIGNALS} x {BACKGROUNDS}")
    theta0 = initial_values(obs_p, obs_f, signal, background)
    free = np.ones(N_PAR)
    if signal != "cb":
        free[8:] = 0.0
    if fix_eff is not None:
        free[0] = 0.0
        theta0[:, 0] = fix_eff
    if own_sample:
        free[2:] = 0.0
        theta0[:, 2:4] = NO_BKG
        theta0[:, 6] = 0.0
        theta0[:, 7] = np.log(SIGMA_FIXED)
    grid = mass_grid(edges, i0, i1)
    outs = []
    for s in range(0, obs_p.shape[0], chunk):
        sl = slice(s, s + chunk)
        outs.append(
            _fit_batch(grid[0], n_iter, newton, (signal, background))(
                jnp.asarray(theta0[sl]),
                jnp.asarray(free),
                jnp.asarray(obs_p[sl]),
                jnp.asarray(obs_f[sl]),
                jnp.asarray(smear_matrix(t_p[sl], *grid[0][:2])),
                jnp.asarray(smear_matrix(t_f[sl], *grid[0][:2])),
                grid[1],
            )
        )
    th, cov, nll, edm, pos_def, dev, bound = (
        np.concatenate([np.asarray(o[k]) for o in outs]) for k in range(7)
    )
    n_nonzero = (obs_p.shape[1] + obs_f.shape[1]) * np.ones(th.shape[0])
    ndof = n_nonzero - free.sum()
    err = np.sqrt(np.clip(cov[:, 0, 0], 0.0, None))
    if np.any(bound):
        sel = np.flatnonzero(bound)
        scan = _scan_batch(grid[0], (signal, background))(
            jnp.asarray(th[sel]),
            jnp.asarray(obs_p[sel]),
            jnp.asarray(obs_f[sel]),
            jnp.asarray(smear_matrix(t_p[sel], *grid[0][:2])),
            jnp.asarray(smear_matrix(t_f[sel], *grid[0][:2])),
            grid[1],
        )
        err[sel] = bound_errors(np.asarray(scan))
    return FitResult(
        eff=th[:, 0],
        err=err,
        params=th,
        cov=cov,
        nll=nll,
        edm=edm,
        chi2=dev,
        ndof=ndof,
        chi2_prob=stats.chi2.sf(dev, ndof),
        pos_def=pos_def.astype(bool),
        converged=np.isfinite(edm) & (edm < 1e-3) & pos_def.astype(bool),
        at_bound=bound.astype(bool),
        iterations=n_iter,
    )


def fit_one_scipy(
    n_pass: np.ndarray,
    n_fail: np.ndarray,
    tmpl_pass: np.ndarray,
    tmpl_fail: np.ndarray,
    mass_edges: np.ndarray,
    fit_range: tuple[float, float],
    *,
    own_sample: bool = False,
    minimizer: str = "scipy",
) -> tuple[float, float]:
    """The same fit of ONE bin in a Python-side minimiser (the loop references of
    bench/bench_tnp.py): ``minimizer`` "scipy" (L-BFGS-B) or "iminuit" (MIGRAD), both with the
    JAX value and gradient and eff bounded to [0, 1] like the batched fit. Returns (eff, err), err from the inverse of the JAX Hessian at the
    minimum (the same error definition as the batched fit)."""
    if minimizer not in ("scipy", "iminuit"):
        raise ValueError(f"minimizer must be 'scipy' or 'iminuit', got {minimizer!r}")
    edges = np.asarray(mass_edges, dtype=np.float64)
    i0, i1 = np.searchsorted(edges, fit_range)
    obs_p, obs_f = n_pass[None, i0:i1], n_fail[None, i0:i1]
    t_p, t_f = normalised_templates(tmpl_pass[None], tmpl_fail[None])
    theta0 = initial_values(obs_p, obs_f)[0]
    free = np.ones(N_PAR, dtype=bool)
    free[8:] = False  # Crystal-Ball tail parameters: no part of the template model
    if own_sample:
        free[2:] = False
        theta0[2:4] = NO_BKG
        theta0[6] = 0.0
        theta0[7] = np.log(SIGMA_FIXED)
    geom, centres = mass_grid(edges, i0, i1)
    m_p, m_f = smear_matrix(t_p[0], *geom[:2]), smear_matrix(t_f[0], *geom[:2])
    args = (obs_p[0], obs_f[0], m_p, m_f, centres, geom, theta0)

    def full(x):
        th = theta0.copy()
        th[free] = x
        return th

    def fun(x):
        val, grad = _nll_and_grad(full(x), *args)
        return float(val), np.asarray(grad)[free]

    if minimizer == "scipy":
        from scipy.optimize import minimize

        bounds = [(0.0, 1.0)] + [(None, None)] * (int(free.sum()) - 1)
        x = minimize(fun, theta0[free], jac=True, method="L-BFGS-B", bounds=bounds).x
    else:
        from iminuit import Minuit

        m = Minuit(lambda v: fun(v)[0], theta0[free], grad=lambda v: fun(v)[1])
        m.errordef = Minuit.LIKELIHOOD
        m.limits[0] = (0.0, 1.0)
        m.migrad()
        x = np.asarray(m.values)
    H = np.asarray(_nll_hessian(full(x), *args))[np.ix_(free, free)]
    cov = np.linalg.inv(H)
    return float(x[0]), float(np.sqrt(max(cov[0, 0], 0.0)))
