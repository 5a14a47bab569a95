"""Processor API: lazy NanoAOD views, the column trace, cut flows, weights, graph size."""

from __future__ import annotations

import awkward as ak
import hist
import numpy as np
import pytest
import uproot
from conftest import NANOAOD_DY
from engine_helpers import dy

from wremnants_dask import engine
from wremnants_dask.engine.cutflow import CutFlow
from wremnants_dask.engine.event_weights import Weights, as_tensor
from wremnants_dask.engine.processor import Events, Processor
from wremnants_dask.engine.tensorhist import TensorHist, tensor_axis
from wremnants_dask.processors.muon_kinematics import MuonKinematicsProcessor


@pytest.fixture(scope="module")
def arrays():
    return uproot.open(NANOAOD_DY)["Events"].arrays(
        ["nMuon", "Muon_pt", "Muon_eta", "genWeight", "LHEPdfWeight", "HLT_IsoMu24", "MET_pt"]
    )


def test_events_view_maps_nanoaod_names(arrays):
    ev = Events(arrays)
    assert ak.all(ev.Muon.pt == arrays["Muon_pt"])
    assert ak.all(ev.HLT.IsoMu24 == arrays["HLT_IsoMu24"])
    assert ak.all(ev.Muon.counts == arrays["nMuon"])
    mu = ev.Muon[ev.Muon.pt > 20]
    mu2 = mu[abs(mu.eta) < 1.0]
    expect = arrays["Muon_pt"][(arrays["Muon_pt"] > 20)]
    expect = expect[abs(arrays["Muon_eta"][arrays["Muon_pt"] > 20]) < 1.0]
    assert ak.all(mu2.pt == expect)
    assert ak.all(mu2.counts == ak.num(expect))
    sel = ev[arrays["nMuon"] >= 2]
    assert len(sel) == int(ak.sum(arrays["nMuon"] >= 2))
    assert ak.all(sel.Muon.pt == arrays["Muon_pt"][arrays["nMuon"] >= 2])
    z = mu2.zip("pt", "eta")
    assert z.fields == ["pt", "eta"] and ak.all(z.pt == expect)
    with pytest.raises(AttributeError, match="Electron_nope|no field 'nope'"):
        _ = ev.Muon.nope
    with pytest.raises(AttributeError, match="no branch or collection"):
        _ = ev.NotThere


def test_cutflow_and_weights_against_numpy(arrays):
    gw = ak.to_numpy(arrays["genWeight"]).astype(np.float64)
    met = ak.to_numpy(arrays["MET_pt"])
    cf = CutFlow()
    cf.start(np.ones(len(gw), bool), gw)
    m1 = cf.cut("met", met > 20)
    m2 = cf.cut("mu", ak.to_numpy(arrays["nMuon"]) >= 1)
    assert cf.counts == [
        40,
        int((met > 20).sum()),
        int(((met > 20) & (ak.to_numpy(arrays["nMuon"]) >= 1)).sum()),
    ]
    assert cf.sumw[2] == pytest.approx(gw[m2].sum()) and np.array_equal(m1 & m2, m2)
    w = Weights()
    sf = np.linspace(0.9, 1.1, 40)
    w.add("gen", arrays["genWeight"])
    w.add("sf", sf, up=sf * 1.1, down=sf * 0.8)
    pdf = as_tensor(arrays["LHEPdfWeight"], 33)
    w.add_variation("pdf", pdf)
    np.testing.assert_allclose(w.weight(), gw * sf, rtol=1e-6)
    np.testing.assert_allclose(
        w.variation("sf"), np.stack([gw * sf * 0.8, gw * sf * 1.1], axis=1), rtol=1e-6
    )
    np.testing.assert_allclose(w.variation("pdf"), (gw * sf)[:, None] * pdf, rtol=1e-6)
    with pytest.raises(ValueError, match="expected 103 entries"):
        as_tensor(arrays["LHEPdfWeight"], 103)


def test_columns_read_are_exactly_those_used():
    """On the real NanoAOD file (~1500 branches), the input layer reads only what is used."""
    assert len(uproot.open(NANOAOD_DY)["Events"].keys()) > 1400
    plan = engine.build_plan([dy()], MuonKinematicsProcessor(), step_size=40)
    used = {
        "nMuon",
        "Muon_pt",
        "Muon_eta",
        "Muon_phi",
        "Muon_charge",
        "Muon_mediumId",
        "Muon_pfRelIso04_all",
        "MET_pt",
        "MET_phi",
        "HLT_IsoMu24",
        "genWeight",
        "LHEPdfWeight",
        "LHEScaleWeight",
    }
    assert set(plan.datasets["dy"].columns) == used
    (inp,) = [layer for name, layer in plan.graph.layers.items() if name.startswith("from-uproot")]
    assert set(inp.io_func.common_keys) == used
    # and without systematics the PDF/scale branches are not read
    plan = engine.build_plan([dy()], MuonKinematicsProcessor(systematics=False), step_size=40)
    assert set(plan.datasets["dy"].columns) == used - {"LHEPdfWeight", "LHEScaleWeight"}
    # what a chunk task actually receives
    graph = engine.optimize_graph(plan.graph, plan.keys)
    import dask

    inp_key = next(k for k in dict(plan.graph) if k[0].startswith("from-uproot"))
    chunk = dask.get(plan.graph, inp_key)
    assert set(chunk.fields) == used - {"LHEPdfWeight", "LHEScaleWeight"} and len(graph.layers) == 2


class ManyCuts(Processor):
    """n_cuts successive selections and n_syst systematic tensor fills."""

    def __init__(self, *, n_cuts: int = 1, n_syst: int = 1, **kw):
        super().__init__(**kw)
        self.n_cuts, self.n_syst = n_cuts, n_syst

    def histograms(self, dataset):
        ax = hist.axis.Regular(10, 0, 100, name="met")
        return {f"syst{i}": TensorHist([ax], [tensor_axis("var", 2)]) for i in range(self.n_syst)}

    def process(self, events, out):
        cf = out.cutflow()
        sel = cf.start(events.MET.pt >= 0)
        for i in range(self.n_cuts):
            sel = cf.cut(f"cut{i}", events.MET.pt > i)
        met = events.MET.pt[sel]
        w = Weights()
        w.add("gen", events.genWeight[sel])
        for i in range(self.n_syst):
            w.add_variation(
                f"s{i}",
                ak.concatenate(
                    [met[:, None] * 0 + 1 - 0.01 * i, met[:, None] * 0 + 1 + 0.01 * i], axis=1
                ),
            )
            out.fill(f"syst{i}", met, tensor=w.variation(f"s{i}"))


def test_graph_layers_do_not_grow_with_selections_or_systematics(tmp_path):
    from engine_helpers import copy_nano_subset

    f = copy_nano_subset(tmp_path / "s.root")
    small = engine.build_plan([dy([f])], ManyCuts(n_cuts=1, n_syst=1), step_size=10)
    big = engine.build_plan([dy([f])], ManyCuts(n_cuts=30, n_syst=25), step_size=10)
    assert len(small.graph.layers) == len(big.graph.layers) == 3
    assert len(dict(small.graph)) == len(dict(big.graph))
    r = engine.execute(big)["dy"]
    assert r.cutflows["main"].steps[-1] == "cut29"
    met = uproot.open(f)["Events"]["MET_pt"].array(library="np")
    gw = uproot.open(f)["Events"]["genWeight"].array(library="np").astype(float)
    sel = met > 29
    h = r.hists["syst24"]
    ref = np.histogram(met[sel], bins=10, range=(0, 100), weights=gw[sel] * 1.24)[0]
    np.testing.assert_allclose(h[:, 1].values(), ref, rtol=1e-6)
    assert r.cutflows["main"].counts[-1] == int(sel.sum())


class Branchy(Processor):
    def histograms(self, dataset):
        return {"h": TensorHist([hist.axis.Regular(2, 0, 1, name="x")])}

    def process(self, events, out):
        if ak.any(events.MET.pt > 10):  # a Python branch on data: not traceable
            out.fill("h", events.MET.pt)


def test_untraceable_processor_gets_a_clear_error():
    from wremnants_dask.engine.processor import ProcessorError

    with pytest.raises(ProcessorError, match="Branchy failed while tracing.*dataset 'dy'"):
        engine.build_plan([dy()], Branchy())
