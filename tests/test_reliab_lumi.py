"""Data luminosity and MC normalisation of the events actually processed (issue 17 follow-up):
chunks lost at read time (``--skip-bad-files``) and ``--max-events`` restrict the luminosity to
the lumi sections processed *completely*, and the generator sums to the processed events.
Checked against an independent count: uproot reads run/luminosityBlock (or genWeight) of the
processed entries, a plain-Python parse of the brilcalc CSV and golden JSON sums the rest."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
import uproot
from conftest import GOLDEN_JSON, LUMI_CSV, NANOAOD_DATA
from engine_helpers import copy_nano_subset, dy
from test_reliab_normalisation import STEP, damage_basket, rebasket

from wremnants_dask import engine
from wremnants_dask.inputs import lumi
from wremnants_dask.inputs.datasets import Dataset
from wremnants_dask.processors.muon_kinematics import MuonKinematicsProcessor

# The data file: the 40 real events repeated TILE times, written in DATA_STEP-entry baskets (large
# enough to be stored compressed, so that a damaged one fails to read), PER_LS events per lumi
# section: sections straddle the baskets.
TILE, DATA_STEP, PER_LS = 4, 40, 24


def plain_recorded() -> dict[tuple[int, int], float]:
    """(run, ls) -> recorded /pb of the CSV, parsed without the package."""
    rows = {}
    for line in LUMI_CSV.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            f = line.split(",")
            rows[(int(f[0].split(":")[0]), int(f[1].split(":")[0]))] = float(f[6])
    return rows


def certified_pairs(n: int) -> list[tuple[int, int]]:
    """``n`` CSV lumi sections inside the golden JSON, in order."""
    golden = json.loads(GOLDEN_JSON.read_text())
    ok = [
        k
        for k in sorted(plain_recorded())
        if any(a <= k[1] <= b for a, b in golden.get(str(k[0]), []))
    ]
    return ok[:n]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """The real DoubleMuon events (40) in 10-entry baskets, relabelled to 2017 certified lumi
    sections of the CSV, ``PER_LS`` events each (the file's own 2018 run is not in the CSV)."""
    path = tmp_path_factory.mktemp("lumi") / "data.root"
    t = uproot.open(NANOAOD_DATA)["Events"]
    names = [
        "Muon_pt",
        "Muon_eta",
        "Muon_phi",
        "Muon_charge",
        "Muon_mediumId",
        "Muon_pfRelIso04_all",
        "MET_pt",
        "MET_phi",
        "HLT_IsoMu24",
        "event",
    ]
    ev = t.arrays(names)
    ev = ak.concatenate([ev] * TILE)
    n = len(ev)
    pairs = certified_pairs(-(-n // PER_LS))
    idx = np.arange(n) // PER_LS
    muon = ak.zip({k[5:]: ev[k] for k in names if k.startswith("Muon_")})
    flat = {k: ev[k] for k in names if not k.startswith("Muon_")}
    flat["run"] = ak.Array(np.array([pairs[i][0] for i in idx], np.uint32))
    flat["luminosityBlock"] = ak.Array(np.array([pairs[i][1] for i in idx], np.uint32))
    with uproot.recreate(path) as out:
        tree = out.mktree(
            "Events",
            {k: ak.Array(v).type.content for k, v in {"Muon": muon, **flat}.items()},
            field_name=lambda outer, inner: inner if outer == "" else f"{outer}_{inner}",
        )
        for a in range(0, n, DATA_STEP):
            b = a + DATA_STEP
            tree.extend({"Muon": muon[a:b], **{k: v[a:b] for k, v in flat.items()}})
    return path


def data_ds(path) -> Dataset:
    return Dataset(
        "data", "Data", (str(path),), True, None, "2017", "Events", str(LUMI_CSV), str(GOLDEN_JSON)
    )


def truth_lumi(path, processed: np.ndarray, count_partial: bool = False) -> float:
    """Recorded lumi of the sections all of whose entries are processed (``count_partial``:
    the wrong accounting that counts any section with a processed entry), from uproot + CSV."""
    a = uproot.open(path)["Events"].arrays(["run", "luminosityBlock"], library="np")
    keys = list(zip(a["run"].tolist(), a["luminosityBlock"].tolist()))
    done = {k for k, p in zip(keys, processed) if p}
    undone = {k for k, p in zip(keys, processed) if not p}
    counted = done if count_partial else done - undone
    rec = plain_recorded()
    return sum(rec[k] for k in counted)


def _run(ds, **kw):
    proc = MuonKinematicsProcessor()
    return engine.run([ds], proc, step_size=DATA_STEP, skip_bad_files=True, **kw)[ds.name]


@pytest.mark.parametrize(
    "count_partial", [False, pytest.param(True, marks=pytest.mark.xfail(strict=True))]
)
def test_lost_chunk_removes_its_lumi_sections(data_file, tmp_path, count_partial):
    """A damaged basket loses entries [40, 80): section [48, 72) is lost whole, [24, 48) and
    [72, 96) partly; only the four complete sections count. The xfail case is the accounting
    that counts partly processed sections as recorded: the test must reject it."""
    bad = tmp_path / "bad.root"
    bad.write_bytes(data_file.read_bytes())
    a, b = damage_basket(bad, "Muon_pt", 1)
    r = _run(data_ds(bad))
    assert [(c["entry_start"], c["entry_stop"]) for c in r.lost] == [(a, b)]
    processed = np.ones(uproot.open(bad)["Events"].num_entries, bool)
    processed[a:b] = False
    truth = truth_lumi(bad, processed, count_partial)
    # sums of a few CSV numbers in a different order: equal to rounding
    assert r.lumi_pb == pytest.approx(truth, rel=1e-12)
    assert r.lumi_error is None
    sec = r.info()["lumi_sections"]
    assert sec["n_complete_sections"] == 4 and sec["n_partial_sections"] == 2
    # processed events of the two partial sections: [24, 40) and [80, 96)
    assert sec["events_in_partial_sections"] == 32
    # the old accounting (every section of the file) over-counts by the three sections
    whole = lumi.dataset_lumi(data_ds(bad))
    assert whole == pytest.approx(truth_lumi(bad, np.ones_like(processed)), rel=1e-12)
    assert whole > r.lumi_pb * 1.3


def test_no_loss_gives_the_whole_file_lumi(data_file):
    r = _run(data_ds(data_file))
    assert r.lost == [] and r.info()["lumi_sections"]["n_partial_sections"] == 0
    assert r.lumi_pb == pytest.approx(lumi.dataset_lumi(data_ds(data_file)), rel=1e-12)


def test_max_events_restricts_data_lumi(data_file):
    """--max-events 60: entries [0, 60) read; sections [0, 24), [24, 48) complete, [48, 72)
    partial (left out), the rest unread."""
    r = _run(data_ds(data_file), max_events=60)
    processed = np.zeros(uproot.open(data_file)["Events"].num_entries, bool)
    processed[:60] = True
    assert r.n_events == 60 and r.info()["n_entries_unread"] == processed.size - 60
    assert r.lumi_pb == pytest.approx(truth_lumi(data_file, processed), rel=1e-12)
    assert r.info()["lumi_sections"]["n_complete_sections"] == 2
    assert r.lumi_pb < 0.5 * lumi.dataset_lumi(data_ds(data_file))


@pytest.fixture(scope="module")
def mc_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("maxev")
    base = copy_nano_subset(d / "base.root")
    return (
        rebasket(base, d / "a.root", runs_from_events=False),
        rebasket(base, d / "b.root", runs_from_events=False),
    )


def test_max_events_scales_the_generator_sums(mc_files):
    """--max-events 25 over two 40-entry skimmed files: file a is read up to entry 25, file b
    not at all; the sums are file a's Runs sums x the processed share of its genWeight sum
    (uproot), and file b contributes nothing."""
    fa, fb = mc_files
    r = engine.run([dy([fa, fb])], MuonKinematicsProcessor(), step_size=STEP, max_events=25)["dy"]
    w = uproot.open(fa)["Events"]["genWeight"].array(library="np").astype(np.float64)
    runs = uproot.open(fa)["Runs"].arrays(library="np")
    truth = float(runs["genEventSumw"].sum()) * w[:25].sum() / w.sum()
    assert r.gen_sums.sumw == pytest.approx(truth, rel=1e-12)
    truth2 = float(runs["genEventSumw2"].sum()) * (w[:25] ** 2).sum() / (w**2).sum()
    assert r.gen_sums.sumw2 == pytest.approx(truth2, rel=1e-12)
    recs = {rec["file"]: rec for rec in r.info()["gen_sums_lost_correction"]}
    assert recs[str(fa)]["events_unread"] == 15 and recs[str(fa)]["events_lost"] == 0
    assert recs[str(fb)]["method"] == "file not processed" and recs[str(fb)]["gen_sumw_used"] == 0
    # the old normalisation kept both files' sums: the sample scaled down by ~2.6x
    old = 2 * float(runs["genEventSumw"].sum())
    assert old / r.gen_sums.sumw > 2


def test_max_events_unskimmed_equals_processed_genweight(tmp_path):
    """Runs sums = the events' sums: the corrected sumw is exactly sum(genWeight) of the
    processed entries, i.e. the engine's own sumw_processed."""
    base = copy_nano_subset(tmp_path / "base.root")
    f = rebasket(base, tmp_path / "u.root", runs_from_events=True)
    r = engine.run([dy([f])], MuonKinematicsProcessor(), step_size=STEP, max_events=17)["dy"]
    w = uproot.open(f)["Events"]["genWeight"].array(library="np").astype(np.float64)
    assert r.gen_sums.sumw == pytest.approx(w[:17].sum(), rel=1e-12)
    assert r.gen_sums.count == 17
    assert r.sumw_processed == pytest.approx(w[:17].sum(), rel=1e-9)


def test_histmaker_max_events_records_the_processed_sums(tmp_path, capsys):
    """The CLI end to end on the real DY file (Runs sums of the unskimmed CMS sample): the
    output's gen_sumw is the Runs sum x the genWeight share of the first 25 entries."""
    from conftest import NANOAOD_DY

    from wremnants_dask.cli import histmaker
    from wremnants_dask.histograms.histio import HistFile

    args = ["--dataset-config", "nanoaod_shared", "--analysis", "muon_kinematics"]
    args += ["--executor", "sync", "-o", str(tmp_path), "--step-size", "10", "--no-progress"]
    out = histmaker.main([*args, "--max-events", "25", "--no-systematics"])
    assert "entries of 2 dataset(s) left unread" in capsys.readouterr().err
    f = uproot.open(NANOAOD_DY)
    w = f["Events"]["genWeight"].array(library="np").astype(np.float64)
    runs_sumw = float(f["Runs"]["genEventSumw_"].array(library="np").sum())
    with HistFile(out) as h:
        info = h.info("dy_m50")
    assert info["n_events"] == 25 and info["n_entries_unread"] == w.size - 25
    assert info["gen_sumw"] == pytest.approx(runs_sumw * w[:25].sum() / w.sum(), rel=1e-12)
    (rec,) = info["gen_sums_lost_correction"]
    assert rec["events_unread"] == w.size - 25 and rec["method"] == "genWeight fraction"


def test_unreadable_lumi_block_gives_no_lumi_and_names_the_range(data_file, tmp_path):
    """A damaged luminosityBlock basket (a branch the processor does not read): the histograms
    are filled, but which sections were processed cannot be known, so no luminosity rather than
    a wrong one, with the file and entry range in the message."""
    bad = tmp_path / "badls.root"
    bad.write_bytes(data_file.read_bytes())
    a, b = damage_basket(bad, "luminosityBlock", 1)
    r = _run(data_ds(bad))
    assert r.lost == [] and r.n_events == uproot.open(bad)["Events"].num_entries
    assert r.lumi_pb is None
    assert str(bad) in r.lumi_error and f"[{a}, {b})" in r.lumi_error
