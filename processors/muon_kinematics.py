"""A small W-like analysis built into the engine: single-muon kinematics in (eta, pT, charge).

It is the workload of the engine's tests and benchmarks: one tight, isolated-or-not muon, the
transverse mass with the MET, a 5D histogram (eta, pT, charge, passIso, passMT) weighted with
genWeight, and with systematics the PDF (LHEPdfWeight) and QCD-scale (LHEScaleWeight) variations
as tensor axes. It runs on real NanoAOD and on the synthetic files alike.
"""

from __future__ import annotations

from typing import Any

import hist
import numpy as np

from wremnants_dask.engine.event_weights import Weights, as_tensor
from wremnants_dask.engine.processor import ChunkOutput, Events, Processor
from wremnants_dask.engine.select import Rows, SingleObject, as_numpy
from wremnants_dask.engine.tensorhist import TensorHist, tensor_axis

__all__ = ["MuonKinematicsProcessor", "kinematic_axes"]


def kinematic_axes() -> list[Any]:
    """The W-mass-like 5D binning: 48 eta x 29 pT x charge x passIso x passMT."""
    return [
        hist.axis.Regular(48, -2.4, 2.4, name="eta", label=r"muon $\eta$"),
        hist.axis.Regular(29, 26.0, 55.0, name="pt", label=r"muon $p_T$ (GeV)"),
        hist.axis.Regular(2, -2.0, 2.0, name="charge", label="muon charge", flow=False),
        hist.axis.Boolean(name="passIso", label="isolated"),
        hist.axis.Boolean(name="passMT", label=r"$m_T > 40$ GeV"),
    ]


def _vector_sizes(path: str, treename: str, branches: tuple[str, ...]) -> dict[str, int | None]:
    """Entries per event of fixed-size jagged branches, from the first event of a file."""
    from wremnants_dask.inputs.files import open_tree  # runner imports processors' modules lazily

    out: dict[str, int | None] = dict.fromkeys(branches)
    tree = open_tree(path, treename)  # shared with the engine's file check
    if tree.num_entries == 0:
        return out
    for b in branches:
        if b in tree and "n" + b in tree:
            out[b] = int(tree["n" + b].array(library="np", entry_stop=1)[0])
    return out


class MuonKinematicsProcessor(Processor):
    """Exactly one good muon; fills (eta, pT, charge, passIso, passMT) with PDF/scale tensors.

    Options: ``pt_min`` (25 GeV), ``iso_max`` (0.15), ``mt_min`` (40 GeV), ``trigger``
    ("HLT_IsoMu24"; None to skip), ``met`` ("MET"), ``n_pdf``/``n_scale`` (None: read from the
    first file of each dataset).
    """

    name = "muon_kinematics"

    def __init__(
        self,
        *,
        systematics: bool = True,
        pt_min: float = 25.0,
        iso_max: float = 0.15,
        mt_min: float = 40.0,
        trigger: str | None = "HLT_IsoMu24",
        met: str = "MET",
        n_pdf: int | None = None,
        n_scale: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(systematics=systematics, **options)
        self.pt_min, self.iso_max, self.mt_min = pt_min, iso_max, mt_min
        self.trigger, self.met = trigger, met
        self.n_pdf, self.n_scale = n_pdf, n_scale
        self._sizes: dict[str, dict[str, int | None]] = {}

    def _tensor_sizes(self, dataset: Any) -> dict[str, int | None]:
        if dataset.name not in self._sizes:
            sizes = {"pdf": self.n_pdf, "scale": self.n_scale}
            if sizes["pdf"] is None or sizes["scale"] is None:
                found = _vector_sizes(
                    str(dataset.files[0]), dataset.treename, ("LHEPdfWeight", "LHEScaleWeight")
                )
                sizes["pdf"] = sizes["pdf"] or found["LHEPdfWeight"]
                sizes["scale"] = sizes["scale"] or found["LHEScaleWeight"]
            self._sizes[dataset.name] = sizes
        return self._sizes[dataset.name]

    def histograms(self, dataset: Any) -> dict[str, TensorHist]:
        axes = kinematic_axes()
        out = {"nominal": TensorHist(axes, storage="weight", label="muon kinematics")}
        if self.systematics and not dataset.is_data:
            sizes = self._tensor_sizes(dataset)
            if sizes["pdf"]:
                out["pdf"] = TensorHist(
                    axes,
                    [tensor_axis("pdfVar", sizes["pdf"], label="PDF replica")],
                    storage="weight",
                )
            if sizes["scale"]:
                out["scale"] = TensorHist(
                    axes,
                    [tensor_axis("scaleVar", sizes["scale"], label="muR/muF variation")],
                    storage="weight",
                )
        return out

    def process(self, events: Events, out: ChunkOutput) -> None:
        # Event-level arrays as numpy (as_numpy: zero-copy; typetracers pass through) and the
        # one-muon selection on flat buffers (SingleObject): the same values as the awkward
        # expressions, without awkward's per-call dispatch (most of this light analysis'
        # processing time, issue 17).
        one = SingleObject(
            events.Muon,
            lambda m: (m.pt > self.pt_min) & (abs(m.eta) < 2.4) & m.mediumId,
        )

        weights = Weights()
        if not out.is_data:
            weights.add("genWeight", events.genWeight)
        nominal = weights.weight() if weights.factors else None

        cf = out.cutflow("main")
        cf.start(as_numpy(events.nMuon) >= 0, nominal)
        if self.trigger:
            cf.cut("trigger", as_numpy(events.branch(self.trigger)))
        sel = cf.cut("one good muon", one.one)

        pt, eta, phi, charge, iso = (
            one.values(f, sel) for f in ("pt", "eta", "phi", "charge", "pfRelIso04_all")
        )
        rows = Rows(sel)
        met = getattr(events, self.met)
        met_pt, met_phi = rows(as_numpy(met.pt)), rows(as_numpy(met.phi))
        mt = np.sqrt(2.0 * pt * met_pt * (1.0 - np.cos(phi - met_phi)))
        values = (eta, pt, charge, iso < self.iso_max, mt > self.mt_min)

        w = rows(nominal) if nominal is not None else None
        out.fill("nominal", *values, weight=w)
        # Tensors: raw factors (float32 file buffers) with the nominal as the weight; the fill
        # shares the bin index computed for "nominal" and multiplies on the fly.
        for hname, branch in (("pdf", "LHEPdfWeight"), ("scale", "LHEScaleWeight")):
            if hname in out.hists:
                n = out.hists[hname].ntensor
                weights.add_variation(hname, as_tensor(getattr(events, branch), n))
                base, factors = weights.variation_parts(hname)
                out.fill(hname, *values, weight=rows(base), tensor=rows(factors))
