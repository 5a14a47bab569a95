"""Muon and event selections of the CMS W-mass analysis, on awkward/numpy arrays of one chunk."""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np

from wremnants_dask.inputs.lumi import LumiMask, read_golden_json
from wremnants_dask.processors.common import TRIGOBJ_INPUTS, np1

PT_MIN, PT_MAX = 26.0, 56.0
ETA_MAX = 2.4
DXY_MAX = 0.05
ISO_CUT = 0.15
MT_CUT = 40.0
VETO_PT = 15.0
MLL_WINDOW = (60.0, 120.0)
# The muon inputs the selections read (good_muons, loose_muons, the isolation); configs/
# nanoaod_eras.yaml says which branch holds each in a file of a given era.
MUON_BRANCHES = [
    "Muon_pt",
    "Muon_eta",
    "Muon_phi",
    "Muon_charge",
    "Muon_mediumId",
    "Muon_looseId",
    "Muon_dxy",
    "Muon_pfRelIso04_all",
]

_GOLDEN: dict[str, LumiMask] = {}


def good_muons(
    cols: dict[str, Any], pt: ak.Array | None = None, pt_max: float | None = PT_MAX
) -> ak.Array:
    """Medium ID, 26 < pT < 56 GeV (no upper cut with ``pt_max=None``), |eta| < 2.4,
    |dxy| < 0.05 cm (jagged mask)."""
    pt = cols["Muon_pt"] if pt is None else pt
    good = (
        cols["Muon_mediumId"]
        & (pt > PT_MIN)
        & (abs(cols["Muon_eta"]) < ETA_MAX)
        & (abs(cols["Muon_dxy"]) < DXY_MAX)
    )
    return good if pt_max is None else good & (pt < pt_max)


def event_preselection(out: Any, cols: dict[str, Any], is_data: bool, n_events: int) -> Any:
    """Start the ``main`` cut flow (generator-weighted for simulation) and apply what every
    muon analysis here applies first: the golden JSON (data) and the single-muon trigger.
    The trigger is the input ``trigger`` (the era's single-muon path(s), see nanoaod_eras.yaml).
    Returns the cut flow; its current mask is the trigger step's."""
    cf = out.cutflow("main")
    genw = np1(cols["genWeight"]).astype(np.float64) if "genWeight" in cols else None
    cf.start(np.ones(n_events, dtype=bool), genw)
    if is_data:
        golden = out.dataset.golden_json
        if golden and not {"run", "luminosityBlock"} <= cols.keys():
            raise KeyError(
                f"dataset {out.dataset.name!r}: the golden JSON {golden} needs the run and "
                "luminosityBlock branches"
            )
        zeros = np.zeros(n_events, dtype=np.int64)
        cf.cut(
            "golden json",
            golden_mask(golden, cols.get("run", zeros), cols.get("luminosityBlock", zeros)),
        )
    cf.cut("trigger", np1(cols["trigger"]).astype(bool))
    return cf


def muon_preselection(
    out: Any,
    cols: dict[str, Any],
    pt: ak.Array,
    is_data: bool,
    *,
    pt_max: float | None = PT_MAX,
    isolated: bool = False,
) -> tuple[ak.Array, np.ndarray, np.ndarray, Any]:
    """What the single-muon and dimuon selections share: good muons (isolated ones with
    ``isolated=True``), the counts of good and of good-or-loose muons per event, and the ``main``
    cut flow after the event preselection. Returns ``(good, n_good, n_loose, cutflow)``."""
    good = good_muons(cols, pt, pt_max=pt_max)
    if isolated:
        good = good & (cols["Muon_pfRelIso04_all"] < ISO_CUT)
    loose = loose_muons(cols, pt)
    n_good = np1(ak.sum(good, axis=1))
    n_loose = np1(ak.sum(loose | good, axis=1))
    return good, n_good, n_loose, event_preselection(out, cols, is_data, len(n_good))


def loose_muons(cols: dict[str, Any], pt: ak.Array | None = None) -> ak.Array:
    """Veto muons: loose ID, pT > 15 GeV, |eta| < 2.4."""
    pt = cols["Muon_pt"] if pt is None else pt
    return cols["Muon_looseId"] & (pt > VETO_PT) & (abs(cols["Muon_eta"]) < ETA_MAX)


def prompt_match(cols: dict[str, Any], flavours: tuple[int, ...] | None) -> ak.Array | None:
    """Jagged mask of muons matched to a prompt generator muon (Muon_genPartFlav in flavours)."""
    if flavours is None or "Muon_genPartFlav" not in cols:
        return None
    flav = cols["Muon_genPartFlav"]
    out = flav == flavours[0]
    for f in flavours[1:]:
        out = out | (flav == f)
    return out


TRIG_DR = 0.3
TRIG_BIT = 8  # TrigObj_filterBits for muons: 8 = 1mu (HLT_IsoMu24 leg)
TRIGOBJ_BRANCHES = TRIGOBJ_INPUTS


def trigger_matched(cols: dict[str, Any]) -> ak.Array | None:
    """Jagged mask: muon within dR < 0.3 of a muon trigger object (id 13, filterBits & 8).

    None when the TrigObj branches are absent (then the trigger SF applies to every muon).
    """
    if not all(b in cols for b in TRIGOBJ_BRANCHES):
        return None
    tobj = (cols["TrigObj_id"] == 13) & ((cols["TrigObj_filterBits"] & TRIG_BIT) != 0)
    t_eta = cols["TrigObj_eta"][tobj]
    t_phi = cols["TrigObj_phi"][tobj]
    pairs_eta = ak.cartesian([cols["Muon_eta"], t_eta], nested=True)
    pairs_phi = ak.cartesian([cols["Muon_phi"], t_phi], nested=True)
    deta = pairs_eta["0"] - pairs_eta["1"]
    dphi = (pairs_phi["0"] - pairs_phi["1"] + np.pi) % (2 * np.pi) - np.pi
    return ak.any(deta * deta + dphi * dphi < TRIG_DR**2, axis=2)


def golden_mask(golden_json: str | None, run: Any, lumi: Any) -> np.ndarray:
    """Certified-event mask (all True without a golden JSON); the JSON is parsed once per process."""
    run = np.asarray(ak.to_numpy(run) if isinstance(run, ak.Array) else run)
    if not golden_json:
        return np.ones(run.shape, dtype=bool)
    mask = _GOLDEN.get(golden_json)
    if mask is None:
        mask = _GOLDEN[golden_json] = read_golden_json(golden_json)
    lumi = np.asarray(ak.to_numpy(lumi) if isinstance(lumi, ak.Array) else lumi)
    return np.asarray(mask.contains(run, lumi), dtype=bool)


def transverse_mass(
    pt: np.ndarray, phi: np.ndarray, met: np.ndarray, met_phi: np.ndarray
) -> np.ndarray:
    """mT = sqrt(2 pT MET (1 - cos dphi)) in GeV."""
    return np.sqrt(np.maximum(2.0 * pt * met * (1.0 - np.cos(phi - met_phi)), 0.0))


def first_true(values: ak.Array, mask: ak.Array) -> np.ndarray:
    """The value of the first masked object per event (NaN where none), as numpy."""
    return ak.to_numpy(ak.fill_none(ak.firsts(values[mask]), np.nan)).astype(np.float64)


def dimuon_kinematics(
    pt1: np.ndarray,
    eta1: np.ndarray,
    phi1: np.ndarray,
    pt2: np.ndarray,
    eta2: np.ndarray,
    phi2: np.ndarray,
    mass: float = 0.1056583755,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mll, pTll, yll) of two muons from their (pT, eta, phi)."""

    def four(pt, eta, phi):
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        return np.sqrt(px * px + py * py + pz * pz + mass * mass), px, py, pz

    e1, x1, y1, z1 = four(pt1, eta1, phi1)
    e2, x2, y2, z2 = four(pt2, eta2, phi2)
    e, px, py, pz = e1 + e2, x1 + x2, y1 + y2, z1 + z2
    mll = np.sqrt(np.maximum(e * e - px * px - py * py - pz * pz, 0.0))
    ptll = np.hypot(px, py)
    yll = 0.5 * np.log((e + pz) / (e - pz))
    return mll, ptll, yll
