"""Every plot of a fit result, their logs, ``summary.json`` and the results page.

    python -m wremnants_dask.plot fit FITRESULTS.hdf5 -o DIR

Pre- and post-fit data vs stacked prediction (each axis projection and the unrolled
distribution) with covariance bands, the pulls and constraints of all parameters (paged), the
impact ranking, grouped impacts (table and bar chart), the correlation matrix of chosen
parameters, the likelihood scans the fit stored, interactive pulls and impacts, and the
boson-mass result (the POI converted with the fit setup recorded in the provenance chain).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from wremnants_dask.plotting import draw, interactive, plotlog, webpage
from wremnants_dask.plotting.axes import axis_info
from wremnants_dask.plotting.bands import (
    find_fit_input,
    prefit_covariance,
    project,
    projected_errors,
    yield_jacobian,
)
from wremnants_dask.utils.atomic import atomic_write_text


def find_stage(meta: dict[str, Any], stage: str) -> dict[str, Any] | None:
    """The provenance record of ``stage`` in the chain of inputs (depth first)."""
    for m in plotlog.metadata_chain(meta):
        if m.get("stage") == stage:
            return dict(m)
    return None


def _names(arr: np.ndarray) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in arr]


def mass_result(fitres: h5py.File) -> dict[str, Any] | None:
    """Boson-mass result (MeV) from the mass POI, with the grouped impacts in MeV."""
    meta = json.loads(fitres.attrs["metadata"])
    setup_meta = find_stage(meta, "setup_fit")
    if setup_meta is None or "setup" not in setup_meta:
        return None
    setup = setup_meta["setup"]
    params = fitres["parameters"][()]
    names = _names(params["name"])
    pname = setup.get("mass_param")
    if pname not in names:
        return None
    i = names.index(pname)
    step = float(setup["mass_step_mev"])
    out: dict[str, Any] = {
        "parameter": pname,
        "shift_mev": float(params["value"][i]) * step,
        "uncertainty_mev": float(params["error"][i]) * step,
        "reference_mev": setup.get("mass_reference_gev", float("nan")) * 1e3,
    }
    out["mass_mev"] = out["reference_mev"] + out["shift_mev"]
    if "impacts" in fitres and pname in json.loads(fitres["impacts"].attrs["pois"]):
        k = list(json.loads(fitres["impacts"].attrs["pois"])).index(pname)
        groups = json.loads(fitres["impacts"].attrs["groups"])
        grouped = fitres["impacts/grouped"][k] * step
        out["impacts_mev"] = {g: float(v) for g, v in zip(groups, grouped)}
        out["stat_mev"] = float(fitres["impacts/stat"][k] * step)
    if "global_impacts" in fitres and pname in json.loads(fitres["global_impacts"].attrs["pois"]):
        g = fitres["global_impacts"]
        k = list(json.loads(g.attrs["pois"])).index(pname)
        vals = dict(zip(json.loads(g.attrs["groups"]), g["grouped"][k] * step))
        vals["binByBinStat"] = g["binByBinStat"][k] * step
        vals["stat"] = g["stat"][k] * step
        out["global_impacts_mev"] = {n: float(v) for n, v in vals.items()}
    return out


@dataclass
class FitPlots:
    """Options of the fit plots (the CLI's)."""

    fitinput: str | None = None  # override the fit input recorded in the result's metadata
    corr_params: Sequence[str] = ()  # regular expressions; default: POIs + top-ranked impacts
    ranking_top: int = 30
    page_size: int = 40


class _Writer:
    """Saves plots with their logs into one folder and remembers what it wrote."""

    def __init__(self, outdir: Path, input_file: Path, meta: dict[str, Any]) -> None:
        self.outdir, self.input_file, self.meta = outdir, input_file, meta
        self.written: list[str] = []

    def save(self, fig: Any, name: str, what: str, yields: str = "", notes: Sequence[str] = ()):
        log = plotlog.log_text(
            what, input_file=self.input_file, input_metadata=self.meta, yields=yields, notes=notes
        )
        plotlog.save_plot(fig, self.outdir / f"{name}.png", log)
        self.written.append(f"{name}.png")


def _lumi_fb(meta: dict[str, Any]) -> float | None:
    s = find_stage(meta, "setup_fit")
    lumi = (s or {}).get("setup", {}).get("lumi_pb")
    return None if lumi is None else float(lumi) / 1e3


def _bands(path: Path, f: h5py.File, meta: dict[str, Any], opts: FitPlots) -> dict[str, Any]:
    """Jacobians and covariances per stage for the projected bands ({} if no fit input)."""
    fit_input = find_fit_input(meta, opts.fitinput)
    if fit_input is None or not fit_input.exists():
        return {}
    p = f["parameters"][()]
    bb = (meta.get("args") or {}).get("bb")
    out: dict[str, Any] = {"fitinput": str(fit_input)}
    out["prefit"] = (
        yield_jacobian(fit_input, p["prefit"], bb),
        prefit_covariance(fit_input, len(p)),
    )
    if "covariance" in f:
        post = f["hists/postfit"]
        data = None  # no data stored: the bands of the unprofiled prediction
        if all("data" in g for g in post.values()):
            data = {ch: g["data/values"][()] for ch, g in post.items()}
        jac = yield_jacobian(fit_input, p["value"], bb, data=data)
        out["postfit"] = (jac, f["covariance"][()])
    return out


def stack_plots(
    w: _Writer, f: h5py.File, stage: str, bands: dict[str, Any], lumi_fb: float | None
) -> None:
    """Data vs stacked prediction of every channel: each axis and the unrolled distribution."""
    from wremnants_dask.fitting.output import read_hist

    for ch, g in f[f"hists/{stage}"].items():
        hs = {name: read_hist(g[name]) for name in g}
        procs = [p for p in hs if p not in ("data", "total")]
        infos = [axis_info(a) for a in hs["total"].axes]
        shape = hs["total"].values().shape
        yj = cov = None
        if stage in bands:
            jac, cov = bands[stage]
            yj = jac.channel(ch)
            if yj is not None and len(yj.total) != int(np.prod(shape)):
                yj = None  # another layout than the result's: fall back to per-bin errors
        nd = len(infos)
        # unrolled: the axis with the fewest bins outermost (blocks), the finest innermost
        unroll = tuple(sorted(range(nd), key=lambda i: len(infos[i].edges)))
        views = [(k,) for k in range(nd)] + ([unroll] if nd > 1 else [])
        for keep in views:

            def proj(a: np.ndarray, keep=keep, nd=nd) -> np.ndarray:
                return project(a, keep, nd).reshape(-1)

            stack = {p: proj(hs[p].values()) for p in procs}
            data = proj(hs["data"].values()) if "data" in hs else None
            if yj is not None:
                err = projected_errors(yj.jac, cov, shape, keep)
                total_all = float(projected_errors(yj.jac, cov, shape, ())[0])
                note = "band: sqrt(diag(P J C J^T P^T)), J from the fit input " + bands["fitinput"]
            else:
                err = np.sqrt(proj(hs["total"].variances()))
                total_all = float(np.sqrt(hs["total"].variances().sum()))
                note = "band: per-bin errors summed in quadrature (fit input not found: "
                note += "bin-to-bin correlations ignored)"
            rows = plotlog.hist_yields({p: hs[p] for p in procs})
            rows.append(("total prediction", float(hs["total"].values().sum()), total_all))
            if "data" in hs:
                rows += plotlog.hist_yields({"data": hs["data"]})
            table = plotlog.yields_table(rows)
            table += "(process rows: per-bin errors in quadrature; total: full covariance)\n"
            if len(keep) > 1:
                edges, xlabel, cats, seps, minor = _unrolled([infos[i] for i in keep])
                name = f"{stage}_{ch}_unrolled"
            else:
                info = infos[keep[0]]
                edges, xlabel, cats, seps, minor = info.edges, info.label, info.categories, [], []
                name = f"{stage}_{ch}_{info.name}"
            fig = draw.stack_ratio(
                edges, stack, data=data, total_err=err, xlabel=xlabel, categories=cats,
                separators=seps, minor_separators=minor, lumi_fb=lumi_fb,
                title=f"{ch}, {stage.replace('fit', '-fit')}",
                band_label=f"{'Post' if stage == 'postfit' else 'Pre'}-fit unc.",
                width=10.0 if len(keep) == 1 else 16.0,
            )  # fmt: skip
            w.save(fig, name, f"{stage} data vs prediction, channel {ch}, {name}", table, [note])


def _unrolled(infos: Sequence[Any]) -> tuple[np.ndarray, str, None, list, list]:
    """Bin-index edges of the flattened distribution (C order over the axes), separators at
    each bin of the outermost axis (labelled) and of the next one (dotted)."""
    shape = [len(i.edges) - 1 for i in infos]
    n = int(np.prod(shape))
    edges = np.arange(n + 1, dtype=float)
    inner = int(np.prod(shape[1:]))
    outer = infos[0]
    seps = []
    label_every = max(1, shape[0] // 12)
    for k in range(shape[0]):
        lab = ""
        if k % label_every == 0:
            lab = (
                f"{outer.name}={outer.categories[k]}"
                if outer.categories
                else f"{outer.name} [{outer.edges[k]:g}, {outer.edges[k + 1]:g}]"
            )
        seps.append((float(k * inner), lab))
    minor = []
    if len(shape) > 2:
        step = int(np.prod(shape[2:]))
        minor = [float(x) for x in range(step, n, step) if x % inner]
        if len(minor) > 400:
            minor = []
    names = " x ".join(i.name for i in infos)
    return edges, f"Unrolled bin ({names})", None, seps, minor


def pull_plots(w: _Writer, names: list[str], p: np.ndarray, opts: FitPlots) -> list[int]:
    """Pulls and constraints of every constrained parameter, ``page_size`` per page."""
    idx = np.flatnonzero(np.isfinite(p["pull"]))
    pages = max(1, int(np.ceil(len(idx) / opts.page_size)))
    for k in range(pages):
        sel = idx[k * opts.page_size : (k + 1) * opts.page_size]
        fig = draw.pulls_page(
            [names[i] for i in sel], p["pull"][sel], p["constraint"][sel],
            title=f"Pulls {k + 1}/{pages}",
        )  # fmt: skip
        rows = "\n".join(
            f"{names[i]:30s} pull {p['pull'][i]:+.6f} constraint {p['constraint'][i]:.6f}"
            for i in sel
        )
        w.save(fig, f"pulls_{k + 1:02d}", f"pulls page {k + 1} of {pages}", "", [rows])
    return [int(i) for i in idx]


def impact_plots(w: _Writer, f: h5py.File, names: list[str], p: np.ndarray, opts: FitPlots,
                 mass: dict[str, Any] | None) -> list[str]:  # fmt: skip
    """Ranking plot per POI (post-fit impacts cov(poi,k)/sigma_k; pre-fit ones the same
    shift for the prior width, i.e. post / constraint) and the grouped impacts."""
    if "impacts" not in f:
        return []
    g = f["impacts"]
    pois = json.loads(g.attrs["pois"])
    groups = json.loads(g.attrs["groups"])
    top_names: list[str] = []
    for k, poi in enumerate(pois):
        scale, unit, label = 1.0, "", poi
        if mass is not None and mass["parameter"] == poi:
            scale = mass["uncertainty_mev"] / float(p["error"][names.index(poi)])
            unit, label = "(MeV)", f"m{poi[9]}" if poi.startswith("massShift") else poi
        imp = g["impacts"][k] * scale
        cand = [i for i in range(len(names)) if names[i] not in pois and imp[i] != 0]
        order = sorted(cand, key=lambda i: -abs(imp[i]))[: opts.ranking_top]
        top_names += [names[i] for i in order[:20]]
        with np.errstate(divide="ignore", invalid="ignore"):
            pre = np.where(p["constraint"] > 0, imp / p["constraint"], np.nan)
        sel = np.array(order, int)
        # unconstrained parameters (no prior): no pre-fit impact, no pull (nan: not drawn)
        fig = draw.impact_ranking(
            [names[i] + ("" if np.isfinite(p["pull"][i]) else " (free)") for i in sel],
            imp[sel], pre[sel], p["pull"][sel], p["constraint"][sel],
            poi_label=label, unit=unit, rlabel=f"{poi}: top {len(sel)} of {len(cand)}",
        )  # fmt: skip
        rows = (
            plotlog.yields_table(
                [(names[i], float(imp[i]), float(pre[i])) for i in sel],
                unit=f"impact {unit}, pre-fit",
            )
            .replace("yield", "post-fit")
            .replace("uncertainty", "pre-fit")
        )
        w.save(fig, f"impacts_ranking_{poi}", f"impact ranking on {poi}", rows)
        grouped = g["grouped"][k] * scale
        stat, total = float(g["stat"][k] * scale), float(g["total"][k] * scale)
        fig = draw.grouped_impacts(
            groups, grouped, unit=unit, total=total, stat=stat, rlabel=f"{label} grouped impacts"
        )
        table = grouped_table(groups, grouped, stat, total, unit)
        w.save(fig, f"impacts_grouped_{poi}", f"grouped impacts on {poi}", table)
        atomic_write_text(w.outdir / f"impacts_grouped_{poi}.txt", table)
    return top_names


def global_impact_plots(
    w: _Writer, f: h5py.File, names: list[str], p: np.ndarray, mass: dict[str, Any] | None
) -> None:
    """Grouped global impacts per POI (``fit --global-impacts``): the groups, with the MC
    statistics as one more, partition the POI variance; chart and table as the others."""
    if "global_impacts" not in f:
        return
    g = f["global_impacts"]
    groups = json.loads(g.attrs["groups"])
    for k, poi in enumerate(json.loads(g.attrs["pois"])):
        scale, unit, label = 1.0, "", poi
        if mass is not None and mass["parameter"] == poi:
            scale = mass["uncertainty_mev"] / float(p["error"][names.index(poi)])
            unit, label = "(MeV)", f"m{poi[9]}" if poi.startswith("massShift") else poi
        grouped = np.append(g["grouped"][k], g["binByBinStat"][k]) * scale
        all_groups = [*groups, "binByBinStat"]
        stat, total = float(g["stat"][k] * scale), float(g["total"][k] * scale)
        fig = draw.grouped_impacts(
            all_groups, grouped, unit=unit, total=total, stat=stat,
            rlabel=f"{label} global impacts",
        )  # fmt: skip
        table = grouped_table(all_groups, grouped, stat, total, unit)
        w.save(fig, f"impacts_global_grouped_{poi}", f"grouped global impacts on {poi}", table)
        atomic_write_text(w.outdir / f"impacts_global_grouped_{poi}.txt", table)


def grouped_table(groups: Sequence[str], vals: np.ndarray, stat: float, total: float, unit: str):
    rows = sorted(zip(groups, vals), key=lambda kv: -kv[1])
    out = [f"{'group':20s} {'impact ' + unit:>16s}"]
    out += [f"{gname:20s} {v:16.4f}" for gname, v in rows]
    out += [f"{'stat':20s} {stat:16.4f}", f"{'total':20s} {total:16.4f}"]
    return "\n".join(out) + "\n"


def correlation_plot(w: _Writer, f: h5py.File, names: list[str], chosen: list[str]) -> None:
    if "correlation" not in f or not chosen:
        return
    idx = [names.index(n) for n in dict.fromkeys(chosen) if n in names]
    corr = f["correlation"][()][np.ix_(idx, idx)]
    fig = draw.correlation_matrix([names[i] for i in idx], corr, rlabel="Post-fit correlations")
    w.save(fig, "correlation", f"correlation matrix of {len(idx)} parameters", "",
           [", ".join(names[i] for i in idx)])  # fmt: skip


def scan_plots(w: _Writer, f: h5py.File) -> None:
    if "scans" not in f:
        return
    for key, ds in f["scans"].items():
        arr = ds[()]
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
        if arr.ndim == 2:
            fig = draw.scan_1d(arr[0], arr[1], xlabel=key, rlabel="Likelihood scan")
            cr = {lv: draw.crossings(arr[0], arr[1], lv) for lv in (1.0, 4.0)}
            w.save(fig, f"scan_{safe}", f"1D scan of {key}", "", [f"crossings {cr}"])
        else:
            a, b = key.split(",")
            fig = draw.scan_2d(arr[0], arr[1], arr[2], xlabel=a, ylabel=b, rlabel="2D scan")
            w.save(fig, f"scan2d_{safe}", f"2D scan of {key}")


def make_plots(path: Path, outdir: Path, opts: FitPlots | None = None) -> dict[str, Any]:
    """Every plot of one fit result; returns the summary (also written by the CLI)."""
    opts = opts or FitPlots()
    outdir.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "r") as f:
        meta = json.loads(f.attrs["metadata"])
        w = _Writer(outdir, path, meta)
        bands = _bands(path, f, meta, opts)
        lumi = _lumi_fb(meta)
        for stage in ("prefit", "postfit"):
            if f"hists/{stage}" in f:
                stack_plots(w, f, stage, bands, lumi)
        p = f["parameters"][()]
        names = _names(p["name"])
        pull_plots(w, names, p, opts)
        mass = mass_result(f)
        top = impact_plots(w, f, names, p, opts, mass)
        global_impact_plots(w, f, names, p, mass)
        pois = json.loads(f["impacts"].attrs["pois"]) if "impacts" in f else []
        if opts.corr_params:
            pats = [re.compile(r) for r in opts.corr_params]
            chosen = [n for n in names if any(r.fullmatch(n) for r in pats)]
        else:
            chosen = [n for n in names if n in pois] + top
        correlation_plot(w, f, names, chosen)
        scan_plots(w, f)
        html = interactive.write_pulls_impacts(outdir, f, names, p)
        gof = {k: float(v) for k, v in f["gof"].attrs.items()} if "gof" in f else None
    return {
        "mass": mass,
        "gof": gof,
        "plots": w.written,
        "interactive": html,
        "band_source": bands.get("fitinput"),
        "fit_metadata": meta,
    }


def write_page(outdir: Path, summary: dict[str, Any]) -> Path:
    """``index.html`` of the folder (see webpage)."""
    return webpage.write_index(outdir, title="Fit results", summary=summary)
