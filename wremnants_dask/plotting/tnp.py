"""Tag-and-probe plots of an output folder of ``python -m wremnants_dask.tnp``.

- ``eff_map_<step>_<sample>.png``, ``sf_map_<step>.png``: efficiencies (data, simulation) and
  scale factors in (pT, eta), charges combined by inverse-variance weighting, values written in
  the cells;
- ``sf_vs_pt_<step>.png``: the scale factors of every eta bin against pT with their
  statistical and total (stat + syst) bands, and the smoothed SFs with their band when the
  folder holds them (``smooth_sf.hdf5``);
- ``fit_<step>_pt<i>_eta<j>_q<k>.png``: a bin's pass and fail spectra with the fitted model and
  its background: the flagged and refitted bins, the worst chi2 probability of each step, and
  any bins asked for.
Each is written with its ``.log`` (plotlog) and the folder's ``index.html`` lists them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from wremnants_dask.plotting import draw, plotlog

plt = draw.plt


class TnPPlotError(ValueError):
    """The output folder lacks what a plot needs (message names the file)."""


def load(outdir: Path) -> tuple[Any, dict]:
    """The Extraction of ``outdir`` (tables + the histograms it records) and its attributes."""
    from wremnants_dask.efficiency import output
    from wremnants_dask.efficiency.spectra import read_spectra
    from wremnants_dask.processors.tnp_config import load_config

    path = outdir / "efficiencies.hdf5"
    if not path.exists():
        raise TnPPlotError(f"{path}: missing (run python -m wremnants_dask.tnp -o {outdir})")
    with h5py.File(path, "r") as f:
        attrs = {k: json.loads(v) for k, v in f.attrs.items() if k != "nominal"}
    if "histograms" not in attrs:
        raise TnPPlotError(f"{path}: no 'histograms' attribute (written before the plots existed)")
    cfg = load_config(attrs["config"])
    data = read_spectra(attrs["histograms"], data=True)
    mc = read_spectra(attrs["histograms"], data=False, signal_group=attrs["signal_group"])
    ex, attrs = output.read_extraction(outdir, cfg, data, mc)
    return ex, attrs


def _combine(val: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = np.where(np.isfinite(err) & (err > 0), 1.0 / np.where(err > 0, err, 1.0) ** 2, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.nan_to_num(val) * w).sum(-1) / w.sum(-1), 1.0 / np.sqrt(w.sum(-1))


def _log(ex: Any, attrs: dict, what: str, rows: list, unit: str, notes=()) -> str:
    from wremnants_dask.histograms.histio import HistFile

    meta = None
    try:
        with HistFile(attrs["histograms"]) as f:
            meta = f.metadata
    except (OSError, KeyError):
        meta = None
    notes = [f"histograms: {attrs['histograms']}", f"config: {attrs['config']}", *notes]
    if attrs.get("refits"):
        notes.append(f"refitted bins: {json.dumps(attrs['refits'])}")
    return plotlog.log_text(
        what,
        input_file=attrs["histograms"],
        input_metadata=meta,
        yields=plotlog.yields_table(rows, unit=unit),
        notes=notes,
    )


def _map(values, errors, pt_edges, eta_edges, *, title: str, label: str, vrange=None):
    fig, ax = plt.subplots(figsize=(13, 8))
    pcm = ax.pcolormesh(eta_edges, pt_edges, values, cmap="viridis", shading="flat")
    if vrange is not None:
        pcm.set_clim(*vrange)
    fig.colorbar(pcm, ax=ax, label=label)
    log_pt = pt_edges[-1] / pt_edges[0] > 4
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            x = 0.5 * (eta_edges[j] + eta_edges[j + 1])
            y = (
                np.sqrt(pt_edges[i] * pt_edges[i + 1])
                if log_pt
                else 0.5 * (pt_edges[i] + pt_edges[i + 1])
            )
            light = pcm.norm(values[i, j]) > 0.6  # dark text on the bright end of viridis
            ax.text(x, y, f"{values[i, j]:.3f}\n±{errors[i, j]:.3f}", ha="center",
                    va="center", fontsize=7, color="k" if light else "w")  # fmt: skip
    ax.set_xlabel(r"probe $\eta$")
    ax.set_ylabel(r"probe $p_T$ (GeV)")
    draw.cms_label(ax, rlabel=title)
    return fig


def efficiency_maps(ex: Any, attrs: dict, outdir: Path) -> list[Path]:
    spec = ex.spectra["mc"]
    shape = spec.shape
    out = []
    for s, step in enumerate(spec.steps):
        for sample in ("data", "mc"):
            m = ex.results[sample][ex.nominal]
            val, err = _combine(m.eff.reshape(shape)[s], m.err.reshape(shape)[s])
            fig = _map(val, err, spec.pt_edges, spec.eta_edges, title=f"{step} ({sample})",
                       label=f"efficiency ({ex.nominal})", vrange=(max(0.0, np.nanmin(val)), 1.0))  # fmt: skip
            rows = _rows(val, err, spec)
            log = _log(ex, attrs, f"{step} efficiency of {sample} in (pT, eta)", rows, "efficiency")
            out.append(plotlog.save_plot(fig, outdir / f"eff_map_{step}_{sample}.png", log))
        sf = ex.sf["sf"].reshape(shape)[s]
        st = ex.sf["stat"].reshape(shape)[s]
        val, err = _combine(sf, st)
        lo, hi = np.nanmin(val), np.nanmax(val)
        fig = _map(val, err, spec.pt_edges, spec.eta_edges, title=f"{step} scale factor",
                   label="data / simulation", vrange=(lo, hi))  # fmt: skip
        log = _log(ex, attrs, f"{step} scale factors in (pT, eta)", _rows(val, err, spec),
                   "scale factor (stat)")  # fmt: skip
        out.append(plotlog.save_plot(fig, outdir / f"sf_map_{step}.png", log))
    return out


def _rows(val, err, spec) -> list[tuple[str, float, float]]:
    return [
        (
            f"pt[{spec.pt_edges[i]:g},{spec.pt_edges[i + 1]:g}] "
            f"eta[{spec.eta_edges[j]:g},{spec.eta_edges[j + 1]:g}]",
            float(val[i, j]),
            float(err[i, j]),
        )
        for i in range(val.shape[0])
        for j in range(val.shape[1])
    ]


def sf_vs_pt(ex: Any, attrs: dict, outdir: Path, smooth: dict | None = None) -> list[Path]:
    """Per step: SF against pT in every eta bin (panels), stat and stat+syst bands, and the
    smoothed SF with its band when given (``smooth[step]`` = (pt grid, nominal, err) per eta)."""
    spec = ex.spectra["mc"]
    shape = spec.shape
    n_eta = shape[2]
    ncol = 4
    nrow = int(np.ceil(n_eta / ncol))
    out = []
    for s, step in enumerate(spec.steps):
        sf, st = _combine(ex.sf["sf"].reshape(shape)[s], ex.sf["stat"].reshape(shape)[s])
        sy = ex.sf["syst"].reshape(shape)[s].mean(-1)
        tot = np.hypot(st, sy)
        fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.6 * nrow), sharex=True)
        axes = np.atleast_1d(axes).ravel()
        x = 0.5 * (spec.pt_edges[1:] + spec.pt_edges[:-1])
        xerr = 0.5 * np.diff(spec.pt_edges)
        rows = []
        for j in range(n_eta):
            ax = axes[j]
            e = spec.pt_edges
            ax.stairs(sf[:, j] + tot[:, j], e, baseline=sf[:, j] - tot[:, j], fill=True,
                      color="#f89c20", alpha=0.5, label="stat+syst")  # fmt: skip
            ax.stairs(sf[:, j] + st[:, j], e, baseline=sf[:, j] - st[:, j], fill=True,
                      color="#5790fc", alpha=0.6, label="stat")  # fmt: skip
            ax.errorbar(x, sf[:, j], xerr=xerr, yerr=st[:, j], fmt="o", color="k", ms=3,
                        label="measured")  # fmt: skip
            if smooth is not None and step in smooth:
                g, nom, band = smooth[step]
                ax.fill_between(g, nom[j] - band[j], nom[j] + band[j], color="#e42536",
                                alpha=0.3, lw=0)  # fmt: skip
                ax.plot(g, nom[j], color="#e42536", lw=1.5, label="smoothed")
            ax.set_title(rf"$\eta$ [{spec.eta_edges[j]:g}, {spec.eta_edges[j + 1]:g}]", fontsize=12)
            ax.tick_params(labelsize=10)
            lo = np.nanmin(sf[:, j] - tot[:, j])
            hi = np.nanmax(sf[:, j] + tot[:, j])
            pad = 0.1 * max(hi - lo, 1e-3)
            if np.isfinite(lo) and np.isfinite(hi):
                ax.set_ylim(lo - pad, hi + pad)
            rows += [
                (f"eta#{j} pt[{e[i]:g},{e[i + 1]:g}]", float(sf[i, j]), float(tot[i, j]))
                for i in range(shape[1])
            ]
        for ax in axes[n_eta:]:
            ax.set_visible(False)
        axes[0].legend(fontsize=9)
        for ax in axes[(nrow - 1) * ncol :]:
            ax.set_xlabel(r"$p_T$ (GeV)", fontsize=12)
        fig.suptitle(f"{step} scale factors (data / simulation)", fontsize=16)
        fig.tight_layout()
        notes = ["band: stat (blue), stat + syst (orange)"]
        if smooth is not None and step in smooth:
            notes.append("red: smoothed SF with its 1-sigma band (smooth_sf.hdf5)")
        log = _log(ex, attrs, f"{step} SF vs pT per eta bin", rows, "SF (stat+syst)", notes)
        out.append(plotlog.save_plot(fig, outdir / f"sf_vs_pt_{step}.png", log))
    return out


def fit_bins(ex: Any, attrs: dict, extra: list[int] | None = None) -> list[int]:
    """The bins drawn: flagged data fits, refitted bins, the worst chi2 probability per step."""
    spec = ex.spectra["data"]
    m = ex.results["data"][ex.nominal]
    bins = set(np.flatnonzero(m.flags).tolist())
    for r in attrs.get("refits") or []:
        bins.add(int(np.ravel_multi_index(tuple(r["bin"]), spec.shape)))
    if m.fit is not None:
        step = spec.bin_index()["step"]
        for s in range(len(spec.steps)):
            rows = np.flatnonzero(step == s)
            bins.add(int(rows[np.argmin(m.fit.chi2_prob[rows])]))
    bins.update(extra or [])
    return sorted(bins)


def fit_plot(ex: Any, attrs: dict, outdir: Path, b: int) -> Path:
    """Pass and fail spectra of flat bin ``b`` (data) with the nominal fitted model."""
    import jax.numpy as jnp

    from wremnants_dask.efficiency import fit as F

    spec, mc = ex.spectra["data"], ex.spectra["mc"]
    m = ex.results["data"][ex.nominal]
    if m.fit is None:
        raise TnPPlotError(f"{ex.nominal}: not a fit, nothing to draw")
    idx = {k: int(v[b]) for k, v in spec.bin_index().items()}
    refit = [r for r in attrs.get("refits") or [] if tuple(r["bin"]) == tuple(
        idx[k] for k in ("step", "pt", "eta", "charge"))]  # fmt: skip
    model = (refit[-1]["signal"], refit[-1]["background"]) if refit else ("template", "exp")
    fit_range = tuple(refit[-1]["fit_range"]) if refit else ex.config.fit_range
    edges = spec.mass_edges
    i0, i1 = np.searchsorted(edges, fit_range)
    geom, centres = F.mass_grid(edges, i0, i1)
    tmpl = (mc.passing + mc.failing)[b : b + 1]
    t_p, _ = F.normalised_templates(tmpl, tmpl)
    mat = jnp.asarray(F.smear_matrix(t_p, geom[0], geom[1])[0])
    th = jnp.asarray(m.fit.params[b])
    mu_p, mu_f = F._expected(th, mat, mat, (geom, centres), model)
    bkg_th = th.at[1].set(0.0)
    bk_p, bk_f = F._expected(bkg_th, mat, mat, (geom, centres), model)
    fig, axes = plt.subplots(1, 2, figsize=(16, 7))
    fe = edges[i0 : i1 + 1]
    rows = []
    for ax, name, obs, mu, bk in (
        (axes[0], "pass", spec.passing[b, i0:i1], mu_p, bk_p),
        (axes[1], "fail", spec.failing[b, i0:i1], mu_f, bk_f),
    ):
        # Poisson 68 % upper error 1.84 at n = 0 (Garwood), no lower error there
        yerr = np.stack([np.sqrt(obs), np.where(obs > 0, np.sqrt(obs), 1.84)])
        ax.errorbar(np.asarray(centres), obs, yerr=yerr, fmt="o", color="k", ms=3,
                    label="data")  # fmt: skip
        ax.set_ylim(bottom=0.0)
        ax.stairs(np.asarray(mu), fe, color="#e42536", lw=2, label="fit")
        ax.stairs(np.asarray(bk), fe, color="#5790fc", lw=1.5, ls="--", label="background")
        ax.set_xlabel(r"$m_{\mu\mu}$ (GeV)")
        ax.set_ylabel("probes / bin")
        ax.set_title(f"{name}: {obs.sum():.0f} probes", fontsize=14)
        ax.legend(fontsize=11)
        rows.append((f"{name} observed", float(obs.sum()), float(np.sqrt(obs.sum()))))
        rows.append((f"{name} fitted", float(np.sum(mu)), 0.0))
        rows.append((f"{name} background", float(np.sum(bk)), 0.0))
    step = spec.steps[idx["step"]]
    title = (
        f"{step} pT[{spec.pt_edges[idx['pt']]:g},{spec.pt_edges[idx['pt'] + 1]:g}] "
        f"eta[{spec.eta_edges[idx['eta']]:g},{spec.eta_edges[idx['eta'] + 1]:g}] q#{idx['charge']}"
    )
    from wremnants_dask.efficiency.extract import flag_names

    fig.suptitle(
        f"{title}: eff = {m.eff[b]:.4f} ± {m.err[b]:.4f}, chi2 prob "
        f"{m.fit.chi2_prob[b]:.3g} {'FLAGGED: ' + ', '.join(flag_names(int(m.flags[b]))) if m.flags[b] else ''}",
        fontsize=13,
    )  # fmt: skip
    notes = [
        f"model {model[0]}/{model[1]}, fit range {fit_range}",
        f"params {m.fit.params[b].tolist()}",
    ]
    log = _log(ex, attrs, f"pass/fail fit of data bin {title}", rows, "probes", notes)
    name = f"fit_{step}_pt{idx['pt']}_eta{idx['eta']}_q{idx['charge']}.png"
    return plotlog.save_plot(fig, outdir / name, log)


def read_smooth(outdir: Path) -> dict | None:
    """The smoothed SFs written by efficiency.smooth (if any): step -> (grid, nominal, err)."""
    path = outdir / "smooth_sf.hdf5"
    if not path.exists():
        return None
    out = {}
    with h5py.File(path, "r") as f:
        for step in f:
            g = f[step]
            out[step] = (
                np.asarray(g["pt_grid"]),
                np.asarray(g["curve"]),
                np.asarray(g["curve_err"]),
            )
    return out


def make_tnp_plots(outdir: Path, plotdir: Path, bins: list[int] | None = None) -> list[Path]:
    """Every tag-and-probe plot of ``outdir`` into ``plotdir`` and its index.html."""
    from wremnants_dask.plotting.webpage import write_index

    plotdir.mkdir(parents=True, exist_ok=True)
    ex, attrs = load(outdir)
    paths = efficiency_maps(ex, attrs, plotdir)
    paths += sf_vs_pt(ex, attrs, plotdir, read_smooth(outdir))
    for b in fit_bins(ex, attrs, bins):
        paths.append(fit_plot(ex, attrs, plotdir, b))
    write_index(plotdir, title=f"Tag-and-probe: {outdir.name}")
    return paths
