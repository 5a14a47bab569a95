"""Drawing functions (matplotlib + mplhep, CMS style). They take plain arrays and return the
figure; writing it (atomically, with its log) is ``plotlog.save_plot``'s job."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mplhep as hep
import numpy as np

COLORS = {
    "Wmunu": "#e42536",
    "Zmumu": "#5790fc",
    "Ztautau": "#964a8b",
    "Top": "#f89c20",
    "Diboson": "#9c9ca1",
    "Nonprompt": "#7a21dd",
    "QCD": "#7a21dd",
}
_EXTRA = ["#92dadd", "#a96b59", "#b9ac70", "#717581", "#e76300", "#3f90da"]
#: "Work in progress": the samples are synthetic or the calibration is not final
CMS_TEXT = "Work in progress"

hep.style.use("CMS")


def color(name: str, k: int = 0) -> str:
    return COLORS.get(name, _EXTRA[k % len(_EXTRA)])


def cms_label(
    ax: Any, *, lumi_fb: float | None = None, data: bool = True, rlabel: str = ""
) -> None:
    """The CMS label with the luminosity (13 TeV) or a free right-hand text."""
    kw: dict[str, Any] = {"ax": ax, "data": data, "text": CMS_TEXT, "fontsize": 16}
    if rlabel:
        kw["rlabel"] = rlabel
    elif lumi_fb is not None:
        kw["rlabel"] = f"{lumi_text(lumi_fb)} (13 TeV)"
    else:
        kw["com"] = 13
    hep.cms.label(**kw)


def lumi_text(lumi_fb: float) -> str:
    """The luminosity in the unit CMS would print: fb^-1 from 1 fb^-1 up, pb^-1 below (a
    reduced sample of 1 pb^-1 reads "1 pb^-1", not "0.001 fb^-1")."""
    value, unit = (lumi_fb, "fb") if lumi_fb >= 1 else (lumi_fb * 1e3, "pb")
    digits = 1 if value >= 10 else 3
    return f"{round(value, digits):g} $\\mathrm{{{unit}^{{-1}}}}$"


def ratio_limits(
    ratio: np.ndarray,
    err: np.ndarray,
    band: np.ndarray | None = None,
    pad: float = 0.15,
    total: np.ndarray | None = None,
) -> tuple[float, float]:
    """A ratio-panel range that holds every finite point with its error bar (and the band).

    Bins whose prediction is below 1% of the median bin (e.g. bins floored to 1e-3 events)
    are left out: their ratios say nothing and would squeeze every other point flat. With more
    than 100 points (unrolled) it holds the 5th to 95th percentile of the ratios (within
    [0, 2]) plus the median error bar; the caller marks the points outside."""
    if total is not None and len(ratio):
        pos = total[total > 0]
        keep = total >= 0.01 * (np.median(pos) if len(pos) else 0.0)
        ratio, err = ratio[keep], err[keep]
        band = None if band is None else band[keep]
    ok = np.isfinite(ratio) & np.isfinite(err)
    if len(ratio) > 100 and ok.any():
        # many bins (unrolled): 98% of the central values with a typical error bar, so that
        # few-event bins with huge error bars do not squeeze the rest flat
        lo_r, hi_r = np.clip(np.percentile(ratio[ok], [5.0, 95.0]), 0.0, 2.0)
        e = min(float(np.median(err[ok])), 0.5)
        ratio, err = np.array([lo_r, hi_r]), np.array([e, e])
        band = None if band is None else np.array([np.median(band)])
    lo = [ratio - err]
    hi = [ratio + err]
    if band is not None:
        lo.append(1 - band)
        hi.append(1 + band)
    lo_a, hi_a = np.concatenate(lo), np.concatenate(hi)
    ok = np.isfinite(lo_a) & np.isfinite(hi_a)
    if not ok.any():
        return 0.5, 1.5
    a = min(float(lo_a[ok].min()), 1.0)
    b = max(float(hi_a[ok].max()), 1.0)
    d = max(b - a, 1e-3)
    return a - pad * d, b + pad * d


def stack_ratio(
    edges: np.ndarray,
    stack: Mapping[str, np.ndarray],
    *,
    data: np.ndarray | None,
    data_err: np.ndarray | None = None,
    total_err: np.ndarray | None = None,
    band_label: str = "Uncertainty",
    xlabel: str = "",
    categories: Sequence[str] | None = None,
    separators: Sequence[tuple[float, str]] = (),
    minor_separators: Sequence[float] = (),
    lumi_fb: float | None = None,
    title: str = "",
    logy: bool = False,
    width: float = 10.0,
) -> Any:
    """Stacked prediction (largest on top) with data and a data/prediction ratio panel.

    ``total_err`` is the uncertainty of the total prediction per bin (from the covariance),
    drawn as a hatched band and, relative, in the ratio. ``separators`` are (x, label) lines of
    an unrolled distribution."""
    fig, (ax, rax) = plt.subplots(
        2, 1, figsize=(width, 9), sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05}
    )
    names = sorted(stack, key=lambda n: float(np.sum(stack[n])))
    total = np.sum([stack[n] for n in names], axis=0) if names else np.zeros(len(edges) - 1)
    hep.histplot(
        [stack[n] for n in names],
        edges,
        stack=True,
        histtype="fill",
        label=names,
        color=[color(n, k) for k, n in enumerate(names)],
        ax=ax,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = None if total_err is None else np.where(total > 0, total_err / total, 0.0)
    if total_err is not None:
        ax.stairs(
            total + total_err, edges, baseline=total - total_err, fill=True, hatch="///",
            facecolor="none", edgecolor="k", linewidth=0, alpha=0.6, label=band_label,
        )  # fmt: skip
        rax.stairs(1 + rel, edges, baseline=1 - rel, fill=True, color="k", alpha=0.2)
    centers = 0.5 * (edges[1:] + edges[:-1])
    ratio = rerr = np.array([])
    if data is not None:
        derr = np.sqrt(np.maximum(data, 0)) if data_err is None else data_err
        ms, lw = (4, 1) if len(centers) < 200 else (1.2, 0.4)
        ax.errorbar(centers, data, yerr=derr, fmt="ko", ms=ms, lw=lw, label="Data")
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(total > 0, data / total, np.nan)
            rerr = np.where(total > 0, derr / total, np.nan)
        rax.errorbar(centers, ratio, yerr=rerr, fmt="ko", ms=ms, lw=lw)
    rax.axhline(1.0, color="gray", lw=0.8)
    rlo, rhi = ratio_limits(ratio, rerr, rel, total=total if data is not None else None)
    rax.set_ylim(rlo, rhi)
    if len(ratio):  # points off the panel: triangles at its edge
        d = 0.04 * (rhi - rlo)
        for sel, y, m in ((ratio > rhi, rhi - d, "^"), (ratio < rlo, rlo + d, "v")):
            if np.any(sel):
                rax.plot(centers[sel], np.full(int(sel.sum()), y), m, color="#e42536", ms=4)
    rax.set_ylabel("Data / pred.", fontsize=16)
    rax.set_xlabel(xlabel)
    ymax = float(np.nanmax(np.concatenate([total, data if data is not None else total]))) or 1.0
    if logy:
        ax.set_yscale("log")
        ax.set_ylim(max(ymax * 1e-5, 0.1), ymax * 50)
    else:
        ax.set_ylim(0, ymax * (1.55 if not separators else 1.7))
    ax.set_ylabel("Events / bin")
    for x, lab in separators:
        for a in (ax, rax):
            a.axvline(x, color="k", lw=0.8, ls="--")
        if lab:
            ax.text(
                x,
                0.62,
                lab,
                fontsize=11,
                ha="left",
                va="bottom",
                transform=ax.get_xaxis_transform(),
            )
    for x in minor_separators:
        ax.axvline(x, color="gray", lw=0.3, ls=":")
    if categories is not None:
        rax.set_xticks(centers, categories)
    ax.legend(ncol=2, fontsize=13, loc="upper right")
    if title:
        ax.text(0.03, 0.93, title, transform=ax.transAxes, fontsize=14, va="top")
    cms_label(ax, lumi_fb=lumi_fb, data=data is not None)
    ax.set_xlim(edges[0], edges[-1])
    return fig


def pulls_page(
    names: Sequence[str],
    pulls: np.ndarray,
    constraints: np.ndarray,
    *,
    title: str = "",
) -> Any:
    """Pulls (points) with post-fit constraints (error bars) of one page of parameters, in the
    order given; the +-1 and +-2 bands are the prior."""
    n = len(names)
    fig, ax = plt.subplots(figsize=(8, 0.26 * n + 2.2))
    y = np.arange(n)[::-1]
    ax.axvspan(-2, 2, color="#fff2ae")
    ax.axvspan(-1, 1, color="#b3e2cd")
    ax.axvline(0, color="gray", lw=0.8)
    ax.errorbar(pulls, y, xerr=constraints, fmt="ko", ms=4, lw=1.2)
    ax.set_yticks(y, names, fontsize=9)
    ax.set_ylim(-0.7, n - 0.3)
    lim = max(2.5, float(np.nanmax(np.abs(pulls) + np.nan_to_num(constraints))) * 1.1 if n else 2.5)
    ax.set_xlim(-lim, lim)
    ax.set_xlabel(r"$(\hat{\theta}-\theta_0)/\Delta\theta$")
    ax.tick_params(axis="y", which="minor", left=False, right=False)
    cms_label(ax, rlabel=title)
    return fig


def impact_ranking(
    names: Sequence[str],
    post: np.ndarray,
    pre: np.ndarray | None,
    pulls: np.ndarray,
    constraints: np.ndarray,
    *,
    poi_label: str,
    unit: str = "",
    rlabel: str = "",
) -> Any:
    """The classic ranking plot: impacts on the POI (left, post-fit filled, pre-fit open) and
    the pulls with constraints (right) of the parameters given, largest impact on top."""
    n = len(names)
    fig, (ax, pax) = plt.subplots(
        1, 2, figsize=(13, 0.3 * n + 2.5), sharey=True, gridspec_kw={"wspace": 0.05}
    )
    y = np.arange(n)[::-1]
    ax.barh(y, post, color="#5790fc", height=0.7, label="Post-fit impact")
    if pre is not None:
        ax.barh(y, pre, fill=False, edgecolor="#e42536", height=0.7, lw=1.2, label="Pre-fit impact")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, names, fontsize=9)
    ax.tick_params(axis="y", which="minor", left=False, right=False)
    ax.set_ylim(-0.7, n + 0.8)
    ax.set_xlabel(f"Impact on {poi_label} {unit}".strip(), fontsize=16)
    ax.legend(fontsize=11, loc="upper left", ncol=2)
    pax.axvspan(-1, 1, color="#b3e2cd")
    pax.axvline(0, color="gray", lw=0.8)
    pax.errorbar(pulls, y, xerr=constraints, fmt="ko", ms=4, lw=1.2)
    lim = max(
        2.0, float(np.nanmax(np.abs(np.nan_to_num(pulls)) + np.nan_to_num(constraints)) * 1.1)
    )
    pax.set_xlim(-lim, lim)
    pax.set_xlabel(r"$(\hat{\theta}-\theta_0)/\Delta\theta$", fontsize=16)
    cms_label(ax, rlabel="")
    if rlabel:
        pax.set_title(rlabel, fontsize=13, loc="right")
    return fig


def grouped_impacts(
    groups: Sequence[str], values: np.ndarray, *, unit: str, total: float, stat: float, rlabel: str
) -> Any:
    """Bar chart of the grouped impacts (largest on top), with the total and statistical rows."""
    order = np.argsort(values)
    labels = [groups[i] for i in order] + ["Statistical", "Total"]
    vals = np.concatenate([np.asarray(values)[order], [stat, total]])
    colors = ["#5790fc"] * len(order) + ["#9c9ca1", "#e42536"]
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(labels) + 2))
    y = np.arange(len(labels))
    ax.barh(y, vals, color=colors, height=0.7)
    for yy, v in zip(y, vals):
        ax.text(v + 0.01 * vals.max(), yy, f"{v:.2f}", va="center", fontsize=11)
    ax.set_yticks(y, labels, fontsize=12)
    ax.tick_params(axis="y", which="minor", left=False, right=False)
    ax.set_xlim(0, float(vals.max()) * 1.25 if vals.max() > 0 else 1)
    ax.set_xlabel(f"Uncertainty {unit}".strip())
    cms_label(ax, rlabel=rlabel)
    return fig


def correlation_matrix(names: Sequence[str], corr: np.ndarray, *, rlabel: str = "") -> Any:
    """Correlation matrix of the chosen parameters, values printed when they fit."""
    n = len(names)
    size = min(max(7.0, 0.35 * n + 3), 30)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Correlation")
    fs = 9 if n <= 30 else 6
    ax.set_xticks(range(n), names, rotation=90, fontsize=fs)
    ax.set_yticks(range(n), names, fontsize=fs)
    ax.tick_params(which="minor", bottom=False, top=False, left=False, right=False)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{corr[i, j]:.2f}", ha="center", va="center", fontsize=7)
    cms_label(ax, rlabel=rlabel)
    return fig


def crossings(x: np.ndarray, q: np.ndarray, level: float) -> list[float]:
    """Where the (linearly interpolated) curve ``q(x)`` crosses ``level``."""
    out = []
    for i in range(len(x) - 1):
        a, b = q[i] - level, q[i + 1] - level
        if a == 0:
            out.append(float(x[i]))
        elif a * b < 0:
            out.append(float(x[i] + (x[i + 1] - x[i]) * a / (a - b)))
    return out


def scan_1d(x: np.ndarray, q: np.ndarray, *, xlabel: str, rlabel: str = "") -> Any:
    """-2 Delta ln L along one parameter, the 1 and 4 levels and their crossings marked."""
    fig, ax = plt.subplots(figsize=(9, 7))
    ax.plot(x, q, "o-", color="#5790fc", ms=4)
    for level, txt in ((1.0, r"68% CL"), (4.0, r"95% CL")):
        ax.axhline(level, color="gray", ls="--", lw=0.8)
        ax.text(x[0], level, f" {txt}", va="bottom", fontsize=11, color="gray")
        for c in crossings(x, q, level):
            ax.axvline(c, color="#e42536", ls=":", lw=1)
            ax.annotate(f"{c:.4g}", (c, level), fontsize=10, rotation=90, va="bottom", ha="right")
    ax.set_ylim(0, max(float(np.nanmax(q)) * 1.1, 5))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(r"$-2\,\Delta\ln L$")
    cms_label(ax, rlabel=rlabel)
    return fig


def scan_2d(
    a: np.ndarray, b: np.ndarray, q: np.ndarray, *, xlabel: str, ylabel: str, rlabel: str = ""
) -> Any:
    """-2 Delta ln L over two parameters with the 68% and 95% contours (2.30, 5.99) and the
    minimum marked."""
    fig, ax = plt.subplots(figsize=(9.5, 8))
    m = ax.pcolormesh(a, b, q, shading="auto", cmap="viridis")
    fig.colorbar(m, ax=ax, label=r"$-2\,\Delta\ln L$")
    cs = ax.contour(a, b, q, levels=[2.30, 5.99], colors=["w", "#f89c20"], linewidths=1.5)
    ax.clabel(cs, fmt={2.30: "68%", 5.99: "95%"}, fontsize=10)
    k = np.unravel_index(np.nanargmin(q), q.shape)
    ax.plot(a[k], b[k], "w+", ms=14, mew=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    cms_label(ax, rlabel=rlabel)
    return fig


def variations(
    edges: np.ndarray,
    nominal: np.ndarray,
    varied: Mapping[str, np.ndarray],
    *,
    nominal_err: np.ndarray | None = None,
    xlabel: str = "",
    categories: Sequence[str] | None = None,
    rlabel: str = "",
) -> Any:
    """Nominal and varied distributions (top) and their ratio to the nominal (bottom)."""
    fig, (ax, rax) = plt.subplots(
        2, 1, figsize=(10, 9), sharex=True, gridspec_kw={"height_ratios": [2, 1.3], "hspace": 0.05}
    )
    hep.histplot(nominal, edges, ax=ax, color="k", label="Nominal", yerr=nominal_err)
    cmap = plt.get_cmap("tab10" if len(varied) <= 10 else "viridis")
    rmin, rmax = 1.0, 1.0
    for k, (name, v) in enumerate(varied.items()):
        c = cmap(k if len(varied) <= 10 else k / max(len(varied) - 1, 1))
        ls = "--" if name.endswith("Down") else "-"
        hep.histplot(v, edges, ax=ax, color=c, ls=ls, label=name)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(nominal != 0, v / nominal, np.nan)
        rax.stairs(r, edges, color=c, ls=ls, lw=1.5, baseline=None)
        if np.isfinite(r).any():
            rmin, rmax = min(rmin, np.nanmin(r)), max(rmax, np.nanmax(r))
    if nominal_err is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(nominal > 0, nominal_err / nominal, 0.0)
        rax.stairs(1 + rel, edges, baseline=1 - rel, fill=True, color="k", alpha=0.15)
    rax.axhline(1, color="gray", lw=0.8)
    d = max(rmax - rmin, 1e-4)
    rax.set_ylim(rmin - 0.15 * d, rmax + 0.15 * d)
    rax.set_ylabel("Var. / nominal", fontsize=16)
    rax.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax.set_xlim(edges[0], edges[-1])
    rax.set_xlabel(xlabel)
    ax.set_ylabel("Events / bin")
    ax.set_ylim(0, float(np.max(nominal)) * 1.6 if np.max(nominal) > 0 else 1)
    ax.legend(fontsize=10, ncol=2 if len(varied) < 8 else 3, loc="upper right")
    if categories is not None:
        centers = 0.5 * (edges[1:] + edges[:-1])
        rax.set_xticks(centers, categories)
    cms_label(ax, data=False, rlabel=rlabel)
    return fig


def fakerate(
    edges: np.ndarray,
    centers: np.ndarray,
    measured: Mapping[str, tuple[np.ndarray, np.ndarray]],
    smooth: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    xlabel: str,
    rlabel: str = "",
) -> Any:
    """Measured fake rates (points) and the smoothed one (line) with its band."""
    fig, ax = plt.subplots(figsize=(10, 8))
    mid, lo, hi = smooth
    ax.stairs(
        hi, edges, baseline=lo, fill=True, color="#5790fc", alpha=0.35, label="Smoothed, 68% band"
    )
    ax.stairs(mid, edges, color="#5790fc", lw=2)
    for k, (label, (f, ferr)) in enumerate(measured.items()):
        ax.errorbar(
            centers,
            f,
            yerr=ferr,
            fmt="o",
            color=["k", "#e42536", "#964a8b"][k % 3],
            ms=5,
            label=f"Measured, {label}",
        )
    # the range holds the band and the significant points (error below half the value)
    pts = [
        np.asarray(f)[np.isfinite(f) & (np.asarray(e) < 0.5 * np.abs(f))]
        for f, e in measured.values()
    ]
    top = float(np.nanmax(np.concatenate([*pts, hi])))
    ax.set_ylim(0, top * 1.5 if np.isfinite(top) and top > 0 else 1)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Fake rate (pass / fail isolation)")
    ax.legend(fontsize=12, loc="upper right")
    cms_label(ax, rlabel=rlabel)
    return fig
