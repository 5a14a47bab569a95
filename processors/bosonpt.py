"""Boson pT: the Z -> mu mu measurement inputs (``mz_bosonpt``) and the weights' use in mw.

``BosonPtProcessor`` selects Z -> mu mu events (dimuon.py, as ``mz_dilepton``) and fills the
reconstructed dilepton pT (``bosonpt_reco``); W/Z simulation also fills, per reconstructed bin,
the sums of w t^k(qT_gen) over the basis of ``corrections/boson_pt.py`` (``bosonpt_fold``: the
simulation's response, what the forward-folding fit needs), and the generator qT of the
selected events (``bosonpt_gen``) and of all generated events (``bosonpt_gen_all``, generator
weight only). With the option ``boson_pt_weights`` (a file of ``python -m
wremnants_dask.bosonpt``) the W/Z simulation is weighted first: the closure check.

``apply_weights`` is the W side: the event weight times r(qT_gen) and the variation tensors
``bosonPtStat`` (eigen-variations) and ``bosonPtTheory`` (theory modes).
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import hist
import numpy as np

from wremnants_dask.corrections.boson_pt import (
    GEN_EDGES,
    MAX_DEGREE,
    QT_EDGES,
    BosonPtWeights,
    basis,
    load_weights,
)
from wremnants_dask.engine.processor import ChunkOutput, Events, ProcessorError
from wremnants_dask.engine.tensorhist import TensorHist, tensor_axis
from wremnants_dask.processors import selection as S
from wremnants_dask.processors import theory
from wremnants_dask.processors.common import (
    BOSON_PDGID,
    EventWeights,
    MuonAnalysis,
    SampleInfo,
    down_up_axis,
    event_weights,
    mc_columns,
    np1,
    read_columns,
)
from wremnants_dask.processors.dimuon import select_dimuons

__all__ = ["BosonPtProcessor", "apply_weights", "applies", "gen_boson_pt", "load_weights"]


def applies(info: SampleInfo) -> bool:
    """Is this sample's boson pT reweighted: W or Z simulation (any decay)."""
    return (not info.is_data) and info.boson in ("W", "Z")


def gen_boson_pt(cols: dict[str, Any], boson: str) -> np.ndarray:
    """pT of the first last-copy generator boson of every event of the chunk (NaN if none)."""
    missing = [k for k in ("GenPart_pt", "GenPart_pdgId", "GenPart_statusFlags") if k not in cols]
    if missing:
        raise ProcessorError(f"boson-pT weights need the generator inputs {missing}")
    pdg = np1(ak.flatten(cols["GenPart_pdgId"], axis=1))
    counts = np1(ak.num(cols["GenPart_pdgId"], axis=1))
    flags = np1(ak.flatten(cols["GenPart_statusFlags"], axis=1))
    pt = np1(ak.flatten(cols["GenPart_pt"], axis=1)).astype(np.float64)
    mask = np.isin(np.abs(pdg), BOSON_PDGID[boson]) & ((flags & theory.IS_LAST_COPY) != 0)
    idx = np.flatnonzero(mask)
    event = np.repeat(np.arange(counts.size), counts)[idx]
    ev, first = np.unique(event, return_index=True)
    out = np.full(counts.size, np.nan)
    out[ev] = pt[idx[first]]
    return out


def tensor_axes(weights: BosonPtWeights) -> dict[str, tuple[Any, ...]]:
    """Variation suffix -> tensor axes: bosonPtStat (eigen x downUpVar), bosonPtTheory (mode
    x downUpVar)."""
    out: dict[str, tuple[Any, ...]] = {}
    if weights.n_eigen:
        out["bosonPtStat"] = (tensor_axis("bosonPtEig", weights.n_eigen), down_up_axis())
    if weights.theory:
        out["bosonPtTheory"] = (
            tensor_axis("bosonPtMode", labels=weights.theory_names),
            down_up_axis(),
        )
    return out


def declare(base: str, axes: list[Any], weights: BosonPtWeights) -> dict[str, TensorHist]:
    """The ``<base>_bosonPtStat`` / ``<base>_bosonPtTheory`` histograms."""
    return {
        f"{base}_{suffix}": TensorHist(axes, taxes, storage="double", name=f"{base}_{suffix}")
        for suffix, taxes in tensor_axes(weights).items()
    }


def apply_weights(
    weights: EventWeights,
    bpt: BosonPtWeights,
    cols: dict[str, Any],
    sel: np.ndarray,
    boson: str,
    *,
    variations: bool,
) -> None:
    """Multiply the nominal weights of the selected events by r(qT_gen) and add the relative
    variation tensors (events without a generator boson: weight 1)."""
    qt = gen_boson_pt(cols, boson)[sel]
    have = np.isfinite(qt)
    q = np.where(have, qt, 0.0)
    r = np.where(have, bpt.weight(q), 1.0)
    weights.nominal = weights.nominal * r
    if not variations:
        return
    if bpt.n_eigen:
        stat = np.where(have[:, None, None], bpt.eigen_tensor(q), 1.0)
        weights.tensors["bosonPtStat"] = lambda s, a=stat: a[s]
    if bpt.theory:
        th = np.where(have[:, None, None], bpt.theory_tensor(q), 1.0)
        weights.tensors["bosonPtTheory"] = lambda s, a=th: a[s]


class BosonPtProcessor(MuonAnalysis):
    """Z -> mu mu dilepton pT for the boson-pT measurement (module doc). Option
    ``boson_pt_weights``: weight W/Z simulation with a measured file first."""

    name = "mz_bosonpt"
    fit_setup = None
    required_inputs = (*S.MUON_BRANCHES, "trigger")

    def __init__(self, *, systematics: bool = False, **options: Any) -> None:
        super().__init__(systematics=systematics, **options)
        path = options.get("boson_pt_weights")
        self.boson_pt = load_weights(path) if path else None

    def histograms(self, dataset: Any) -> dict[str, TensorHist]:
        reco = hist.axis.Variable(
            QT_EDGES, name="ptll", label="pT(mu mu) (GeV)", underflow=False, overflow=True
        )
        out = {"bosonpt_reco": TensorHist([reco], storage="weight", name="bosonpt_reco")}
        if applies(self.sample_info(dataset)):
            gen = hist.axis.Variable(
                GEN_EDGES, name="qt", label="generator qT (GeV)", underflow=False, overflow=True
            )
            b = tensor_axis("basis", MAX_DEGREE + 1)
            out["bosonpt_fold"] = TensorHist([reco], [b], storage="weight", name="bosonpt_fold")
            out["bosonpt_gen"] = TensorHist([gen], storage="weight", name="bosonpt_gen")
            out["bosonpt_gen_all"] = TensorHist([gen], storage="weight", name="bosonpt_gen_all")
        return out

    def process(self, events: Events, out: ChunkOutput) -> None:
        info = self.sample_info(out.dataset)
        required = [*self.required_inputs]
        if info.is_data:
            required += ["run", "luminosityBlock"]
        optional = ["run", "luminosityBlock", *S.TRIGOBJ_BRANCHES, *mc_columns(info)]
        cols = read_columns(events, info, required, optional)
        if events.tracing:
            return
        from wremnants_dask.processors.mw import calibrated_pt
        from wremnants_dask.processors.zdilepton import dimuon_sf_inputs

        boson = applies(info)
        qt_all = gen_boson_pt(cols, info.boson) if boson else None
        if boson:
            gw = np1(cols["genWeight"]).astype(np.float64) if "genWeight" in cols else None
            gw = np.ones(qt_all.size) if gw is None else gw
            if self.boson_pt is not None:
                r = self.boson_pt.weight(np.nan_to_num(qt_all))
                gw = gw * np.where(np.isfinite(qt_all), r, 1.0)
            out.fill("bosonpt_gen_all", np.nan_to_num(qt_all, nan=-1.0), weight=gw)
        pt = calibrated_pt(self.payload, cols, info.is_data, self.options)
        dm = select_dimuons(cols, pt, info, out, pt_max=None)
        _, ptll, _ = S.dimuon_kinematics(
            dm.pt[:, 0], dm.eta[:, 0], dm.phi[:, 0], dm.pt[:, 1], dm.eta[:, 1], dm.phi[:, 1]
        )
        muons = dimuon_sf_inputs(dm.eta, dm.pt, dm.gen_pt, dm.matched)
        weights = event_weights(cols, dm.mask, muons, info, self.payload, systematics=False,
                                eff_stat_diagonal=False)  # fmt: skip
        if boson and self.boson_pt is not None:
            apply_weights(weights, self.boson_pt, cols, dm.mask, info.boson, variations=False)
        w = weights.nominal
        out.fill("bosonpt_reco", ptll, weight=w)
        if boson:
            qt = qt_all[dm.mask]
            q = np.nan_to_num(qt, nan=-1.0)
            out.fill("bosonpt_gen", q, weight=w)
            out.fill("bosonpt_fold", ptll, weight=w, tensor=basis(np.maximum(q, 0.0), MAX_DEGREE))
