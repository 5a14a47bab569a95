"""The three analyses on the real CMS NanoAOD files: they run, and what a file lacks is a message."""

from __future__ import annotations

import dataclasses
import logging

import awkward as ak
import numpy as np
import pytest
import uproot
from conftest import GOLDEN_JSON, NANOAOD_DATA, NANOAOD_DY

from wremnants_dask import engine
from wremnants_dask.corrections.payload import CorrectionError
from wremnants_dask.inputs.datasets import Dataset
from wremnants_dask.processors.common import _WARNED
from wremnants_dask.processors.registry import get_processor

DY = Dataset("dy_m50", "Zmumu", (str(NANOAOD_DY),), False, 6077.22, "2018")
DATA = Dataset(
    "data_dimuon", "Data", (str(NANOAOD_DATA),), True, None, "2018", golden_json=str(GOLDEN_JSON)
)


@pytest.fixture(scope="module")
def results():
    _WARNED.clear()
    out = {}
    for name in ("mw", "mz_dilepton", "mz_wlike"):
        out[name] = engine.run([DY, DATA], get_processor(name))
    return out


def test_mw_on_real_simulation(results):
    r = results["mw"]["dy_m50"]
    h = r.hists["nominal"]
    assert [a.name for a in h.axes] == ["eta", "pt", "charge", "passIso", "mt"]
    # independent count: HLT_IsoMu24, one good muon, no extra loose muon, trigger-matched, prompt
    ev = uproot.open(NANOAOD_DY)["Events"].arrays(
        [
            "HLT_IsoMu24",
            "Muon_pt",
            "Muon_eta",
            "Muon_mediumId",
            "Muon_dxy",
            "Muon_looseId",
            "Muon_genPartFlav",
            "LHEPdfWeight",
            "LHEScaleWeight",
        ]
    )
    good = (
        ev.Muon_mediumId
        & (ev.Muon_pt > 26)
        & (ev.Muon_pt < 56)
        & (abs(ev.Muon_eta) < 2.4)
        & (abs(ev.Muon_dxy) < 0.05)
    )
    loose = ev.Muon_looseId & (ev.Muon_pt > 15) & (abs(ev.Muon_eta) < 2.4)
    sel = ev.HLT_IsoMu24 & (ak.sum(good, axis=1) == 1) & (ak.sum(loose | good, axis=1) == 1)
    prompt = ak.fill_none(ak.firsts(ev.Muon_genPartFlav[good]), 0) == 1
    cf = r.cutflows["main"]
    assert cf.counts[cf.steps.index("loose muon veto")] == int(ak.sum(sel))
    assert cf.counts[-1] == int(ak.sum(sel & prompt)) == 1
    assert h.values().sum() != 0
    # the file's PDF set has 33 members: the tensor follows the file, entry k = nominal x w_k
    pdf = r.hists["nominal_pdf"]
    assert pdf.axes["pdfVar"].size == 33
    one = ak.to_numpy(ak.flatten(ev.LHEPdfWeight[sel & prompt]))
    np.testing.assert_allclose(
        pdf.values().sum(axis=(0, 1, 2, 3, 4)), h.values().sum() * one, rtol=1e-5
    )
    qcd = r.hists["nominal_qcdScale"]
    scale = ak.to_numpy(ak.flatten(ev.LHEScaleWeight[sel & prompt])).reshape(3, 3)
    np.testing.assert_allclose(
        qcd.values().sum(axis=(0, 1, 2, 3, 4)), h.values().sum() * scale, rtol=1e-5
    )
    mass = r.hists["nominal_massWeightZ"]
    np.testing.assert_allclose(mass[..., "massShift0MeV"].values(), h.values(), rtol=1e-12)
    assert "nominal_prefire" not in r.hists  # this file has no L1PreFiringWeight branches
    assert "nominal_massWeightW" not in r.hists


def test_missing_prefiring_is_a_message(results, caplog):
    _WARNED.clear()
    with caplog.at_level(logging.WARNING):
        get_processor("mw").histograms(DY)
        get_processor("mw").histograms(DY)
    msgs = [m for m in caplog.messages if "L1PreFiringWeight" in m]
    assert len(msgs) == 1 and "nano_dy.root" in msgs[0] and "weight 1" in msgs[0]


def test_z_modes_on_real_simulation(results):
    dl = results["mz_dilepton"]["dy_m50"]
    assert [a.name for a in dl.hists["mll"].axes] == ["mll"]
    assert [a.name for a in dl.hists["ptll_yll"].axes] == ["ptll", "yll"]
    eff = dl.hists["mll_effStat"]
    assert [a.name for a in eff.axes][1:] == ["effStep", "effStatEta", "effStatEig", "downUpVar"]
    np.testing.assert_allclose(
        dl.hists["mll_massWeightZ"].values()[..., 10], dl.hists["mll"].values()
    )
    assert dl.cutflows["main"].counts[-1] == 3
    wl = results["mz_wlike"]["dy_m50"]
    assert [a.name for a in wl.hists["nominal"].axes] == ["eta", "pt", "charge"]
    assert wl.cutflows["main"].steps[-1] == "mT (W-like)"


def test_real_data(results):
    # the shared golden JSON is for 2017; the 2018 run of this file is not certified
    for name in ("mw", "mz_dilepton", "mz_wlike"):
        cf = results[name]["data_dimuon"].cutflows["main"]
        assert cf.steps[1] == "golden json" and cf.counts[1] == 0
    uncertified = dataclasses.replace(DATA, golden_json=None)
    res = engine.run([uncertified], get_processor("mz_dilepton", systematics=False))
    cf = res["data_dimuon"].cutflows["main"]
    hlt = int(np.sum(uproot.open(NANOAOD_DATA)["Events"]["HLT_IsoMu24"].array(library="np")))
    assert cf.counts[cf.steps.index("trigger")] == hlt
    assert set(res["data_dimuon"].hists) == {"mll", "ptll_yll"}


def test_missing_payload_names_file(tmp_path):
    with pytest.raises(CorrectionError, match="missing.json.gz not found"):
        get_processor("mw", corrections=str(tmp_path / "missing.json.gz"))
