"""W-like Z analysis (``--analysis mz_wlike``): Z -> mu mu events analysed as W -> mu nu.

One muon is kept by event-number parity (odd event: the positive muon, even: the negative), the
other is added to the missing transverse momentum, as in the CMS W-like mZ measurement. The
kept muon fills eta x pT x charge templates (mT > 40 GeV with the modified MET), with the Z mass
variations for Z samples and the same variation tensors as the W analysis.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wremnants_dask.engine.processor import ChunkOutput, Events
from wremnants_dask.engine.tensorhist import TensorHist
from wremnants_dask.processors import selection as S
from wremnants_dask.processors.common import (
    MuonAnalysis,
    eta_pt_charge_axes,
    fill_all,
    mc_columns,
    np1,
    read_columns,
)
from wremnants_dask.processors.dimuon import select_dimuons
from wremnants_dask.processors.mw import calibrated_pt
from wremnants_dask.processors.zdilepton import dimuon_sf_inputs


def wlike_choice(event: np.ndarray) -> np.ndarray:
    """Index into the (positive, negative) pair: 0 (positive muon) for odd event numbers."""
    return (np.asarray(event).astype(np.uint64) % np.uint64(2) == 0).astype(np.int64)


class ZWlikeProcessor(MuonAnalysis):
    """Histogram ``nominal`` (eta, pt, charge) of the kept muon, plus ``nominal_<variation>``."""

    name = "mz_wlike"
    required_inputs = (*S.MUON_BRANCHES, "trigger", "MET_pt", "MET_phi", "event")

    def histograms(self, dataset: Any) -> dict[str, TensorHist]:
        return self.declare("nominal", eta_pt_charge_axes(self.payload), dataset)

    def process(self, events: Events, out: ChunkOutput) -> None:
        info = self.sample_info(out.dataset)
        required = [*self.required_inputs]
        if info.is_data:
            required += ["run", "luminosityBlock"]
        optional = [*S.TRIGOBJ_BRANCHES, *mc_columns(info)]
        cols = read_columns(events, info, required, optional)
        if events.tracing:
            return
        pt = calibrated_pt(self.payload, cols, info.is_data, self.options)
        dm = select_dimuons(cols, pt, info, out, pt_max=S.PT_MAX)
        keep = wlike_choice(np1(cols["event"])[dm.mask])
        other = 1 - keep
        rows = np.arange(keep.size)
        met = np1(cols["MET_pt"])[dm.mask].astype(np.float64)
        met_phi = np1(cols["MET_phi"])[dm.mask].astype(np.float64)
        px = met * np.cos(met_phi) + dm.pt[rows, other] * np.cos(dm.phi[rows, other])
        py = met * np.sin(met_phi) + dm.pt[rows, other] * np.sin(dm.phi[rows, other])
        mt = S.transverse_mass(
            dm.pt[rows, keep], dm.phi[rows, keep], np.hypot(px, py), np.arctan2(py, px)
        )
        pass_mt = mt > S.MT_CUT
        out.cutflow("main").cut("mT (W-like)", _expand(dm.mask, pass_mt))
        mask = dm.mask.copy()
        mask[mask] = pass_mt
        sub = pass_mt
        muons = dimuon_sf_inputs(
            dm.eta[sub], dm.pt[sub], dm.gen_pt[sub], None if dm.matched is None else dm.matched[sub]
        )
        weights = self.event_weights(cols, mask, muons, info)
        k = keep[sub]
        r = np.arange(k.size)
        values = [dm.eta[sub][r, k], dm.pt[sub][r, k], dm.charge[sub][r, k]]
        fill_all(out, "nominal", values, weights)


def _expand(mask: np.ndarray, sub: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.shape, dtype=bool)
    out[mask] = sub
    return out
