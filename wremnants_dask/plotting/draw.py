"""Plots of fit inputs and results: stacked yields with data, pulls and impacts.

The functions take plain arrays so the same code draws pre-fit (from the fit input) and
post-fit (from the fit result) yields. Figures are written atomically (PNG).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from wremnants_dask.histograms.axes import axis_edges, axis_label, axis_name, axis_to_uhi
from wremnants_dask.utils.atomic import atomic_path

COLORS = {
    "Wmunu": "#e42536",
    "Zmumu": "#5790fc",
    "Ztautau": "#964a8b",
    "Top": "#f89c20",
    "Diboson": "#9c9ca1",
    "Nonprompt": "#7a21dd",
    "QCD": "#7a21dd",
}


def axis_dict(ax: Any) -> dict[str, Any]:
    """Serialise a hist axis the way fit inputs store their channel axes (UHI)."""
    return axis_to_uhi(ax)


def project(values: np.ndarray, axes: Sequence[dict[str, Any]], keep: str) -> np.ndarray:
    """Sum channel bins (flattened in C order over ``axes``) onto axis ``keep``.

    ``values`` has the channel bins first and any trailing dimensions (e.g. processes).
    """
    shape = tuple(len(axis_edges(a)) - 1 for a in axes)
    names = [axis_name(a) for a in axes]
    if keep not in names:
        raise KeyError(f"no axis {keep!r} in channel axes {names}")
    arr = values.reshape(shape + values.shape[1:])
    k = names.index(keep)
    other = tuple(i for i in range(len(shape)) if i != k)
    return arr.sum(axis=other)


def plot_stack(
    axes: Sequence[dict[str, Any]],
    yields: np.ndarray,
    processes: Sequence[str],
    data: np.ndarray | None,
    keep: str,
    path: str | Path,
    *,
    total_unc: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Stacked process yields with data and a data/prediction ratio panel, projected on ``keep``.

    ``yields`` is [nbins, nproc]; ``total_unc`` an optional per-bin (projected) uncertainty of
    the total prediction, drawn as a band.
    """
    edges = axis_edges(next(a for a in axes if axis_name(a) == keep))
    proj = project(yields, axes, keep)  # [n, nproc]
    total = proj.sum(axis=1)
    fig, (ax, rax) = plt.subplots(
        2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05}
    )
    order = np.argsort(proj.sum(axis=0))
    bottom = np.zeros_like(total)
    for i in order:
        name = processes[i]
        ax.stairs(
            bottom + proj[:, i],
            edges,
            baseline=bottom,
            fill=True,
            label=name,
            color=COLORS.get(name),
        )
        bottom = bottom + proj[:, i]
    centers = 0.5 * (edges[1:] + edges[:-1])
    if total_unc is not None:
        ax.stairs(
            total + total_unc,
            edges,
            baseline=total - total_unc,
            fill=True,
            color="k",
            alpha=0.2,
            label="uncertainty",
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(total > 0, total_unc / total, 0.0)
        rax.stairs(1 + rel, edges, baseline=1 - rel, fill=True, color="k", alpha=0.2)
    if data is not None:
        d = project(data, axes, keep)
        ax.errorbar(centers, d, yerr=np.sqrt(np.maximum(d, 0)), fmt="ko", ms=3, label="data")
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(total > 0, d / total, np.nan)
            rerr = np.where(total > 0, np.sqrt(np.maximum(d, 0)) / total, np.nan)
        rax.errorbar(centers, ratio, yerr=rerr, fmt="ko", ms=3)
    rax.axhline(1.0, color="gray", lw=0.8)
    rax.set_ylabel("data / pred.")
    rax.set_ylim(0.9, 1.1)
    rax.set_xlabel(next(axis_label(a) for a in axes if axis_name(a) == keep))
    ax.set_ylabel("events / bin")
    ax.set_title(title)
    ax.legend(ncol=2, fontsize="small")
    return _save(fig, path)


def plot_pulls(
    names: Sequence[str],
    pulls: np.ndarray,
    constraints: np.ndarray,
    path: str | Path,
    *,
    top: int = 40,
    title: str = "",
) -> Path:
    """The ``top`` parameters with the largest |pull|: pull and post-fit constraint (1 = none)."""
    pulls = np.asarray(pulls, float)
    idx = np.argsort(-np.abs(pulls))[:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(idx) + 1.5))
    y = np.arange(len(idx))
    ax.axvspan(-1, 1, color="#dddddd")
    ax.errorbar(pulls[idx], y, xerr=np.asarray(constraints, float)[idx], fmt="ko", ms=3)
    ax.set_yticks(y, [names[i] for i in idx], fontsize=6)
    ax.axvline(0, color="gray", lw=0.8)
    ax.set_xlabel(r"$(\hat\theta-\theta_0)/\Delta\theta$")
    ax.set_title(title)
    return _save(fig, path)


def plot_impacts(
    names: Sequence[str],
    impacts: np.ndarray,
    path: str | Path,
    *,
    unit: str = "",
    top: int = 30,
    title: str = "",
) -> Path:
    """Horizontal bars of the largest impacts (e.g. on the W mass, grouped or per parameter)."""
    impacts = np.asarray(impacts, float)
    idx = np.argsort(np.abs(impacts))[-top:]
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(idx) + 1.5))
    y = np.arange(len(idx))
    ax.barh(y, impacts[idx], color="#5790fc")
    ax.set_yticks(y, [names[i] for i in idx], fontsize=7)
    ax.set_xlabel(f"impact {unit}".strip())
    ax.set_title(title)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
