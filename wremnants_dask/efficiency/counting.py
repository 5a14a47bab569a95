"""Efficiency by counting with sideband subtraction.

In each bin the background under the signal window is the straight line through the mean
densities of the two sidebands, integrated over the window; pass and fail are subtracted
separately, so eps = P / (P + F) with P, F the background-subtracted yields. The uncertainty
propagates the counts' variances (P and F are independent): var(eps) = (F^2 var P + P^2 var F)
/ (P + F)^4, the binomial error P F / (P + F)^3 when there is no background. Where F (P) is
not positive the efficiency is held at its bound 1 (0) with the one-sided error of
``bounds.at_bound`` (that error is zero, the Hessian/binomial one, there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wremnants_dask.efficiency.bounds import at_bound


@dataclass
class Counting:
    eff: np.ndarray
    err: np.ndarray
    signal_pass: np.ndarray
    signal_fail: np.ndarray
    n_probes: np.ndarray  # raw probes in the signal window (pass + fail)
    at_bound: np.ndarray  # eff held at 0 or 1 with a one-sided error


def _window_sum(counts: np.ndarray, edges: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Sum of the bins inside [lo, hi] (edges must fall on bin edges)."""
    i0, i1 = np.searchsorted(edges, [lo, hi])
    if not (np.isclose(edges[min(i0, edges.size - 1)], lo) and np.isclose(edges[i1], hi)):
        raise ValueError(f"window [{lo}, {hi}] does not fall on mass bin edges")
    return counts[..., i0:i1].sum(axis=-1)


def subtraction_weights(
    window: tuple[float, float], sidebands: tuple[tuple[float, float], ...]
) -> tuple[float, float]:
    """(a, b): background in the window = a N(low sideband) + b N(high sideband)."""
    if len(sidebands) != 2:
        raise ValueError(f"counting needs exactly two sidebands, got {sidebands}")
    (l0, l1), (h0, h1) = sorted(sidebands)
    c_lo, c_hi, c_sig = 0.5 * (l0 + l1), 0.5 * (h0 + h1), 0.5 * (window[0] + window[1])
    t = (c_sig - c_lo) / (c_hi - c_lo)
    width = window[1] - window[0]
    return width * (1.0 - t) / (l1 - l0), width * t / (h1 - h0)


def _subtracted(
    counts: np.ndarray, var: np.ndarray, edges: np.ndarray, window, sidebands
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = subtraction_weights(window, sidebands)
    (l0, l1), (h0, h1) = sorted(sidebands)
    n_sig = _window_sum(counts, edges, *window)
    n_lo, n_hi = _window_sum(counts, edges, l0, l1), _window_sum(counts, edges, h0, h1)
    v = (
        _window_sum(var, edges, *window)
        + a * a * _window_sum(var, edges, l0, l1)
        + b * b * _window_sum(var, edges, h0, h1)
    )
    return n_sig - a * n_lo - b * n_hi, v, n_sig


def count_efficiency(
    passing: np.ndarray,
    failing: np.ndarray,
    passing_var: np.ndarray,
    failing_var: np.ndarray,
    mass_edges: np.ndarray,
    window: tuple[float, float],
    sidebands: tuple[tuple[float, float], ...],
) -> Counting:
    """Sideband-subtracted efficiency of every bin (rows of the (n_bins, n_mass) spectra)."""
    p, vp, np_raw = _subtracted(passing, passing_var, mass_edges, window, sidebands)
    f, vf, nf_raw = _subtracted(failing, failing_var, mass_edges, window, sidebands)
    tot = p + f
    with np.errstate(divide="ignore", invalid="ignore"):
        eff = p / tot
        err = np.sqrt(f * f * vp + p * p * vf) / tot**2
    eff, err, bound = at_bound(eff, err, p, vp, f, vf)
    return Counting(eff, err, p, f, np_raw + nf_raw, bound)
