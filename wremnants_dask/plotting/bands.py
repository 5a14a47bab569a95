"""Uncertainty bands of projected fit distributions, from the fit covariance.

The per-bin uncertainties stored in a fit result are ``sqrt(diag(J C J^T))``; summing their
squares over the bins of a projection ignores the (large, post-fit mostly negative) bin-to-bin
correlations. This module rebuilds ``J = d total yield / d parameters`` from the fit input the
result was made from and propagates ``P J C J^T P^T`` for any projection ``P``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class YieldJacobian:
    """Total yield per bin and its Jacobian for one fit input, at one parameter point."""

    total: np.ndarray  # [nbins]
    jac: np.ndarray  # [nbins, npar]
    channels: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> bin range

    def channel(self, name: str) -> YieldJacobian | None:
        if name not in self.channels:
            return None
        a, b = self.channels[name]
        return YieldJacobian(self.total[a:b], self.jac[a:b])


def yield_jacobian(
    fitinput: str | Path,
    x: np.ndarray,
    bb_mode: str | None,
    data: dict[str, np.ndarray] | None = None,
) -> YieldJacobian:
    """``J`` of the bin totals at parameters ``x`` (the fit's model, same BB mode). ``data``
    (post-fit: the counts fitted, per channel) makes BB-lite totals the profiled ones, as the
    fit result's post-fit yields are."""
    from wremnants_dask.fitting import read_fit_input
    from wremnants_dask.fitting.model import FitModel
    from wremnants_dask.fitting.yield_errors import jacobian_row_blocks

    fi, _ = read_fit_input(fitinput)
    model = FitModel(fi, bb_mode=bb_mode)
    if len(x) != model.static.npar:
        raise ValueError(f"{fitinput}: {model.static.npar} parameters, the fit result has {len(x)}")
    counts = None
    if data is not None:
        counts = np.zeros(model.static.nbins)
        for c in fi.channels:
            counts[c.start : c.stop] = np.asarray(data[c.name], float).reshape(-1)
    nu, blocks = jacobian_row_blocks(model, np.asarray(x, float), data=counts)
    npr = model.static.nproc
    jac = np.zeros((model.static.nbins, len(x)))
    for b0, b1, J in blocks:
        jac[b0:b1] = J.reshape(b1 - b0, npr, -1).sum(axis=1)
    total = np.asarray(nu).reshape(model.static.nbins, npr).sum(1)
    return YieldJacobian(total, jac, {c.name: (c.start, c.stop) for c in fi.channels})


def project(a: np.ndarray, keep: tuple[int, ...], ndim: int) -> np.ndarray:
    """Sum the first ``ndim`` axes of ``a`` over those not in ``keep``, the kept ones put in the
    order of ``keep`` (trailing axes, e.g. parameters, stay last)."""
    drop = tuple(i for i in range(ndim) if i not in keep)
    s = a.sum(axis=drop)
    order = sorted(keep)
    perm = [order.index(k) for k in keep] + list(range(len(keep), s.ndim))
    return s.transpose(perm)


def projected_errors(
    jac: np.ndarray, cov: np.ndarray, shape: tuple[int, ...], keep: tuple[int, ...]
) -> np.ndarray:
    """sqrt(diag(P J C J^T P^T)) for the projection of the channel bins (C order over
    ``shape``) onto the axes ``keep`` (in that order, flattened: all axes = unrolled)."""
    pj = project(jac.reshape(*shape, jac.shape[-1]), keep, len(shape)).reshape(-1, jac.shape[-1])
    return np.sqrt(np.clip(np.einsum("ij,jk,ik->i", pj, cov, pj), 0, None))


def prefit_covariance(fitinput: str | Path, npar: int) -> np.ndarray:
    """Diagonal prior covariance (Gaussian widths; Poisson-constrained: 1/sqrt(width)), as the
    fitter's pre-fit yield errors use; unconstrained and fixed parameters get zero."""
    from wremnants_dask.fitting import read_fit_input
    from wremnants_dask.fitting.fitinput import GAUSS, POISSON

    fi, _ = read_fit_input(fitinput)
    c = fi.param_constraint
    sig = np.where(c == GAUSS, fi.param_width, 0.0)
    with np.errstate(divide="ignore"):
        sig = np.where(c == POISSON, 1.0 / np.sqrt(fi.param_width), sig)
    sig = np.where(fi.param_fixed, 0.0, sig)
    if len(sig) != npar:
        raise ValueError(f"{fitinput}: {len(sig)} parameters, the fit result has {npar}")
    return np.diag(sig**2)


def find_fit_input(fit_meta: dict[str, Any], override: str | Path | None = None) -> Path | None:
    """The fit input a result was made from: ``override``, else the path the fit recorded
    (absolute, or relative to the fit's working directory or to the current one)."""
    if override is not None:
        return Path(override)
    files = fit_meta.get("input_files") or []
    if not files:
        return None
    p = Path(files[0])
    for cand in (p, Path(fit_meta.get("cwd") or ".") / p):
        if cand.exists():
            return cand
    return None
