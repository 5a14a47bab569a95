"""Plots and a result summary from a fit: ``python -m wremnants_dask.plot FITRESULTS.hdf5 -o DIR``.

Draws pre- and post-fit stacks (projected on each axis of each channel), the pulls, and the
grouped impacts on the POI; for a mass fit it converts the POI into the boson mass using the
fit setup recorded in the provenance chain, and writes ``summary.json`` with the result and
its uncertainty breakdown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from wremnants_dask.plotting import draw as plotting


def find_stage(meta: dict[str, Any], stage: str) -> dict[str, Any] | None:
    """The provenance record of ``stage`` in the chain of inputs (depth first)."""
    if meta.get("stage") == stage:
        return meta
    for m in meta.get("inputs", []):
        found = find_stage(m, stage)
        if found is not None:
            return found
    return None


def mass_result(fitres: h5py.File) -> dict[str, Any] | None:
    """Boson-mass result (MeV) from the mass POI, with the grouped impacts in MeV."""
    meta = json.loads(fitres.attrs["metadata"])
    setup_meta = find_stage(meta, "setup_fit")
    if setup_meta is None or "setup" not in setup_meta:
        return None
    setup = setup_meta["setup"]
    params = fitres["parameters"][()]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in params["name"]]
    pname = setup["mass_param"]
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
    if "impacts" in fitres and pname in list(json.loads(fitres["impacts"].attrs["pois"])):
        k = list(json.loads(fitres["impacts"].attrs["pois"])).index(pname)
        groups = json.loads(fitres["impacts"].attrs["groups"])
        grouped = fitres["impacts/grouped"][k] * step
        out["impacts_mev"] = {g: float(v) for g, v in zip(groups, grouped)}
        out["stat_mev"] = float(fitres["impacts/stat"][k] * step)
    return out


def make_plots(path: Path, outdir: Path) -> dict[str, Any]:
    """Every plot of one fit result; returns the summary written to ``summary.json``."""
    from wremnants_dask.fitting.output import read_hist

    written: list[str] = []
    with h5py.File(path, "r") as f:
        for stage in ("prefit", "postfit"):
            if f"hists/{stage}" not in f:
                continue
            for ch, g in f[f"hists/{stage}"].items():
                hs = {name: read_hist(g[name]) for name in g}
                procs = [p for p in hs if p not in ("data", "total")]
                h0 = hs[procs[0]]
                axes = [plotting.axis_dict(a) for a in h0.axes]
                yields = np.stack([hs[p].values().reshape(-1) for p in procs], axis=1)
                data = hs["data"].values().reshape(-1) if "data" in hs else None
                unc = None
                for a in axes:
                    name = plotting.axis_name(a)
                    if "total" in hs:
                        unc = np.sqrt(
                            plotting.project(hs["total"].variances().reshape(-1), axes, name)
                        )
                    out = outdir / f"{stage}_{ch}_{name}.png"
                    plotting.plot_stack(
                        axes,
                        yields,
                        procs,
                        data,
                        name,
                        out,
                        total_unc=unc,
                        title=f"{ch} {stage}",
                    )
                    written.append(out.name)
        params = f["parameters"][()]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in params["name"]]
        constrained = np.isfinite(params["pull"])  # unconstrained parameters have no pull
        if constrained.any():
            idx = np.flatnonzero(constrained)
            out = outdir / "pulls.png"
            plotting.plot_pulls(
                [names[i] for i in idx], params["pull"][idx], params["constraint"][idx], out
            )
            written.append(out.name)
        mass = mass_result(f)
        if mass is not None and "impacts_mev" in mass:
            groups = list(mass["impacts_mev"])
            out = outdir / "impacts_mass.png"
            plotting.plot_impacts(
                groups,
                np.array([mass["impacts_mev"][g] for g in groups]),
                out,
                unit="(MeV)",
                title=f"{mass['parameter']}: {mass['shift_mev']:+.1f} +- {mass['uncertainty_mev']:.1f} MeV",
            )
            written.append(out.name)
        fit_meta = json.loads(f.attrs["metadata"])
        gof = {k: float(v) for k, v in f["gof"].attrs.items()} if "gof" in f else None
    return {"mass": mass, "gof": gof, "plots": written, "fit_metadata": fit_meta}
