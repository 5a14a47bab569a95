"""Muon momentum calibration histograms (``--analysis mz_mucalib``) from Z -> mu mu events.

The dimuon selection of dimuon.py on *uncalibrated* muon pT (data and simulation alike), no
upper pT cut. Histogram ``calib_mll``: the positive and negative muon's eta in the calibration
bins x ``oddEvent`` (event-number parity: simulation's two halves serve the closure test) x mll
near the peak.

For simulation the templates are per-event expectations, not realised values: with the
generator momenta pT_gen of both muons (the reconstructed angles) an event has
mll_gen = mll sqrt(pT_gen+ pT_gen- / (pT+ pT-)), and its reconstructed mll is, under the
Gaussian response pT = pT_gen (1 + delta) (1 + k sigma N) (sigma: the payload's resolution),
Gaussian with mean mll_gen sqrt((1 + delta+)(1 + delta-)) and width
mean sqrt((k+ sigma+)^2 + (k- sigma-)^2) / 2. ``calib_mll_model`` (tensor axis ``mllBin``)
holds each event's probabilities of the mll bins at delta = 0, k = 1; ``calib_mll_delta``
(ordinary axis ``calibVar``) for each parameter p, over the events it affects, the
probabilities with p moved up (entry ``3p``) and down (``3p + 1``) by one step, and at the
nominal (``3p + 2``), p = [scale bins (delta = +-scale_step for the muons in the bin)...,
resolution regions (k^2 = 1 +- res_step for the muons in the region)...]. Why expectations: a
change of 2e-3 in scale moves only ~10 % of the events across a 0.5 GeV bin, so differences of
realised fills (or per-event reweightings, measured too) are noisy derivatives whose noise
inflates the fit's information and pulls the estimates towards the template point (resolution
ratio 1.10 measured as ~1.04); the expectations change smoothly with the parameters, their
noise is the sampling of the generator-level events only. ``calib_mll`` of simulation (the
realised events) is the pseudo-data of the closure test.
corrections/momentum_calibration.py fits the data.
"""

from __future__ import annotations

from typing import Any

import hist
import numpy as np
from scipy.special import ndtr

from wremnants_dask.engine.processor import ChunkOutput, Events
from wremnants_dask.engine.tensorhist import TensorHist, tensor_axis
from wremnants_dask.processors import selection as S
from wremnants_dask.processors.common import (
    MuonAnalysis,
    event_weights,
    mc_columns,
    np1,
    read_columns,
)
from wremnants_dask.processors.dimuon import select_dimuons
from wremnants_dask.processors.zdilepton import dimuon_sf_inputs

#: Calibration eta bins (12 x 0.4) and resolution regions in |eta| (barrel, overlap, endcap).
CALIB_ETA_EDGES = tuple(float(x) for x in np.round(np.linspace(-2.4, 2.4, 13), 6))
RES_ABSETA_EDGES = (0.0, 0.8, 1.6, 2.4)
#: mll fit range around the Z peak: 48 bins of 0.5 GeV.
MLL_BINS = (48, 78.0, 102.0)
#: Template steps: relative scale shift, and change of the squared resolution ratio k^2 (the
#: extra smearing adds in quadrature, so the shape is nearly linear in k^2; k^2 = 1.2: k = 1.095).
SCALE_STEP = 2.0e-3
RES_STEP = 0.2


def _edges(value: Any, default: tuple[float, ...], key: str) -> tuple[float, ...]:
    edges = tuple(float(x) for x in (default if value is None else value))
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"mz_mucalib option {key} must be increasing edges, got {value!r}")
    return edges


class MuonCalibProcessor(MuonAnalysis):
    """Histograms ``calib_mll`` (all samples) and ``calib_mll_delta`` (simulation).

    Options: ``calib_eta_edges`` (scale bins), ``res_abseta_edges`` (resolution regions),
    ``scale_step``, ``res_step``, plus the MuonAnalysis ones (``corrections``: the payload of
    the efficiency scale factors and pileup weights applied to simulation). No variation
    tensors: the calibration's own templates are its systematics.
    """

    name = "mz_mucalib"
    required_inputs = (*S.MUON_BRANCHES, "trigger")

    def __init__(self, *, systematics: bool = True, **options: Any) -> None:
        super().__init__(systematics=systematics, **options)
        self.eta_edges = _edges(options.get("calib_eta_edges"), CALIB_ETA_EDGES, "calib_eta_edges")
        self.res_edges = _edges(
            options.get("res_abseta_edges"), RES_ABSETA_EDGES, "res_abseta_edges"
        )
        if self.res_edges[0] != 0.0 or self.res_edges[-1] < S.ETA_MAX:
            raise ValueError(f"mz_mucalib: res_abseta_edges must cover [0, {S.ETA_MAX}]")
        self.scale_step = float(options.get("scale_step", SCALE_STEP))
        self.res_step = float(options.get("res_step", RES_STEP))
        self.n_scale = len(self.eta_edges) - 1
        self.n_res = len(self.res_edges) - 1

    @property
    def n_params(self) -> int:
        return self.n_scale + self.n_res

    def calibration_binning(self) -> dict[str, Any]:
        """What the fit needs to interpret the histograms (also stored in the output)."""
        return {
            "eta_edges": list(self.eta_edges),
            "res_abseta_edges": list(self.res_edges),
            "scale_step": self.scale_step,
            "res_step": self.res_step,
            "mll_bins": list(MLL_BINS),
        }

    def analysis_metadata(self) -> dict[str, Any]:
        return {**super().analysis_metadata(), "momentum_calibration": self.calibration_binning()}

    def axes(self) -> list[Any]:
        edges = self.eta_edges
        return [
            hist.axis.Variable(edges, name="etaPlus", underflow=False, overflow=False),
            hist.axis.Variable(edges, name="etaMinus", underflow=False, overflow=False),
            hist.axis.Boolean(name="oddEvent", label="event number odd"),
            hist.axis.Regular(*MLL_BINS, name="mll", underflow=False, overflow=False),
        ]

    def histograms(self, dataset: Any) -> dict[str, TensorHist]:
        self.sample_info(dataset)  # checks the inputs early, with the file named
        out = {"calib_mll": TensorHist(self.axes(), storage="weight", name="calib_mll")}
        if not dataset.is_data:
            cats = self.axes()[:3]
            mll = tensor_axis("mllBin", MLL_BINS[0])
            out["calib_mll_model"] = TensorHist(
                cats, [mll], storage="weight", name="calib_mll_model"
            )
            var = hist.axis.Integer(
                0, 3 * self.n_params, name="calibVar", underflow=False, overflow=False
            )
            out["calib_mll_delta"] = TensorHist(
                [*cats, var], [mll], storage="double", name="calib_mll_delta"
            )
        return out

    def process(self, events: Events, out: ChunkOutput) -> None:
        info = self.sample_info(out.dataset)
        optional = ["run", "luminosityBlock", "event", *S.TRIGOBJ_BRANCHES, *mc_columns(info)]
        cols = read_columns(events, info, list(self.required_inputs), optional)
        if events.tracing:
            return
        dm = select_dimuons(cols, cols["Muon_pt"], info, out, pt_max=None)
        sel_muons = dimuon_sf_inputs(dm.eta, dm.pt, dm.gen_pt, dm.matched)
        w = event_weights(
            cols, dm.mask, sel_muons, info, self.payload, systematics=False, eff_stat_diagonal=False
        ).nominal
        if "event" not in cols:
            raise KeyError(f"dataset {info.name!r}: the calibration needs the 'event' branch")
        odd = (np1(cols["event"])[dm.mask] % 2).astype(bool)  # odd event numbers
        mll = _mll(dm.pt, dm.eta, dm.phi)
        out.fill("calib_mll", dm.eta[:, 0], dm.eta[:, 1], odd, mll, weight=w)
        if info.is_data:
            return
        self._fill_model(out, dm, w, odd, mll)

    def _fill_model(
        self, out: ChunkOutput, dm: Any, w: np.ndarray, odd: np.ndarray, mll: np.ndarray
    ) -> None:
        """Fill the per-event expectations and their changes (see the module docstring).
        Events without generator momenta for both muons (backgrounds with a non-prompt muon)
        enter the model as they are, without changes."""
        ok = np.all(np.isfinite(dm.gen_pt) & (dm.gen_pt > 0), axis=1)
        edges = np.linspace(MLL_BINS[1], MLL_BINS[2], MLL_BINS[0] + 1)
        if not ok.all():
            bad = ~ok
            ib = np.searchsorted(edges, mll[bad], side="right") - 1
            inside = (ib >= 0) & (ib < MLL_BINS[0])
            onehot = np.zeros((int(bad.sum()), MLL_BINS[0]))
            onehot[np.flatnonzero(inside), ib[inside]] = 1.0
            out.fill(
                "calib_mll_model", dm.eta[bad, 0], dm.eta[bad, 1], odd[bad],
                weight=w[bad], tensor=onehot,
            )  # fmt: skip
        w, odd, mll = w[ok], odd[ok], mll[ok]
        eta, pt, gen = dm.eta[ok], dm.pt[ok], dm.gen_pt[ok]
        mll_gen = mll * np.sqrt(gen[:, 0] * gen[:, 1] / (pt[:, 0] * pt[:, 1]))
        sigma = self.payload.resolution(eta, gen)  # (n, 2) relative
        cats = (eta[:, 0], eta[:, 1], odd)

        def probs(rows: np.ndarray, delta: np.ndarray, k: np.ndarray) -> np.ndarray:
            mean = mll_gen[rows] * np.sqrt((1.0 + delta[:, 0]) * (1.0 + delta[:, 1]))
            width = 0.5 * mean * np.hypot(k[:, 0] * sigma[rows, 0], k[:, 1] * sigma[rows, 1])
            return np.diff(ndtr((edges[None, :] - mean[:, None]) / width[:, None]), axis=1)

        n = len(w)
        every = np.arange(n)
        zero, one = np.zeros((n, 2)), np.ones((n, 2))
        p0 = probs(every, zero, one)
        out.fill("calib_mll_model", *cats, weight=w, tensor=p0)
        scale_bin = np.clip(np.searchsorted(self.eta_edges, eta, side="right") - 1, 0, None)
        scale_bin = np.minimum(scale_bin, self.n_scale - 1)
        res_bin = np.searchsorted(self.res_edges, np.abs(eta), side="right") - 1
        res_bin = np.clip(res_bin, 0, self.n_res - 1) + self.n_scale
        for bins, is_scale in ((scale_bin, True), (res_bin, False)):
            for slot in (0, 1):
                mine = bins[:, slot]
                # each event once per parameter: the second muon only if in another bin
                rows = every if slot == 0 else np.flatnonzero(bins[:, 0] != mine)
                varied = (bins[rows] == mine[rows, None]).astype(np.float64)  # (m, 2)
                for entry, sign in enumerate((1.0, -1.0, 0.0)):
                    if sign == 0.0:
                        pv = p0[rows]
                    elif is_scale:
                        pv = probs(rows, sign * self.scale_step * varied, one[rows])
                    else:
                        pv = probs(rows, zero[rows], np.sqrt(1.0 + sign * self.res_step * varied))
                    var = (3 * mine[rows] + entry).astype(np.float64)
                    args = (eta[rows, 0], eta[rows, 1], odd[rows], var)
                    out.fill("calib_mll_delta", *args, weight=w[rows], tensor=pv)


def _mll(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    mll, _, _ = S.dimuon_kinematics(pt[:, 0], eta[:, 0], phi[:, 0], pt[:, 1], eta[:, 1], phi[:, 1])
    return np.asarray(mll, dtype=np.float64)
