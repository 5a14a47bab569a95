"""Synthetic NanoAOD files have the real NanoAOD layout, consistent Runs sums, reproducible seeds."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
import uproot
from conftest import NANOAOD_DATA, NANOAOD_DY

from wremnants_dask.synth import PROCESSES, SynthParams, generate_pseudodata, generate_sample


@pytest.fixture(scope="module")
def mc_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_fmt")
    plain = generate_sample("zmumu", 3000, out / "plain", seed=5, n_files=2, chunk_size=1000)
    fill = generate_sample("wplus_munu", 300, out / "fill", seed=5, fillers=True)
    return plain, fill


def _type_mismatches(ours: uproot.TTree, real: uproot.TTree) -> list[tuple[str, str, str]]:
    shared = sorted(set(ours.keys()) & set(real.keys()))
    return [(k, ours[k].typename, real[k].typename) for k in shared
            if ours[k].typename != real[k].typename]  # fmt: skip


def test_mc_branches_match_real_nanoaod(mc_files, shared_data):
    plain, fill = mc_files
    real = uproot.open(NANOAOD_DY)["Events"]
    for path in (plain[0], fill[0]):
        ours = uproot.open(path)["Events"]
        assert _type_mismatches(ours, real) == [], path
    ours = uproot.open(plain[0])["Events"]
    names = set(ours.keys())
    core = {"nMuon", "Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge", "Muon_dxy", "Muon_dz",
            "Muon_pfRelIso04_all", "Muon_pfRelIso03_all", "Muon_looseId", "Muon_mediumId",
            "Muon_tightId", "Muon_isGlobal", "Muon_isTracker", "Muon_genPartIdx",
            "Muon_genPartFlav", "Muon_ptErr", "nGenPart", "GenPart_pdgId", "GenPart_statusFlags",
            "GenPart_genPartIdxMother", "genWeight", "nLHEPdfWeight", "LHEPdfWeight",
            "LHEScaleWeight", "HLT_IsoMu24", "nTrigObj", "TrigObj_id", "TrigObj_filterBits",
            "MET_pt", "MET_phi", "PuppiMET_pt", "Pileup_nTrueInt", "PV_npvsGood", "run",
            "luminosityBlock", "event", "LHEWeight_originalXWGTUP", "Generator_weight"}  # fmt: skip
    assert core <= names, core - names
    assert core <= set(real.keys())  # every one of them is a real NanoAOD branch
    assert {"L1PreFiringWeight_Nom", "L1PreFiringWeight_Up", "L1PreFiringWeight_Dn"} <= names
    assert ours["nMuon"].typename == "uint32_t" and ours["Muon_pt"].typename == "float[]"
    n_fill = len(uproot.open(fill[0])["Events"].keys())
    assert 800 < n_fill < 1600 and n_fill > 5 * len(names)
    a = ours.arrays(["nLHEPdfWeight", "nLHEScaleWeight", "LHEScaleWeight"], library="np")
    assert np.all(a["nLHEPdfWeight"] == 103) and np.all(a["nLHEScaleWeight"] == 9)
    assert all(s[4] == 1.0 for s in a["LHEScaleWeight"])


def test_runs_tree_matches_events(mc_files):
    plain, _ = mc_files
    total = 0
    for path in plain:
        f = uproot.open(path)
        ev = f["Events"].arrays(["genWeight", "LHEPdfWeight"], library="np")
        runs = f["Runs"].arrays(library="np")
        w = ev["genWeight"].astype(np.float64)
        assert runs["genEventCount"][0] == f["Events"].num_entries
        assert runs["genEventSumw"][0] == pytest.approx(w.sum(), rel=1e-12)
        assert runs["genEventSumw2"][0] == pytest.approx((w * w).sum(), rel=1e-12)
        pdf = np.stack(ev["LHEPdfWeight"]).astype(np.float64)
        assert np.allclose(runs["LHEPdfSumw"][0], w @ pdf / w.sum(), rtol=1e-9)
        assert f["Runs"]["genEventSumw"].typename == "double"
        total += f["Events"].num_entries
    assert total == 3000
    w = np.concatenate([uproot.open(p)["Events"]["genWeight"].array(library="np") for p in plain])
    frac = PROCESSES["zmumu"].neg_weight_fraction
    assert np.unique(np.abs(w)).size == 1
    assert abs((w < 0).mean() - frac) < 5 * np.sqrt(frac * (1 - frac) / w.size)


def test_event_numbers_unique_across_files(mc_files):
    plain, _ = mc_files
    ev = np.concatenate([uproot.open(p)["Events"]["event"].array(library="np") for p in plain])
    assert np.unique(ev).size == ev.size == 3000


def test_seed_determinism(tmp_path):
    a = generate_sample("ttbar", 800, tmp_path / "a", seed=3)[0]
    b = generate_sample("ttbar", 800, tmp_path / "b", seed=3)[0]
    c = generate_sample("ttbar", 800, tmp_path / "c", seed=4)[0]
    ta, tb, tc = (uproot.open(p)["Events"].arrays() for p in (a, b, c))
    assert ta.fields == tb.fields
    for k in ta.fields:
        assert ak.array_equal(ta[k], tb[k]), k
    assert not np.array_equal(np.asarray(ta["MET_pt"]), np.asarray(tc["MET_pt"]))


def test_pseudodata_file_is_data_like(tmp_path, shared_data):
    params = SynthParams()
    info = generate_pseudodata(tmp_path, lumi_pb=0.02, seed=2, params=params)
    f = uproot.open(info.files[0])
    ours, real = f["Events"], uproot.open(NANOAOD_DATA)["Events"]
    assert _type_mismatches(ours, real) == []
    names = set(ours.keys())
    forbidden = [k for k in names if k.startswith(("GenPart", "genWeight", "LHE", "Generator",
                 "Pileup_", "GenMET", "L1PreFiringWeight")) or "genPart" in k]  # fmt: skip
    assert forbidden == []
    assert set(f["Runs"].keys()) == {"run"}
    runs = ours["run"].array(library="np")
    assert np.array_equal(np.unique(runs), np.sort(f["Runs"]["run"].array(library="np")))
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["data_params"]["mW"] == params.data_mW and truth["params"]["mW"] == params.mW
