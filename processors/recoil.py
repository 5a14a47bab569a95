"""Hadronic recoil: its components, the Z -> mu mu measurement (``mz_recoil``) and its use in mw.

The recoil u = -(MET + prompt muons) is what the detector measured of the boson's partners; in a
W or Z event its mean is -response x qT along the boson. ``RecoilProcessor`` selects Z -> mu mu
events (dimuon.py) and fills, per reconstructed qT bin, weighted raw moments of u_par + qT and
u_perp (projected on the dimuon direction; ``corrections/recoil_calibration.py`` turns them into
responses and resolutions) and their distributions. Simulation also gets the same moments
projected on the generator boson, in generator-qT bins (the mean the correction of W events
needs). With the option ``recoil_calibration`` (a file of ``python -m wremnants_dask.recoil``)
simulated events are corrected first: the closure check.

``corrected_mt`` is the W-side: the corrected recoil of simulated W/Z events, MET and mT from
it, and mT for each eigen-variation of the calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import awkward as ak
import hist
import numpy as np

from wremnants_dask.corrections.recoil_calibration import (
    MOMENTS,
    QT_EDGES,
    RecoilCalibration,
    load_calibration,
)
from wremnants_dask.engine.processor import ChunkOutput, Events, ProcessorError, touch
from wremnants_dask.engine.tensorhist import TensorHist, tensor_axis
from wremnants_dask.inputs.nanoaod_eras import evaluate, leaves
from wremnants_dask.processors import selection as S
from wremnants_dask.processors import theory
from wremnants_dask.processors.common import (
    BOSON_PDGID,
    MuonAnalysis,
    SampleInfo,
    down_up_axis,
    event_weights,
    mc_columns,
    np1,
    read_columns,
)
from wremnants_dask.processors.dimuon import select_dimuons

#: Inputs beyond common.MC_INPUTS that the recoil needs from simulation.
GEN_INPUTS = ("GenPart_phi",)
#: Distribution histograms: u_par + qT and u_perp in [-60, 60] GeV (flow bins kept).
DIST_BINS = (40, -60.0, 60.0)


# ----------------------------------------------------------------------------- kinematics
def components(
    ux: np.ndarray, uy: np.ndarray, qx: np.ndarray, qy: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(u_par, u_perp) of u along and across q (q = 0: along x)."""
    qt = np.hypot(qx, qy)
    safe = qt > 0
    cx = np.where(safe, qx / np.where(safe, qt, 1.0), 1.0)
    cy = np.where(safe, qy / np.where(safe, qt, 1.0), 0.0)
    return ux * cx + uy * cy, -ux * cy + uy * cx


def applies(info: SampleInfo) -> bool:
    """Is the recoil of this sample calibrated: W or Z simulation with prompt muons (not
    Z -> tau tau, whose recoil also holds the taus' invisible decay products)."""
    return (not info.is_data) and info.boson in ("W", "Z") and info.prompt_flavours == (1,)


def read_gen_inputs(events: Events, info: SampleInfo, table: Any, era: str) -> dict[str, Any]:
    """GenPart_phi (through the era table, as the other inputs) for simulation; {} for data."""
    if info.is_data:
        return {}
    res = table.resolve(era, info.branches, [], GEN_INPUTS)
    out = {}
    for name, expr in res.exprs.items():
        out[name] = evaluate(expr, events.branch)
        if events.tracing:
            touch(*(events.branch(b) for b in leaves(expr)))
    return out


def _flat(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """(flat numpy values, counts per event) of a jagged array."""
    return np1(ak.flatten(x, axis=1)), np1(ak.num(x, axis=1))


def _event_of(counts: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(counts.size), counts)


def gen_boson_qt(cols: dict[str, Any], sel: np.ndarray, boson: str) -> tuple[np.ndarray, ...]:
    """(qx, qy) of the first last-copy generator boson of the selected events (0 if none).

    Flat numpy on the whole chunk (awkward slicing of four jagged columns cost more than the
    correction itself)."""
    pdg, counts = _flat(cols["GenPart_pdgId"])
    flags = _flat(cols["GenPart_statusFlags"])[0]
    mask = np.isin(np.abs(pdg), BOSON_PDGID[boson]) & ((flags & theory.IS_LAST_COPY) != 0)
    idx = np.flatnonzero(mask)
    ev, first = np.unique(_event_of(counts)[idx], return_index=True)
    pt = np.zeros(counts.size)
    phi = np.zeros(counts.size)
    pt[ev] = _flat(cols["GenPart_pt"])[0][idx[first]]
    phi[ev] = _flat(cols["GenPart_phi"])[0][idx[first]]
    pt, phi = pt[sel], phi[sel]
    return pt * np.cos(phi), pt * np.sin(phi)


def prompt_muon_sum(cols: dict[str, Any], sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(px, py) of the reconstructed prompt muons (genPartFlav 1) of the selected events."""
    pt, counts = _flat(cols["Muon_pt"])
    phi = _flat(cols["Muon_phi"])[0]
    w = pt.astype(np.float64) * (_flat(cols["Muon_genPartFlav"])[0] == 1)
    ev = _event_of(counts)
    px = np.bincount(ev, w * np.cos(phi), minlength=counts.size)
    py = np.bincount(ev, w * np.sin(phi), minlength=counts.size)
    return px[sel], py[sel]


@dataclass
class RecoilMT:
    """mT from the calibrated recoil, and per eigen-variation (K, 2 = down, up) of it."""

    nominal: np.ndarray
    varied: list[list[np.ndarray]] | None


def corrected_mt(
    calib: RecoilCalibration,
    cols: dict[str, Any],
    sel: np.ndarray,
    boson: str,
    mu_pt: np.ndarray,
    mu_phi: np.ndarray,
    *,
    variations: bool,
) -> RecoilMT:
    """mT of the selected muon with the recoil of a simulated W/Z event calibrated to data.

    u = -(MET + prompt muons) is corrected at the generator boson qT; MET = -(u + prompt
    muons) again (the muons keep their momenta), so only the hadronic part changes."""
    missing = [
        k for k in ("GenPart_phi", "GenPart_statusFlags", "Muon_genPartFlav") if k not in cols
    ]
    if missing:
        raise ProcessorError(f"recoil calibration of simulation needs the inputs {missing}")
    met = np1(cols["MET_pt"])[sel].astype(np.float64)
    met_phi = np1(cols["MET_phi"])[sel].astype(np.float64)
    mx, my = prompt_muon_sum(cols, sel)
    ux, uy = -(met * np.cos(met_phi) + mx), -(met * np.sin(met_phi) + my)
    qx, qy = gen_boson_qt(cols, sel, boson)

    frame = calib.frame(ux, uy, qx, qy)

    def mt(shift: np.ndarray | None) -> np.ndarray:
        cx, cy = calib.correct_frame(frame, shift)
        ex, ey = -(cx + mx), -(cy + my)
        return S.transverse_mass(mu_pt, mu_phi, np.hypot(ex, ey), np.arctan2(ey, ex))

    varied = None
    if variations:
        varied = [[mt(-calib.eigen[k]), mt(calib.eigen[k])] for k in range(calib.n_eigen)]
    return RecoilMT(mt(None), varied)


def recoil_tensor_axes(calib: RecoilCalibration) -> tuple[Any, ...]:
    """Tensor axes of the ``<base>_recoil`` variation histogram: recoilEig x downUpVar."""
    return (tensor_axis("recoilEig", calib.n_eigen), down_up_axis())


def fill_migrations(
    out: ChunkOutput,
    name: str,
    values: list[np.ndarray],
    weight: np.ndarray,
    varied_last: list[list[np.ndarray]],
) -> None:
    """Fill a variation histogram whose last axis value (mT) differs per tensor cell.

    Every cell starts as the nominal (one fill with a tensor of ones); then only the events
    whose last-axis bin changes under a variation are moved in that cell (a one-hot tensor,
    -weight at the nominal bin, +weight at the varied one). Recoil variations move few events
    across the mT bin edges, so this costs about one fill, not one per cell."""
    h = out.hists[name]
    n_cells = h.ntensor
    shape = h.tensor_shape
    out.fill(name, *values, weight=weight, tensor=np.ones((len(weight), *shape)))
    axis = h.axes[-1]
    nominal_bin = axis.index(values[-1])
    cell = 0
    for per_eig in varied_last:
        for v in per_eig:
            last = v > S.MT_CUT if values[-1].dtype == bool else v
            moved = np.flatnonzero(axis.index(last) != nominal_bin)
            if moved.size:
                onehot = np.zeros((moved.size, n_cells))
                onehot[:, cell] = 1.0
                onehot = onehot.reshape(moved.size, *shape)
                head = [x[moved] for x in values[:-1]]
                out.fill(name, *head, last[moved], weight=weight[moved], tensor=onehot)
                out.fill(name, *head, values[-1][moved], weight=-weight[moved], tensor=onehot)
            cell += 1


# ----------------------------------------------------------------------------- processor
def _moments(v: np.ndarray, p: np.ndarray, qt: np.ndarray) -> np.ndarray:
    """(n, len(MOMENTS)) raw moments 1, qT, v..v^4, p..p^4 of each event."""
    return np.stack([np.ones_like(v), qt, v, v**2, v**3, v**4, p, p**2, p**3, p**4], axis=1)


class RecoilProcessor(MuonAnalysis):
    """Z -> mu mu recoil: ``recoil_moments`` (qT x moment), ``recoil_upar`` / ``recoil_uperp``
    (qT x u_par + qT / u_perp), and for simulation ``recoil_moments_gen`` (generator qT x moment,
    projected on the generator boson). Option ``recoil_calibration``: correct simulation first."""

    name = "mz_recoil"
    fit_setup = None
    required_inputs = (*S.MUON_BRANCHES, "trigger", "MET_pt", "MET_phi")

    def __init__(self, *, systematics: bool = True, **options: Any) -> None:
        super().__init__(systematics=systematics, **options)
        path = options.get("recoil_calibration")
        self.recoil = load_calibration(path) if path else None

    def histograms(self, dataset: Any) -> dict[str, TensorHist]:
        qt = hist.axis.Variable(QT_EDGES, name="qt", label="qT (GeV)", underflow=False)
        mom = tensor_axis("moment", labels=list(MOMENTS))
        out = {
            "recoil_moments": TensorHist([qt], [mom], storage="weight", name="recoil_moments"),
            "recoil_upar": TensorHist(
                [qt, hist.axis.Regular(*DIST_BINS, name="upar", label="u_par + qT (GeV)")],
                storage="weight",
            ),
            "recoil_uperp": TensorHist(
                [qt, hist.axis.Regular(*DIST_BINS, name="uperp", label="u_perp (GeV)")],
                storage="weight",
            ),
        }
        if not dataset.is_data:
            gq = hist.axis.Variable(
                QT_EDGES, name="qt", label="generator qT (GeV)", underflow=False
            )
            out["recoil_moments_gen"] = TensorHist([gq], [mom], storage="weight")
        return out

    def process(self, events: Events, out: ChunkOutput) -> None:
        info = self.sample_info(out.dataset)
        required = [*self.required_inputs]
        optional = ["run", "luminosityBlock", *S.TRIGOBJ_BRANCHES, *mc_columns(info)]
        if info.is_data:
            required += ["run", "luminosityBlock"]
        cols = read_columns(events, info, required, optional)
        gen = read_gen_inputs(events, info, self.eras, str(out.dataset.era))
        cols.update(gen)
        if events.tracing:
            return
        from wremnants_dask.processors.mw import calibrated_pt  # mw imports this module
        from wremnants_dask.processors.zdilepton import dimuon_sf_inputs

        pt = calibrated_pt(self.payload, cols, info.is_data, self.options)
        dm = select_dimuons(cols, pt, info, out, pt_max=None)
        sel = dm.mask
        muons = dimuon_sf_inputs(dm.eta, dm.pt, dm.gen_pt, dm.matched)
        w = event_weights(cols, sel, muons, info, self.payload, systematics=False,
                          eff_stat_diagonal=False).nominal  # fmt: skip
        qx = (dm.pt * np.cos(dm.phi)).sum(axis=1)
        qy = (dm.pt * np.sin(dm.phi)).sum(axis=1)
        met = np1(cols["MET_pt"])[sel].astype(np.float64)
        met_phi = np1(cols["MET_phi"])[sel].astype(np.float64)
        ux, uy = -(met * np.cos(met_phi) + qx), -(met * np.sin(met_phi) + qy)
        gen_ok = applies(info) and "GenPart_phi" in cols and "GenPart_statusFlags" in cols
        if gen_ok:
            gx, gy = gen_boson_qt(cols, sel, "Z")
            if self.recoil is not None:
                ux, uy = self.recoil.correct(ux, uy, gx, gy)
        qt = np.hypot(qx, qy)
        upar, uperp = components(ux, uy, qx, qy)
        v = upar + qt
        out.fill("recoil_moments", qt, weight=w, tensor=_moments(v, uperp, qt))
        out.fill("recoil_upar", qt, v, weight=w)
        out.fill("recoil_uperp", qt, uperp, weight=w)
        if not info.is_data:
            if gen_ok:
                gqt = np.hypot(gx, gy)
                gpar, gperp = components(ux, uy, gx, gy)
                out.fill(
                    "recoil_moments_gen", gqt, weight=w, tensor=_moments(gpar + gqt, gperp, gqt)
                )
