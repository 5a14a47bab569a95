"""Dimuon (Z) event selection shared by the Z dilepton and W-like analyses.

Two good isolated muons of opposite charge with 60 < mll < 120 GeV, HLT_IsoMu24 with at least
one trigger-matched muon, no further loose muon, and (for W/Z simulation) both muons matched to
prompt generator muons. Results are per-event numpy arrays ordered (positive, negative) muon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

from wremnants_dask.engine.processor import ChunkOutput
from wremnants_dask.processors import selection as S
from wremnants_dask.processors.common import SampleInfo, gen_pt_of


@dataclass
class Dimuons:
    """Selected events (``mask`` over the chunk) and the two muons' arrays for those events."""

    mask: np.ndarray
    pt: np.ndarray  # (n, 2) [positive, negative]
    eta: np.ndarray
    phi: np.ndarray
    charge: np.ndarray
    gen_pt: np.ndarray
    matched: np.ndarray | None  # (n, 2) trigger matched, None without TrigObj branches


def _pair(values: ak.Array, good: ak.Array) -> np.ndarray:
    """(n_events, 2) numpy array of the first two good muons' values (NaN padded)."""
    padded = ak.pad_none(values[good], 2, axis=1, clip=True)
    return np.asarray(ak.to_numpy(ak.fill_none(padded, np.nan)), dtype=np.float64)


def select_dimuons(
    cols: dict[str, Any],
    pt: ak.Array,
    info: SampleInfo,
    out: ChunkOutput,
    *,
    pt_max: float | None = S.PT_MAX,
) -> Dimuons:
    """Apply the dimuon selection with a cut flow ``main``; see the module docstring."""
    good, n_good, n_loose, cf = S.muon_preselection(
        out, cols, pt, info.is_data, pt_max=pt_max, isolated=True
    )
    mask = cf.cut("two good muons", n_good == 2)
    mask = cf.cut("loose muon veto", n_loose == 2)
    charge = _pair(cols["Muon_charge"], good)
    mask = cf.cut("opposite charge", np.nan_to_num(charge[:, 0] * charge[:, 1], nan=1.0) < 0)
    pts, etas, phis = _pair(pt, good), _pair(cols["Muon_eta"], good), _pair(cols["Muon_phi"], good)
    mll, _, _ = S.dimuon_kinematics(
        pts[:, 0], etas[:, 0], phis[:, 0], pts[:, 1], etas[:, 1], phis[:, 1]
    )
    lo, hi = S.MLL_WINDOW
    mask = cf.cut("mll window", np.nan_to_num((mll > lo) & (mll < hi), nan=0).astype(bool))
    matched_all = S.trigger_matched(cols)
    matched = None
    if matched_all is not None:
        matched = np.nan_to_num(_pair(matched_all, good), nan=0.0).astype(bool)
        mask = cf.cut("trigger match", matched.any(axis=1))
    prompt = S.prompt_match(cols, info.prompt_flavours)
    if prompt is not None:
        pp = np.nan_to_num(_pair(prompt, good), nan=0.0).astype(bool)
        mask = cf.cut("prompt match", pp.all(axis=1))

    # order the pair as (positive, negative)
    swap = (charge[:, 0] < 0)[mask]
    order = np.stack([swap.astype(int), 1 - swap.astype(int)], axis=1)

    def pick(a: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a[mask], order, axis=1)

    if "Muon_genPartIdx" in cols and not info.is_data:
        idx = np.nan_to_num(_pair(cols["Muon_genPartIdx"], good), nan=-1).astype(np.int64)
        ev = np.repeat(np.arange(idx.shape[0])[:, None], 2, axis=1)
        gen = gen_pt_of(cols, idx.ravel(), ev.ravel()).reshape(-1, 2)
    else:
        gen = np.full(pts.shape, np.nan)
    return Dimuons(
        mask=mask,
        pt=pick(pts),
        eta=pick(etas),
        phi=pick(phis),
        charge=pick(charge),
        gen_pt=pick(gen),
        matched=None if matched is None else pick(matched),
    )
