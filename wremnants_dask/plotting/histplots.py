"""Plots of any histogram of a histmaker output: data vs the stacked, normalised prediction,
and the up/down (or all) entries of a systematic variation over the nominal.

Samples are normalised (xsec x data luminosity / sum of generator weights) and grouped into
processes exactly as the fit setup does (``fitsetup.setup.open_samples``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hist
import numpy as np

from wremnants_dask.plotting import draw, plotlog
from wremnants_dask.plotting.axes import axis_info


class PlotInputError(ValueError):
    """Bad plot request (names the file, the histogram or the axis)."""


def parse_selection(items: Sequence[str]) -> dict[str, str]:
    """``["passIso=1", "eta=-1:1"]`` -> {"passIso": "1", "eta": "-1:1"}."""
    out = {}
    for it in items:
        if "=" not in it:
            raise PlotInputError(f"--select {it!r}: expected AXIS=VALUE")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def parse_rebin(items: Sequence[str]) -> dict[str, int | list[float]]:
    """``["pt=2", "eta=-2.4,-1,0,1,2.4"]``: a factor or new edges per axis."""
    out: dict[str, int | list[float]] = {}
    for it in items:
        if "=" not in it:
            raise PlotInputError(f"--rebin {it!r}: expected AXIS=FACTOR or AXIS=E0,E1,...")
        k, v = it.split("=", 1)
        out[k] = [float(x) for x in v.split(",")] if "," in v else int(v)
    return out


def selection_tag(select: Mapping[str, str]) -> str:
    """File-name part for a selection: ``{"passIso": "1"}`` -> ``_passIso1``."""
    return "".join("_" + re.sub(r"[^A-Za-z0-9.-]+", "", f"{k}{v}") for k, v in select.items())


def _select_one(h: hist.Hist, name: str, value: str, where: str) -> hist.Hist:
    """Select (and drop) axis ``name``: a bool, a bin index, a category, or ``lo:hi`` values
    (summed over the bins in between); on a category axis ``i:j`` keeps bins i..j-1 (the axis
    stays, e.g. to show a few entries of a variation)."""
    if name not in h.axes.name:
        raise PlotInputError(f"{where}: no axis {name!r} (axes: {list(h.axes.name)})")
    ax = h.axes[name]
    if isinstance(ax, hist.axis.Boolean):
        if value.lower() not in ("0", "1", "true", "false"):
            raise PlotInputError(f"{where}: axis {name!r} is boolean, got {value!r}")
        return h[{name: hist.loc(value.lower() in ("1", "true"))}]
    if ":" in value and not ax.traits.continuous and not isinstance(ax, hist.axis.Integer):
        try:
            i, j = (int(x) if x else None for x in value.split(":"))
        except ValueError as err:
            raise PlotInputError(f"{where}: axis {name!r}: bad bin range {value!r}") from err
        return h[{name: slice(i, j)}]
    if ":" in value:
        lo, hi = (float(x) if x else None for x in value.split(":"))
        sl = slice(
            hist.loc(lo) if lo is not None else None, hist.loc(hi) if hi is not None else None, sum
        )
        return h[{name: sl}]
    if isinstance(ax, hist.axis.StrCategory):
        if value not in list(ax):
            raise PlotInputError(f"{where}: axis {name!r} has no category {value!r}")
        return h[{name: hist.loc(value)}]
    try:
        i = int(value)
    except ValueError as err:
        raise PlotInputError(f"{where}: axis {name!r}: bad selection {value!r}") from err
    if not -len(ax) <= i < len(ax):
        raise PlotInputError(f"{where}: bin {i} out of range for axis {name!r} ({len(ax)} bins)")
    return h[{name: i}]


def prepare(
    h: hist.Hist,
    axes: Sequence[str],
    select: Mapping[str, str],
    rebin: Mapping[str, int | list[float]],
    where: str,
    keep_extra: Sequence[str] = (),
) -> hist.Hist:
    """Select, rebin, then project onto ``axes`` (+ ``keep_extra``, e.g. variation axes)."""
    from wremnants_dask.fitsetup import histops

    for name, value in select.items():
        h = _select_one(h, name, value, where)
    for name, r in rebin.items():
        if name not in h.axes.name:
            raise PlotInputError(f"{where}: --rebin: no axis {name!r} (axes: {list(h.axes.name)})")
        try:
            h = histops.rebin(h, name, **({"factor": r} if isinstance(r, int) else {"edges": r}))
        except (ValueError, TypeError) as err:
            raise PlotInputError(f"{where}: --rebin {name}: {err}") from err
    for name in axes:
        if name not in h.axes.name:
            raise PlotInputError(f"{where}: no axis {name!r} (axes: {list(h.axes.name)})")
    return h.project(*axes, *keep_extra)


def _flat(h: hist.Hist, n_axes: int) -> tuple[np.ndarray, np.ndarray]:
    """Values and variances flattened over the first ``n_axes`` axes (C order)."""
    v = h.values()
    var = h.variances()
    var = v if var is None else var
    shape = (-1, *v.shape[n_axes:])
    return v.reshape(shape), var.reshape(shape)


def _binning(h: hist.Hist, axes: Sequence[str]) -> tuple[np.ndarray, str, Any, list, list]:
    if len(axes) == 1:
        info = axis_info(h.axes[axes[0]])
        return info.edges, info.label, info.categories, [], []
    from wremnants_dask.plotting.report import _unrolled

    return _unrolled([axis_info(h.axes[a]) for a in axes])


def open_samples(path: Path) -> Any:
    from wremnants_dask.fitsetup.setup import SetupError
    from wremnants_dask.fitsetup.setup import open_samples as _open
    from wremnants_dask.histograms.histio import HistFile

    hf = HistFile(path)
    try:
        return hf, _open(hf)
    except SetupError as err:
        raise PlotInputError(str(err)) from err


def _check_hist(samples: Any, group: str, name: str, path: Path) -> None:
    have = {n for s in samples.groups[group] for n in samples.hf.names(s)}
    if name not in have:
        raise PlotInputError(f"{path}: no histogram {name!r} for {group!r} (has: {sorted(have)})")


def hist_plot(
    path: Path,
    outdir: Path,
    *,
    name: str,
    axes: Sequence[str],
    select: Mapping[str, str],
    rebin: Mapping[str, int | list[float]],
    logy: bool = False,
    tag: str = "",
) -> Path:
    """Data vs stacked prediction of histogram ``name`` projected on ``axes`` (unrolled if
    several); the band is the simulation's statistical uncertainty."""
    hf, samples = open_samples(path)
    stack, err2, data, data_var = {}, 0.0, None, None
    hists = {}
    for group in samples.groups:
        _check_hist(samples, group, name, path)
        h = prepare(samples.group_sum(group, name), axes, select, rebin, f"{path}:{name}")
        hists[group] = h
        v, var = _flat(h, len(axes))
        if group == "Data":
            data, data_var = v, var
        else:
            stack[group] = v
            err2 = err2 + var
    edges, xlabel, cats, seps, minor = _binning(next(iter(hists.values())), axes)
    sel = ", ".join(f"{k}={v}" for k, v in select.items())
    fig = draw.stack_ratio(
        edges, stack, data=data, data_err=None if data_var is None else np.sqrt(data_var),
        total_err=np.sqrt(err2), band_label="MC stat. unc.", xlabel=xlabel, categories=cats,
        separators=seps, minor_separators=minor, lumi_fb=samples.lumi_pb / 1e3,
        title=f"{name}" + (f" ({sel})" if sel else ""), logy=logy,
        width=10.0 if len(axes) == 1 else 16.0,
    )  # fmt: skip
    out = outdir / f"hist_{name}_{'_'.join(axes)}{selection_tag(select)}{tag}.png"
    table = plotlog.yields_table(plotlog.hist_yields(hists))
    table += "(uncertainties: statistical, from the sums of squared weights)\n"
    log = plotlog.log_text(
        f"histogram {name} on {axes}, selection {dict(select)}, rebin {dict(rebin)}",
        input_file=path, input_metadata=hf.metadata, yields=table,
        notes=[f"normalised to {samples.lumi_pb:g} /pb; groups {samples.groups}"],
    )  # fmt: skip
    hf.close()
    return plotlog.save_plot(fig, out, log)


def _entry_label(h: hist.Hist, extra: Sequence[str], index: tuple[int, ...]) -> str:
    parts = []
    for ax_name, i in zip(extra, index):
        ax = h.axes[ax_name]
        if ax_name == "downUpVar" and len(ax) == 2:
            parts.append("Down" if i == 0 else "Up")
            continue
        info = axis_info(ax)
        lab = info.categories[i] if info.categories else f"{info.edges[i]:g}"
        parts.append(f"{ax_name}={lab}")
    return " ".join(parts)


def variation_plot(
    path: Path,
    outdir: Path,
    *,
    name: str,
    variation: str,
    process: str,
    axes: Sequence[str],
    select: Mapping[str, str],
    rebin: Mapping[str, int | list[float]],
    max_entries: int = 12,
) -> Path:
    """Every entry of the variation ``NAME_VARIATION`` (the axes it adds to the nominal, e.g.
    downUpVar, pdfVar; select among them with ``select``) over the nominal of ``process``."""
    hf, samples = open_samples(path)
    if process not in samples.groups:
        raise PlotInputError(f"{path}: no process {process!r} (has: {sorted(samples.groups)})")
    vname = f"{name}_{variation}"
    _check_hist(samples, process, name, path)
    _check_hist(samples, process, vname, path)
    where = f"{path}:{vname}"
    nom_h = samples.group_sum(process, name)
    var_h = samples.variation(process, name, variation)
    base_axes = set(nom_h.axes.name)
    unknown = [k for k in select if k not in var_h.axes.name]
    if unknown:
        raise PlotInputError(f"{where}: no axis {unknown} (axes: {list(var_h.axes.name)})")
    nom_sel = {k: v for k, v in select.items() if k in base_axes}
    nom = prepare(nom_h, axes, nom_sel, rebin, f"{path}:{name}")
    extra = [a for a in var_h.axes.name if a not in base_axes and a not in select]
    var_sel = {k: v for k, v in select.items() if k in var_h.axes.name}
    var = prepare(var_h, axes, var_sel, rebin, where, keep_extra=extra)
    v, _ = _flat(var, len(axes))
    n0, n0var = _flat(nom, len(axes))
    entries = list(np.ndindex(*v.shape[1:])) if extra else [()]
    if len(entries) > max_entries:
        raise PlotInputError(
            f"{where}: {len(entries)} entries over axes {extra}; choose some with --select "
            f"(e.g. {extra[0]}=0) or raise --max-entries"
        )
    varied = {_entry_label(var_h, extra, e) or variation: v[(slice(None), *e)] for e in entries}
    edges, xlabel, cats, _, _ = _binning(nom, axes)
    fig = draw.variations(
        edges, n0, varied, nominal_err=np.sqrt(n0var), xlabel=xlabel, categories=cats,
        rlabel=f"{process}: {variation}",
    )  # fmt: skip
    out = outdir / f"var_{name}_{variation}_{process}_{'_'.join(axes)}{selection_tag(select)}.png"
    rows = [("nominal", float(n0.sum()), float(np.sqrt(n0var.sum())))]
    rows += [(k, float(x.sum()), float("nan")) for k, x in varied.items()]
    log = plotlog.log_text(
        f"variation {vname} of {process} on {axes}, selection {dict(select)}",
        input_file=path, input_metadata=hf.metadata, yields=plotlog.yields_table(rows),
    )  # fmt: skip
    hf.close()
    return plotlog.save_plot(fig, out, log)
