"""Z dilepton analysis (``--analysis mz_dilepton``): mll, pTll and yll of Z -> mu mu.

Selection in dimuon.py. Two configurations: ``mll`` (mass fit) and ``ptll_yll`` (pT-y of the
dilepton system), each with the variation tensors that apply (Z mass/width for Z samples).
Muon pT has no upper cut here (the mass fit needs the full line shape).
"""

from __future__ import annotations

from typing import Any

import hist
import numpy as np

from wremnants_dask.engine.processor import ChunkOutput, Events
from wremnants_dask.engine.tensorhist import TensorHist
from wremnants_dask.processors import selection as S
from wremnants_dask.processors.common import (
    MuonAnalysis,
    SelectedMuons,
    fill_all,
    mc_columns,
    read_columns,
)
from wremnants_dask.processors.dimuon import select_dimuons
from wremnants_dask.processors.mw import calibrated_pt

PTLL_EDGES = (0, 2, 4, 6, 8, 10, 12, 15, 18, 22, 26, 30, 35, 40, 50, 60, 80, 100)


def dimuon_sf_inputs(
    eta: np.ndarray, pt: np.ndarray, gen_pt: np.ndarray, matched: np.ndarray | None
) -> SelectedMuons:
    """Two muons per event, flattened; muons not firing the trigger get the trigger inefficiency
    SF; without trigger objects the trigger SF goes to the positive muon only."""
    n = eta.shape[0]
    if matched is None:
        used = np.zeros((n, 2), dtype=bool)
        used[:, 0] = True
        fail = None
    else:
        used = np.ones((n, 2), dtype=bool)
        fail = {"trigger": ~matched.ravel()}
    return SelectedMuons(
        eta.ravel(),
        pt.ravel(),
        gen_pt.ravel(),
        np.full(n, 2, dtype=np.int64),
        fail=fail,
        trigger_used=used.ravel(),
    )


class ZDileptonProcessor(MuonAnalysis):
    """Histograms ``mll`` (mll) and ``ptll_yll`` (ptll, yll), plus ``<name>_<variation>``."""

    name = "mz_dilepton"
    required_inputs = (*S.MUON_BRANCHES, "trigger")

    def histograms(self, dataset: Any) -> dict[str, TensorHist]:
        mll = [hist.axis.Regular(60, 60.0, 120.0, name="mll", label="m(mu mu) (GeV)")]
        ptyll = [
            hist.axis.Variable(PTLL_EDGES, name="ptll", label="pT(mu mu) (GeV)"),
            hist.axis.Regular(24, -2.4, 2.4, name="yll", label="y(mu mu)"),
        ]
        return {**self.declare("mll", mll, dataset), **self.declare("ptll_yll", ptyll, dataset)}

    def process(self, events: Events, out: ChunkOutput) -> None:
        info = self.sample_info(out.dataset)
        required = [*self.required_inputs]
        optional = ["run", "luminosityBlock", *S.TRIGOBJ_BRANCHES, *mc_columns(info)]
        cols = read_columns(
            events, info, required + (["run", "luminosityBlock"] if info.is_data else []), optional
        )
        if events.tracing:
            return
        pt = calibrated_pt(self.payload, cols, info.is_data, self.options)
        dm = select_dimuons(cols, pt, info, out, pt_max=None)
        mll, ptll, yll = S.dimuon_kinematics(
            dm.pt[:, 0], dm.eta[:, 0], dm.phi[:, 0], dm.pt[:, 1], dm.eta[:, 1], dm.phi[:, 1]
        )
        muons = dimuon_sf_inputs(dm.eta, dm.pt, dm.gen_pt, dm.matched)
        weights = self.event_weights(cols, dm.mask, muons, info)
        fill_all(out, "mll", [mll], weights)
        fill_all(out, "ptll_yll", [ptll, yll], weights)
