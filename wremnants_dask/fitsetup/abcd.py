"""Data-driven non-prompt background with the (extended) ABCD method.

Regions are cells of an isolation axis (2 bins: fail / pass) and an mT axis (>= 2 bins,
increasing mT). The signal region is (iso pass, mT bin ``mt_signal``, default the last); the
mT sidebands are the other mT bins ``k = 0..K-1``. In every region ``X`` the non-prompt yield is
estimated as ``N_X = data_X - prompt_X`` (simulated prompt contributions subtracted). With
``F_k = N(pass, k) / N(fail, k)`` the fake rate in sideband ``k``, the prediction is

    N_np(signal) = N(fail, signal) * prod_k F_k ** w_k
                 = N(fail, signal) * exp(sum_k w_k log F_k),

where ``w`` are the weights that extrapolate a polynomial of degree ``d`` in mT (fitted to
``log F`` at the sideband positions ``x_k``) to the signal position ``x_s``:
``w = [x_s**j]_j @ pinv([x_k**j]_kj)``.

- simple ABCD (2 mT bins, K = 1): ``w = (1,)``, so ``N_np = N_B * N_C / N_D`` with
  B = (fail, high mT), C = (pass, low mT), D = (fail, low mT);
- extended ABCD (3 mT bins low/medium/high at x = 0, 1, 2, d = 1): ``w = (-1, 2)``, so
  ``N_np = N(fail, high) * (N(pass, med) / N(fail, med))**2 * N(fail, low) / N(pass, low)``:
  the fake rate is allowed to change exponentially (log-linearly) with mT, which removes the
  bias of the simple method when isolation and mT are correlated for non-prompt muons.

With ``smoothing_order`` set, each ``log F_k`` is first fitted as a polynomial in pT per bin of
all other axes (eta, charge, variations...) by weighted least squares (``smoothing``, with
weights re-evaluated at the fitted ratio to avoid the bias of observed-count weights), and the
signal fake rate uses ``sum_k w_k p_k`` with covariance ``sum_k w_k**2 C_k``. The fake-rate
uncertainty is then given as eigen-variations of that covariance (``eigen_axis``), optionally
decorrelated per bin of e.g. eta and charge (one nuisance per bin and eigenvector). Histogram
variances of the smoothed prediction hold only the statistical uncertainty of ``N(fail, signal)``.

``mt_model="factorised"`` fits instead one model to all sideband points of a row at once:
``log F(pT, x) = P(pT) + sum_{m=1..d} b_m u**m`` with ``u = (x - x_s) / max|x_k - x_s|``, so
``P(pT)`` is the log fake rate extrapolated to the signal position. The pT shape is then shared
by the mT bins and measured from all of them, and only the ``d`` mT coefficients are
extrapolated; in the per-bin model every pT coefficient is extrapolated (variance
``sum_k w_k**2 C_k``, five times one sideband's for ``w = (-1, 2)``), which at the edges of the pT
range with few sideband events gives fake-rate variations of factors 10-30. The fit's chi2 tests
the factorisation (and, with more than ``d + 1`` sideband bins, the mT polynomial).

Variation axes of the prompt histogram (absent from data) broadcast through everything: one call
gives the prediction for all variations as one tensor operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import hist
import numpy as np

from wremnants_dask.fitsetup import histops
from wremnants_dask.fitsetup.smoothing import LogPolyFit, eigen_shifts, fit_log_ratio, poly_basis

__all__ = ["MT_MODELS", "NonPromptPrediction", "extrapolation_weights", "predict_nonprompt"]

#: Fake-rate models in mT (see the module docstring).
MT_MODELS = ("per_bin", "factorised")


@dataclass(frozen=True)
class NonPromptPrediction:
    """Non-prompt prediction in the signal region.

    ``hist``: axes of the input minus the isolation and mT axes (variation axes last), Weight
    storage. ``eigen``: up-shifted predictions with extra axes ``eigen_axis`` (+ one decorrelated
    copy per name in ``decorrelate``), or None; mirror with ``histops.mirror(method="ratio")``
    for the down shifts (exact: the shifts are symmetric in log space). ``fakerate``: the
    combined log fake-rate fit in the signal region (rows = output axes except pT, pT last).
    """

    hist: hist.Hist
    eigen: hist.Hist | None
    fakerate: LogPolyFit | None
    mt_weights: np.ndarray
    n_invalid: int


def extrapolation_weights(
    nodes: Sequence[float], target: float, degree: int | None = None
) -> np.ndarray:
    """Weights ``w`` with ``sum_k w_k f(x_k) = f(target)`` for any polynomial f of ``degree``.

    Least-squares polynomial extrapolation; with ``degree = len(nodes) - 1`` this is Lagrange
    extrapolation (e.g. nodes (0, 1) -> 2 gives (-1, 2)). Default degree: min(K - 1, 1).
    """
    x = np.asarray(nodes, dtype=float)
    d = min(len(x) - 1, 1) if degree is None else degree
    if not 0 <= d < len(x):
        raise ValueError(f"mT extrapolation degree {d} needs more than {len(x)} sideband bins")
    vander = x[:, None] ** np.arange(d + 1)
    return (float(target) ** np.arange(d + 1)) @ np.linalg.pinv(vander)


def _factorised_fit(
    pt: np.ndarray,
    pt_range: tuple[float, float],
    dx: np.ndarray,
    degree: int | None,
    regions: tuple[np.ndarray, ...],
    order: int,
    iterations: int,
    what: str,
) -> LogPolyFit:
    """One fit per row of ``log F = P(pT) + sum_m b_m u**m`` over all sideband points (arrays
    ``(..., K, pt)``; ``dx`` = sideband positions minus the signal's). The returned fit's basis
    is the signal position's (u = 0): its parameters and covariance give the signal fake rate
    and its eigen-variations directly."""
    k = len(dx)
    d = min(k - 1, 1) if degree is None else degree
    if not 0 <= d < k:
        raise ValueError(f"mT polynomial degree {d} needs more than {k} sideband bins")
    u = dx / np.max(np.abs(dx))
    pt_b = poly_basis(pt, order, pt_range)
    n = len(pt)
    mt_b = u[:, None] ** np.arange(1, d + 1)[None, :]  # (K, d)
    basis = np.concatenate([np.tile(pt_b, (k, 1)), np.repeat(mt_b, n, axis=0)], axis=1)
    flat = [a.reshape(a.shape[:-2] + (k * n,)) for a in regions]
    fit = fit_log_ratio(
        np.arange(k * n, dtype=float), *flat, order, iterations=iterations, what=what, basis=basis
    )
    sig_basis = np.concatenate([pt_b, np.zeros((n, d))], axis=1)
    return LogPolyFit(params=fit.params, cov=fit.cov, basis=sig_basis, chi2=fit.chi2, ndf=fit.ndf)


def _sum_prompt(prompt: hist.Hist | Sequence[hist.Hist] | None) -> hist.Hist | None:
    if prompt is None or isinstance(prompt, hist.Hist):
        return prompt
    if not prompt:
        return None
    total = prompt[0]
    for h in prompt[1:]:
        total = total + h
    return total


def _region_axes(h: hist.Hist, iso_axis: str, mt_axis: str) -> tuple[int, int]:
    iso = histops.axis_index(h, iso_axis)
    mt = histops.axis_index(h, mt_axis)
    if len(h.axes[iso]) != 2:
        raise ValueError(f"isolation axis {iso_axis!r} must have 2 bins, has {len(h.axes[iso])}")
    if len(h.axes[mt]) < 2:
        raise ValueError(f"mT axis {mt_axis!r} needs at least 2 bins, has {len(h.axes[mt])}")
    return iso, mt


def predict_nonprompt(
    data: hist.Hist,
    prompt: hist.Hist | Sequence[hist.Hist] | None,
    *,
    iso_axis: str = "passIso",
    mt_axis: str = "passMT",
    pt_axis: str = "pt",
    iso_pass: int = 1,
    mt_signal: int = -1,
    mt_sidebands: Sequence[int] | None = None,
    mt_nodes: Sequence[float] | None = None,
    mt_degree: int | None = None,
    smoothing_order: int | None = 2,
    fit_iterations: int = 2,
    eigen_axis: str | None = None,
    decorrelate: Sequence[str] = (),
    clip_negative: bool = False,
    mt_model: str = "per_bin",
) -> NonPromptPrediction:
    """Non-prompt yield in (iso pass, mT signal bin) from data minus prompt MC in the sidebands.

    ``prompt`` (one histogram or several to sum) may carry variation axes that ``data`` lacks;
    they appear last in the output. ``iso_pass`` is the index of the passing isolation bin
    (1 for a Boolean axis). ``mt_nodes`` are the mT positions of all mT bins used for the
    extrapolation (default: bin indices); ``mt_degree`` the polynomial degree in mT. Data with
    Double storage is taken as Poisson (variance = value). Unsmoothed, a bin where any sideband
    yield is <= 0 gets prediction 0 (counted in ``n_invalid``); smoothed, such points are left
    out of the fit. ``fit_iterations``: reweighting passes of ``smoothing.fit_log_ratio``.
    ``mt_model``: ``per_bin`` (each sideband smoothed in pT, then extrapolated) or
    ``factorised`` (one fit of a pT polynomial plus mT terms of degree ``mt_degree``; needs
    ``smoothing_order``). See the module docstring.
    """
    if mt_model not in MT_MODELS:
        raise ValueError(f"mt_model must be one of {MT_MODELS}, got {mt_model!r}")
    if mt_model == "factorised" and smoothing_order is None:
        raise ValueError("mt_model='factorised' needs the pT smoothing (smoothing_order)")
    prompt_h = _sum_prompt(prompt)
    target = data if prompt_h is None else prompt_h
    iso_i, mt_i = _region_axes(target, iso_axis, mt_axis)
    _region_axes(data, iso_axis, mt_axis)
    pt_i = histops.axis_index(target, pt_axis)
    n_mt = len(target.axes[mt_i])
    sig = mt_signal % n_mt
    sides = [k for k in range(n_mt) if k != sig] if mt_sidebands is None else list(mt_sidebands)
    if sig in sides or not sides:
        raise ValueError(f"mT axis {mt_axis!r}: sidebands {sides} must exclude signal bin {sig}")
    nodes = np.arange(n_mt, dtype=float) if mt_nodes is None else np.asarray(mt_nodes, float)
    if len(nodes) != n_mt:
        raise ValueError(f"mt_nodes needs one position per bin of {mt_axis!r} ({n_mt})")
    weights = extrapolation_weights(nodes[sides], nodes[sig], mt_degree)
    if iso_pass not in (0, 1):
        raise ValueError(f"iso_pass must be the bin index 0 or 1 of {iso_axis!r}")
    fail = 1 - iso_pass

    # arrays in the order: rows (output axes except pt), pt, iso, mT
    names = list(target.axes.name)
    rest = [n for n in names if n not in (iso_axis, mt_axis)]
    rows = [n for n in rest if n != pt_axis]
    perm = [names.index(n) for n in rows] + [pt_i, iso_i, mt_i]
    dv, dw = histops._aligned(data, target, flow=False, what="data")
    dw = dv if dw is None else dw
    pv = pw = np.zeros_like(dv)  # no prompt subtraction (e.g. a closure test on simulation)
    if prompt_h is not None:
        pv, pw = histops.hist_arrays(prompt_h, flow=False)
        pw = np.zeros_like(pv) if pw is None else pw
    dv, dw, pv, pw = (np.transpose(a, perm) for a in (dv, dw, pv, pw))

    def region(iso: int, mt: int | list[int]) -> tuple[np.ndarray, np.ndarray]:
        val = dv[..., iso, mt] - pv[..., iso, mt]
        var = dw[..., iso, mt] + pw[..., iso, mt]
        if isinstance(mt, list):  # (..., pt, K) -> (..., K, pt)
            val, var = np.swapaxes(val, -1, -2), np.swapaxes(var, -1, -2)
        return val, var

    b_v, b_w = region(fail, sig)
    c_v, c_w = region(iso_pass, sides)
    d_v, d_w = region(fail, sides)
    shape = np.broadcast_shapes(b_v.shape, c_v.shape[:-2] + c_v.shape[-1:])
    b_v, b_w = np.broadcast_to(b_v, shape), np.broadcast_to(b_w, shape)

    fit = None
    n_invalid = 0
    if mt_model == "factorised":
        fit = _factorised_fit(
            np.asarray(target.axes[pt_axis].centers, dtype=float),
            (float(target.axes[pt_axis].edges[0]), float(target.axes[pt_axis].edges[-1])),
            nodes[sides] - nodes[sig],
            mt_degree,
            (c_v, c_w, d_v, d_w),
            smoothing_order,
            fit_iterations,
            f"fake rate vs {pt_axis!r} and {mt_axis!r}",
        )
        fr_sig = np.broadcast_to(fit.ratio(), shape)
        pred_v = b_v * fr_sig
        pred_w = fr_sig**2 * b_w
    elif smoothing_order is not None:
        pt_edges = target.axes[pt_axis].edges
        side_fit = fit_log_ratio(
            np.asarray(target.axes[pt_axis].centers, dtype=float),
            c_v,
            c_w,
            d_v,
            d_w,
            smoothing_order,
            iterations=fit_iterations,
            x_range=(float(pt_edges[0]), float(pt_edges[-1])),
            what=f"fake rate vs {pt_axis!r}",
        )
        params = np.einsum("k,...ki->...i", weights, side_fit.params)
        cov = np.einsum("k,...kij->...ij", weights**2, side_fit.cov)
        chi2 = side_fit.chi2.sum(axis=-1)
        ndf = side_fit.ndf.sum(axis=-1)
        fit = LogPolyFit(params=params, cov=cov, basis=side_fit.basis, chi2=chi2, ndf=ndf)
        fr_sig = np.broadcast_to(fit.ratio(), shape)
        pred_v = b_v * fr_sig
        pred_w = fr_sig**2 * b_w
    else:
        valid = np.all((c_v > 0) & (d_v > 0), axis=-2)
        logc = np.log(np.where(c_v > 0, c_v, 1.0))
        logd = np.log(np.where(d_v > 0, d_v, 1.0))
        fr_sig = np.where(valid, np.exp(np.einsum("k,...kn->...n", weights, logc - logd)), 0.0)
        rel = np.einsum(
            "k,...kn->...n",
            weights**2,
            c_w / np.where(c_v > 0, c_v, 1.0) ** 2 + d_w / np.where(d_v > 0, d_v, 1.0) ** 2,
        )
        fr_sig = np.broadcast_to(fr_sig, shape)
        pred_v = b_v * fr_sig
        pred_w = fr_sig**2 * (b_w + b_v**2 * rel)
        n_invalid = int(np.count_nonzero(~np.broadcast_to(valid, shape)))
    if clip_negative:
        pred_v = np.clip(pred_v, 0.0, None)

    # back to the output axis order (rows with pt at its original place)
    out_names = rows + [pt_axis]
    back = [out_names.index(n) for n in rest]
    out_axes = [target.axes[n] for n in rest]
    pred = histops.make_hist(
        out_axes, np.transpose(pred_v, back), np.transpose(pred_w, back), flow=False
    )

    eigen = None
    if eigen_axis is not None:
        if fit is None:
            raise ValueError("eigen-variations need the smoothed fake rate (smoothing_order)")
        shifts = eigen_shifts(fit.cov)  # rows + (k, p)
        factor = np.exp(np.einsum("ni,...ki->...nk", fit.basis, shifts))  # rows + (pt, k)
        up_v = pred_v[..., None] * factor
        up_w = pred_w[..., None] * factor**2
        n_par = shifts.shape[-2]
        par_ax = hist.axis.Integer(0, n_par, name=eigen_axis, underflow=False, overflow=False)
        eigen = histops.make_hist(
            [*out_axes, par_ax],
            np.transpose(up_v, [*back, len(back)]),
            np.transpose(up_w, [*back, len(back)]),
            flow=False,
        )
        for ax_name in decorrelate:
            eigen = histops.decorrelate(eigen, pred, ax_name)
    return NonPromptPrediction(
        hist=pred, eigen=eigen, fakerate=fit, mt_weights=weights, n_invalid=n_invalid
    )
