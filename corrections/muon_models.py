"""Muon detector-model corrections from the truth record: resolution, momentum scale, prefiring.

These complement the efficiency scale factors in the payload (see build.py):
``muon_resolution`` gives the Gaussian sigma(pT)/pT used by the momentum-scale weights,
``muon_scale_data`` the data momentum-scale offsets per eta slice (data calibration),
``muon_scale_unc`` the size of the per-slice scale variation, ``prefiring`` the per-muon L1
prefiring probability (the event-level part is kept in the correction's description).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _corr(name: str, desc: str, inputs: list[tuple[str, str, str]], data: Any, output: str) -> dict:
    return {
        "name": name,
        "description": desc,
        "version": 1,
        "inputs": [{"name": n, "type": t, "description": d} for n, t, d in inputs],
        "output": {"name": output, "type": "real"},
        "data": data,
    }


def _binning(inp: str, edges: Any, content: Any) -> dict:
    return {
        "nodetype": "binning",
        "input": inp,
        "edges": [float(e) for e in edges],
        "content": [float(c) if not isinstance(c, dict) else c for c in content],
        "flow": "clamp",
    }


def resolution_correction(truth: dict) -> dict:
    """sigma(pT)/pT of the simulation: k * sqrt(a^2 + (b pT)^2), a, b functions of eta."""
    r = truth["resolution"]
    k = r.get("k", {}).get("mc", 1.0) if isinstance(r.get("k"), dict) else float(r.get("k", 1.0))
    for key in ("a0", "a2", "b0", "b1"):
        if key not in r:
            raise ValueError(
                f"truth resolution lacks parameter '{key}' (formula: {r.get('formula')})"
            )
    expr = "[4]*sqrt(([0]+[1]*(x/2.4)*(x/2.4))*([0]+[1]*(x/2.4)*(x/2.4))+([2]*(1+[3]*abs(x))*y)*([2]*(1+[3]*abs(x))*y))"
    return _corr(
        "muon_resolution",
        f"relative pT resolution of simulation: {r.get('formula', '')}; x = eta, y = pT (generator)",
        [("eta", "real", "muon eta"), ("pt", "real", "muon pT (GeV), generator level")],
        {
            "nodetype": "formula",
            "expression": expr,
            "parser": "TFormula",
            "variables": ["eta", "pt"],
            "parameters": [
                float(r["a0"]),
                float(r["a2"]),
                float(r["b0"]),
                float(r["b1"]),
                float(k),
            ],
        },
        "sigma_rel",
    )


def scale_corrections(truth: dict, scale_var: float) -> list[dict]:
    ms = truth["momentum_scale"]
    edges = np.asarray(ms["eta_edges"], dtype=np.float64)
    data = np.asarray(ms["data"], dtype=np.float64)
    mc = np.asarray(ms.get("mc", np.zeros_like(data)), dtype=np.float64)
    if data.size != edges.size - 1 or mc.size != data.size:
        raise ValueError(
            f"truth momentum_scale: {data.size} data / {mc.size} mc offsets for {edges.size} edges"
        )
    # data relative to simulation: the calibration brings data onto the simulation's scale
    rel = (1.0 + data) / (1.0 + mc) - 1.0
    return [
        _corr(
            "muon_scale_data",
            f"data momentum-scale offset relative to simulation per eta slice: "
            f"pt_calibrated = pt / (1 + offset); truth definition: {ms.get('definition', '')}",
            [("eta", "real", "muon eta")],
            _binning("eta", edges, rel),
            "offset",
        ),
        _corr(
            "muon_scale_unc",
            "size of the relative momentum-scale variation per eta slice (one nuisance each)",
            [("eta", "real", "muon eta")],
            _binning("eta", edges, np.full(data.size, scale_var)),
            "delta",
        ),
    ]


def prefiring_correction(truth: dict) -> dict:
    pf = truth["prefiring"]
    edges = np.asarray(pf["eta_edges"], dtype=np.float64)
    p = np.asarray(pf["p_mu"], dtype=np.float64)
    syst = float(pf.get("syst", 0.0))
    if p.size != edges.size - 1:
        raise ValueError(f"truth prefiring: {p.size} probabilities for {edges.size} eta edges")
    items = [
        {"key": "nominal", "value": _binning("eta", edges, p)},
        {"key": "up", "value": _binning("eta", edges, p * (1.0 + syst))},
        {"key": "down", "value": _binning("eta", edges, p * (1.0 - syst))},
    ]
    return _corr(
        "prefiring",
        f"per-muon L1 prefiring probability (pT independent); p_event = {pf.get('p_event', 0.0)}; "
        f"up/down: p x (1 +- {syst}); {pf.get('formula', '')}",
        [
            ("eta", "real", "muon eta"),
            ("pt", "real", "muon pT (unused)"),
            ("variation", "string", "nominal|up|down"),
        ],
        {"nodetype": "category", "input": "variation", "content": items},
        "prob",
    )


def model_corrections(truth: dict, scale_var: float) -> list[dict]:
    """The detector-model corrections of the payload, in a fixed order."""
    for key in ("resolution", "momentum_scale", "prefiring"):
        if key not in truth:
            raise ValueError(f"truth record lacks the '{key}' section")
    return [
        resolution_correction(truth),
        *scale_corrections(truth, scale_var),
        prefiring_correction(truth),
    ]
