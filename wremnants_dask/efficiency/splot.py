"""Efficiency by the sPlot method: sWeights from a fit of the pass+fail mass spectrum.

Per bin, the summed (pass + fail) spectrum is fitted with the nominal model (smeared simulation
template + exponential; the batched fit with eff held at 1 and the fail spectrum empty). The
signal sWeight of a mass bin is w(m) = (V_ss f_s(m) + V_sb f_b(m)) / (N_s f_s(m) + N_b f_b(m)),
V the covariance of the yields (N_s, N_b) from V^-1_ij = sum_m n(m) f_i(m) f_j(m) / mu(m)^2
(Pivk & Le Diberder 2005). The passing signal is P = sum n_pass w, the failing F = sum n_fail w,
eff = P / (P + F) with var P = sum n_pass w^2 (likewise F): valid when the background's mass
shape is the same for passing and failing probes, an assumption the fit method does not make,
so the spread between the two measures it. Where F (P) is not positive the efficiency is held
at its bound 1 (0) with the one-sided error of ``bounds.at_bound``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from wremnants_dask.efficiency.bounds import at_bound
from wremnants_dask.efficiency.fit import (
    FitResult,
    _exp_shape,
    fit_efficiencies,
    mass_grid,
    normalised_templates,
    smear_kernel,
    smear_matrix,
)


@dataclass
class SPlotResult:
    eff: np.ndarray
    err: np.ndarray
    signal_pass: np.ndarray
    signal_fail: np.ndarray
    n_probes: np.ndarray
    fit: FitResult  # the fit of the summed spectrum
    at_bound: np.ndarray  # eff held at 0 or 1 with a one-sided error


def _shapes(theta, t_sum, centres, geom):
    """Signal and background probabilities per fit bin (each normalised over the fit range)."""
    n_fit, i0, width = geom
    n_tmpl = t_sum.shape[-1] - n_fit
    s = t_sum @ smear_kernel(n_fit, i0, n_tmpl, width, theta[6], jnp.exp(theta[7]))
    return s / s.sum(), _exp_shape(centres, theta[4])


def splot_efficiencies(
    n_pass: np.ndarray,
    n_fail: np.ndarray,
    templates: np.ndarray,
    mass_edges: np.ndarray,
    fit_range: tuple[float, float],
    *,
    own_sample: bool = False,
) -> SPlotResult:
    """sPlot efficiency of every bin (rows of the (n_bins, n_mass) spectra)."""
    edges = np.asarray(mass_edges, dtype=np.float64)
    total = n_pass + n_fail
    res = fit_efficiencies(
        total,
        np.zeros_like(total),
        templates,
        templates,
        edges,
        fit_range,
        own_sample=own_sample,
        fix_eff=1.0,
    )
    i0, i1 = np.searchsorted(edges, fit_range)
    geom, centres = mass_grid(edges, i0, i1)
    t_sum, _ = normalised_templates(np.asarray(templates, float), np.asarray(templates, float))
    m = jnp.asarray(smear_matrix(t_sum, geom[0], geom[1]))
    f_s, f_b = jax.vmap(lambda th, t: _shapes(th, t, centres, geom))(jnp.asarray(res.params), m)
    f_s, f_b = np.asarray(f_s), np.asarray(f_b)
    obs = total[:, i0:i1].astype(np.float64)
    # yields in the fit range: the fitted expectation split into its two components
    n_b = res.params[:, 2] ** 2
    n_s = _signal_in_range(res, m, centres, geom)
    mu = n_s[:, None] * f_s + n_b[:, None] * f_b
    safe = np.where(mu > 0, mu, np.inf)
    fs, fb = f_s / safe, f_b / safe
    vinv = np.stack(
        [
            np.stack([(obs * fs * fs).sum(1), (obs * fs * fb).sum(1)], -1),
            np.stack([(obs * fs * fb).sum(1), (obs * fb * fb).sum(1)], -1),
        ],
        -2,
    )
    if own_sample:  # no background component: the sWeight of the signal is 1
        w = np.ones_like(obs)
    else:
        # a background at b = 0 leaves V^-1 singular along N_b: regularise it (1e-9 relative)
        vinv = vinv + 1e-9 * np.eye(2) * np.trace(vinv, axis1=1, axis2=2)[:, None, None]
        v = np.linalg.inv(vinv)
        w = (v[:, 0, 0, None] * f_s + v[:, 0, 1, None] * f_b) / safe
    p_obs = n_pass[:, i0:i1].astype(np.float64)
    f_obs = n_fail[:, i0:i1].astype(np.float64)
    sp, sf = (p_obs * w).sum(1), (f_obs * w).sum(1)
    vp, vf = (p_obs * w * w).sum(1), (f_obs * w * w).sum(1)
    tot = sp + sf
    with np.errstate(divide="ignore", invalid="ignore"):
        eff = sp / tot
        err = np.sqrt(sf * sf * vp + sp * sp * vf) / tot**2
    eff, err, bound = at_bound(eff, err, sp, vp, sf, vf)
    return SPlotResult(eff, err, sp, sf, obs.sum(1), res, bound)


def _signal_in_range(res: FitResult, m: jnp.ndarray, centres, geom) -> np.ndarray:
    """N times the smeared template's share inside the fit range (N is over the histogram)."""
    n_fit, i0, width = geom
    n_tmpl = m.shape[-1] - n_fit

    def one(th, mm):
        return (mm @ smear_kernel(n_fit, i0, n_tmpl, width, th[6], jnp.exp(th[7]))).sum()

    share = np.asarray(jax.vmap(one)(jnp.asarray(res.params), m))
    return res.params[:, 1] * share
