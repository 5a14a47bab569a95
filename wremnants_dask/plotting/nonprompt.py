"""The non-prompt fake rate of the ABCD method: measured and smoothed, with its band.

The fake rate ``F(pT) = N(iso pass) / N(iso fail)`` of data minus prompt simulation in the mT
sideband(s), per pT bin, and the smoothed fake rate that ``fitsetup.abcd`` extrapolates to the
signal region (a log-polynomial in pT, exactly as the fit setup computes it) with the band
``exp(log F +- sigma)`` from the smoothing fit's covariance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wremnants_dask.plotting import draw, plotlog
from wremnants_dask.plotting.histplots import PlotInputError, open_samples, prepare

#: Simulated non-prompt groups: predicted from data, so never subtracted as prompt.
NONPROMPT_MC = ("QCD", "Nonprompt")


def fakerate_plot(
    path: Path,
    outdir: Path,
    *,
    name: str = "nominal",
    iso_axis: str = "passIso",
    mt_axis: str | None = None,
    pt_axis: str = "pt",
    smoothing_order: int = 2,
) -> Path:
    """Measured (sideband) and smoothed (signal-region) fake rate vs pT, inclusive in the
    other axes. ``mt_axis`` None: the histogram's ``mt`` (mw's default, extended ABCD with the
    fit setup's fake-rate model) or else its Boolean ``passMT``."""
    from wremnants_dask.fitsetup import abcd
    from wremnants_dask.fitsetup.setup import NONPROMPT_MT_MODEL

    hf, samples = open_samples(path)
    where = f"{path}:{name}"
    if mt_axis is None:
        axes = samples.group_sum("Data", name).axes.name
        mt_axis = "mt" if "mt" in axes else "passMT"
    mt_model = NONPROMPT_MT_MODEL if mt_axis == "mt" else "per_bin"
    keep = (pt_axis, iso_axis, mt_axis)
    data = prepare(samples.group_sum("Data", name), keep, {}, {}, where)
    prompt_groups = [g for g in samples.groups if g != "Data" and g not in NONPROMPT_MC]
    prompt = [prepare(samples.group_sum(g, name), keep, {}, {}, where) for g in prompt_groups]
    try:
        pred = abcd.predict_nonprompt(
            data, prompt, iso_axis=iso_axis, mt_axis=mt_axis, pt_axis=pt_axis,
            smoothing_order=smoothing_order, mt_model=mt_model,
        )  # fmt: skip
    except (ValueError, KeyError) as err:
        raise PlotInputError(f"{where}: {err}") from err
    fit = pred.fakerate
    edges = np.asarray(data.axes[pt_axis].edges, float)
    centers = 0.5 * (edges[1:] + edges[:-1])
    # measured fake rate in the sideband(s): data - prompt, pass / fail
    dv = data.values()
    pv = sum(p.values() for p in prompt) if prompt else np.zeros_like(dv)
    pw = sum(p.variances() for p in prompt) if prompt else np.zeros_like(dv)
    dw = data.variances() if data.variances() is not None else dv
    n, var = dv - pv, dw + pw
    n_mt = n.shape[2]
    sides = [k for k in range(n_mt) if k != n_mt - 1]
    measured = {}
    for k in sides:
        with np.errstate(divide="ignore", invalid="ignore"):
            f = n[:, 1, k] / n[:, 0, k]
            ferr = np.abs(f) * np.sqrt(
                var[:, 1, k] / n[:, 1, k] ** 2 + var[:, 0, k] / n[:, 0, k] ** 2
            )
        measured[f"{mt_axis} bin {k} (sideband)"] = (f, ferr)
    logf = fit.log_ratio()
    sig = np.sqrt(np.einsum("ni,ij,nj->n", fit.basis, fit.cov, fit.basis))
    smooth = (np.exp(logf), np.exp(logf - sig), np.exp(logf + sig))
    fig = draw.fakerate(
        edges, centers, measured, smooth, xlabel=data.axes[pt_axis].label or pt_axis,
        rlabel=f"ABCD fake rate (order {smoothing_order})",
    )  # fmt: skip
    rows = [
        (
            f"pT [{edges[i]:g},{edges[i + 1]:g}] smoothed",
            float(smooth[0][i]),
            float(sig[i] * smooth[0][i]),
        )
        for i in range(len(centers))
    ]
    for label, (f, ferr) in measured.items():
        rows += [
            (f"pT [{edges[i]:g},{edges[i + 1]:g}] {label}", float(f[i]), float(ferr[i]))
            for i in range(len(centers))
        ]
    log = plotlog.log_text(
        f"ABCD fake rate of {name} vs {pt_axis} ({iso_axis} pass/fail, {mt_axis} sidebands)",
        input_file=path, input_metadata=hf.metadata,
        yields=plotlog.yields_table(rows, unit="fake rate"),
        notes=[f"prompt subtracted: {prompt_groups}", f"smoothing chi2 {float(np.sum(fit.chi2)):.2f}"
               f" / ndf {int(np.sum(fit.ndf))}", f"signal-region prediction {float(pred.hist.values().sum()):.6g}"],
    )  # fmt: skip
    hf.close()
    return plotlog.save_plot(fig, outdir / f"fakerate_{name}_{pt_axis}.png", log)
