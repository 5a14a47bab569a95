"""Small models shared by the fitter tests (built here, deterministic)."""

from __future__ import annotations

import hist
import numpy as np


def pyhf_workspace(seed: int = 1) -> dict:
    """Three channels with every pyhf modifier type (normfactor, normsys, histosys, staterror,
    shapesys, shapefactor, lumi)."""
    rng = np.random.default_rng(seed)
    chans, obs = [], []
    for cname, nb in [("SR", 4), ("CR", 3), ("VR", 2)]:
        sig = list(rng.uniform(5, 20, nb)) if cname != "CR" else list(rng.uniform(0.5, 1, nb))
        bkg = list(rng.uniform(40, 80, nb))
        bkg2 = list(rng.uniform(10, 30, nb))
        smods = [
            {"name": "mu", "type": "normfactor", "data": None},
            {"name": "sig_norm", "type": "normsys", "data": {"hi": 1.08, "lo": 0.95}},
            {"name": "staterror_" + cname, "type": "staterror", "data": [0.05 * s for s in sig]},
            {"name": "lumi", "type": "lumi", "data": None},
        ]
        bmods = [
            {
                "name": "bkg_shape",
                "type": "histosys",
                "data": {
                    "hi_data": [b * (1.05 + 0.01 * i) for i, b in enumerate(bkg)],
                    "lo_data": [b * (0.97 - 0.005 * i) for i, b in enumerate(bkg)],
                },
            },
            {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.92}},
            {"name": "staterror_" + cname, "type": "staterror", "data": [0.03 * b for b in bkg]},
        ]
        if cname == "CR":
            bmods.append({"name": "cr_sf", "type": "shapefactor", "data": None})
        b2mods = [
            {"name": "b2_mc_" + cname, "type": "shapesys", "data": [0.1 * b for b in bkg2]},
            {"name": "b2_free", "type": "normfactor", "data": None},
            {"name": "lumi", "type": "lumi", "data": None},
        ]
        chans.append(
            {
                "name": cname,
                "samples": [
                    {"name": "signal", "data": sig, "modifiers": smods},
                    {"name": "bkg", "data": bkg, "modifiers": bmods},
                    {"name": "bkg2", "data": bkg2, "modifiers": b2mods},
                ],
            }
        )
        tot = np.array(sig) * 1.1 + np.array(bkg) + np.array(bkg2)
        obs.append({"name": cname, "data": list(map(float, rng.poisson(tot)))})
    params = [
        {"name": "mu", "bounds": [[-5, 10]]},
        {"name": "b2_free", "bounds": [[0, 10]]},
        {
            "name": "lumi",
            "auxdata": [1.0],
            "sigmas": [0.02],
            "inits": [1.0],
            "bounds": [[0.5, 1.5]],
        },
    ]
    return {
        "channels": chans,
        "observations": obs,
        "version": "1.0.0",
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": params}}],
    }


def reg(n: int, name: str = "x") -> hist.axis.Regular:
    return hist.axis.Regular(n, 0.0, float(n), name=name, underflow=False, overflow=False)


def hw(ax, values, variances=None) -> hist.Hist:
    h = hist.Hist(ax, storage=hist.storage.Weight())
    h.view().value = np.asarray(values, float)
    h.view().variance = np.zeros(len(values)) if variances is None else np.asarray(variances, float)
    return h
