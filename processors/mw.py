"""W mass analysis (``--analysis mw``): one isolated prompt muon, eta x pT x charge templates.

Selection as in the CMS measurement: HLT_IsoMu24 (the era's single-muon trigger, see
configs/nanoaod_eras.yaml), exactly one good muon (medium ID, 26 < pT < 56 GeV, |eta| < 2.4,
|dxy| < 0.05 cm), no other loose muon (pT > 15 GeV), prompt generator matching for W/Z
simulation, golden JSON for data. The histograms keep the isolation decision
(relIso04 < 0.15) and mT in bins (``MT_EDGES``: two sidebands below the 40 GeV cut, the signal
region above) as axes, so the non-prompt background is estimated from data later with the
extended ABCD method (fitsetup/abcd.py: a fake rate log-linear in mT, smoothed in pT).
Systematic variations are tensor axes (see common.py).
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import hist
import numpy as np

from wremnants_dask.engine.processor import ChunkOutput, Events
from wremnants_dask.engine.tensorhist import TensorHist
from wremnants_dask.processors import bosonpt as BPT
from wremnants_dask.processors import muon_calibration as MC
from wremnants_dask.processors import recoil
from wremnants_dask.processors import selection as S
from wremnants_dask.processors.common import (
    MuonAnalysis,
    SelectedMuons,
    eta_pt_charge_axes,
    fill_all,
    gen_pt_of,
    mc_columns,
    np1,
    read_columns,
)

EVENT_BRANCHES = ["trigger", "MET_pt", "MET_phi"]


def calibrated_pt(
    payload: Any, cols: dict[str, Any], is_data: bool, options: dict[str, Any]
) -> ak.Array:
    """Muon pT used by the selection.

    Data: divided by (1 + the payload's scale offset of the muon's eta slice) unless
    ``calibrate_data=False``. Simulation: multiplied by (1 + ``mc_pt_shift``) when that option
    is set, a direct momentum-scale shift that validates the weight-based scale variations.
    """
    pt = cols["Muon_pt"]
    shift = float(options.get("mc_pt_shift", 0.0) or 0.0)
    calibrate = is_data and options.get("calibrate_data", True)
    if not calibrate and (is_data or shift == 0.0):
        return pt
    counts = np1(ak.num(pt, axis=1))
    flat = np1(ak.flatten(pt, axis=1)).astype(np.float64)
    if calibrate:
        eta = np1(ak.flatten(cols["Muon_eta"], axis=1)).astype(np.float64)
        flat = flat / (1.0 + payload.scale_data(eta))
    else:
        flat = flat * (1.0 + shift)
    return ak.unflatten(flat, counts)


#: mT bin edges (GeV): sidebands [0, 20), [20, 40) and the signal region mT > 40 GeV (the upper
#: edge is beyond any mT at 13.6 TeV). Equal-width sidebands: the extended ABCD extrapolates the
#: log fake rate linearly in the bin index (positions 10, 30 -> 50 GeV).
MT_EDGES = (0.0, 20.0, S.MT_CUT, 14000.0)


class WMassProcessor(MuonAnalysis):
    """Histograms ``nominal`` (eta, pt, charge, passIso, passMT or mt) and ``nominal_<variation>``.

    Options (besides ``systematics``): ``corrections`` (payload path), ``bw_window``,
    ``recoil_calibration`` (a file of ``python -m wremnants_dask.recoil``: the recoil of W and
    Z -> mu mu simulation is calibrated to data and mT recomputed from it, with the
    ``nominal_recoil`` eigen-variations; processors/recoil.py),
    ``calibrate_data`` (default True: apply the payload's data momentum-scale correction),
    ``muon_calibration`` (a payload of the ``mucalib`` stage: data scale and simulation
    resolution corrected with the measured calibration instead, with its statistical and
    closure nuisances; processors/muon_calibration.py),
    ``boson_pt_weights`` (a file of ``python -m wremnants_dask.bosonpt``: W/Z simulation
    weighted at the generator boson pT by the Z-measured data/simulation ratio, with the
    ``nominal_bosonPtStat`` / ``nominal_bosonPtTheory`` variations; processors/bosonpt.py),
    ``mc_pt_shift`` (relative shift of simulated muon pT, for validation), ``abcd``
    ("extended", default: mT in ``MT_EDGES`` bins, so setup_fit runs the extended ABCD with the
    factorised fake rate and the MC non-closure correction; "simple": a Boolean ``passMT`` axis,
    B*C/D). The fit itself is configs/fit_mw.yaml.
    """

    name = "mw"
    eff_stat_diagonal = True
    required_inputs = (*S.MUON_BRANCHES, *EVENT_BRANCHES)

    def __init__(self, *, systematics: bool = True, **options: Any) -> None:
        super().__init__(systematics=systematics, **options)
        abcd = options.get("abcd", "extended")
        if abcd not in ("simple", "extended"):
            raise ValueError(f"mw option abcd must be 'simple' or 'extended', got {abcd!r}")
        self.mt_binned = abcd == "extended"
        # measured momentum calibration (mucalib stage): replaces the payload's data scale
        path = options.get("muon_calibration")
        self.calibration = MC.MomentumCalibration(path) if path else None
        path = options.get("recoil_calibration")
        self.recoil = recoil.load_calibration(path) if path else None
        path = options.get("boson_pt_weights")
        self.boson_pt = BPT.load_weights(path) if path else None

    def axes(self) -> list[Any]:
        mt = (
            hist.axis.Variable(
                MT_EDGES, name="mt", label="$m_T$ (GeV)", underflow=False, overflow=False
            )
            if self.mt_binned
            else hist.axis.Boolean(name="passMT", label=f"mT > {S.MT_CUT} GeV")
        )
        return [
            *eta_pt_charge_axes(self.payload),
            hist.axis.Boolean(name="passIso", label=f"relIso04 < {S.ISO_CUT}"),
            mt,
        ]

    def histograms(self, dataset: Any) -> dict[str, TensorHist]:
        out = self.declare("nominal", self.axes(), dataset)
        if self.calibration is not None and self.systematics and not dataset.is_data:
            out.update(MC.declare("nominal", self.axes(), self.calibration))
        if self._recoil_applies(dataset) and self.systematics:
            taxes = recoil.recoil_tensor_axes(self.recoil)
            out["nominal_recoil"] = TensorHist(self.axes(), taxes, name="nominal_recoil")
        if self._boson_pt_applies(dataset) and self.systematics:
            out.update(BPT.declare("nominal", self.axes(), self.boson_pt))
        return out

    def _boson_pt_applies(self, dataset: Any) -> bool:
        return self.boson_pt is not None and BPT.applies(self.sample_info(dataset))

    def _recoil_applies(self, dataset: Any) -> bool:
        return self.recoil is not None and recoil.applies(self.sample_info(dataset))

    def process(self, events: Events, out: ChunkOutput) -> None:
        info = self.sample_info(out.dataset)
        optional = ["run", "luminosityBlock", *S.TRIGOBJ_BRANCHES, *mc_columns(info)]
        if self.calibration is not None:
            optional.append("event")
        cols = read_columns(events, info, S.MUON_BRANCHES + EVENT_BRANCHES, optional)
        apply_recoil = self.recoil is not None and recoil.applies(info)
        if apply_recoil:
            cols.update(recoil.read_gen_inputs(events, info, self.eras, str(out.dataset.era)))
        if events.tracing:
            return
        if self.calibration is not None:
            pt = MC.calibrated_pt(self.calibration, self.payload, cols, info.is_data)
        else:
            pt = calibrated_pt(self.payload, cols, info.is_data, self.options)
        good, n_good, n_loose, cf = S.muon_preselection(out, cols, pt, info.is_data)
        mask = cf.cut("one good muon", n_good == 1)
        mask = cf.cut("loose muon veto", n_loose == 1)
        matched = S.trigger_matched(cols)
        if matched is not None:
            fired = np.nan_to_num(S.first_true(matched, good), nan=0.0).astype(bool)
            mask = cf.cut("trigger match", fired)
        match = S.prompt_match(cols, info.prompt_flavours)
        if match is not None:
            prompt = np.nan_to_num(S.first_true(match, good), nan=0.0).astype(bool)
            mask = cf.cut("prompt match", prompt)

        sel = mask
        mu_pt = S.first_true(pt, good)[sel]
        mu_eta = S.first_true(cols["Muon_eta"], good)[sel]
        mu_phi = S.first_true(cols["Muon_phi"], good)[sel]
        mu_charge = S.first_true(cols["Muon_charge"], good)[sel]
        mu_iso = S.first_true(cols["Muon_pfRelIso04_all"], good)[sel]
        mt = S.transverse_mass(mu_pt, mu_phi, np1(cols["MET_pt"])[sel], np1(cols["MET_phi"])[sel])
        rmt = None
        if apply_recoil:
            rmt = recoil.corrected_mt(
                self.recoil, cols, sel, info.boson, mu_pt, mu_phi, variations=self.systematics
            )
            mt = rmt.nominal
        n = int(sel.sum())
        if info.is_data or "Muon_genPartIdx" not in cols:
            gen_pt = np.full(n, np.nan)
        else:
            idx = S.first_true(cols["Muon_genPartIdx"], good)[sel]
            idx = np.nan_to_num(idx, nan=-1).astype(np.int64)
            gen_pt = gen_pt_of(cols, idx, np.flatnonzero(sel))
        muons = SelectedMuons(
            mu_eta, mu_pt, gen_pt, np.ones(n, dtype=np.int64), fail={"iso": mu_iso >= S.ISO_CUT}
        )
        weights = self.event_weights(cols, sel, muons, info)
        if self.boson_pt is not None and BPT.applies(info):
            BPT.apply_weights(weights, self.boson_pt, cols, sel, info.boson,
                              variations=self.systematics)  # fmt: skip
        if self.calibration is not None and self.systematics and not info.is_data:
            weights.tensors.update(
                MC.tensors(self.calibration, self.payload, mu_eta, mu_pt, gen_pt)
            )
        values = [
            mu_eta,
            mu_pt,
            mu_charge,
            mu_iso < S.ISO_CUT,
            mt if self.mt_binned else mt > S.MT_CUT,
        ]
        fill_all(out, "nominal", values, weights)
        if rmt is not None and rmt.varied is not None:
            recoil.fill_migrations(out, "nominal_recoil", values, weights.nominal, rmt.varied)
