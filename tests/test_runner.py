"""The engine on the real NanoAOD files, checked against an independent event loop."""

from __future__ import annotations

import tracemalloc

import hist
import numpy as np
import pytest
from conftest import NANOAOD_DATA, NANOAOD_DY
from engine_helpers import copy_nano_subset, data, dy, reference_muon_kinematics, write_tree

from wremnants_dask import engine
from wremnants_dask.engine import BadInputError
from wremnants_dask.engine.processor import Processor
from wremnants_dask.engine.tensorhist import TensorHist, tensor_axis
from wremnants_dask.processors.muon_kinematics import MuonKinematicsProcessor


def _close(h: hist.Hist, ref: hist.Hist) -> None:
    np.testing.assert_allclose(h.view(flow=True).value, ref.view(flow=True).value, rtol=1e-9)
    np.testing.assert_allclose(h.view(flow=True).variance, ref.view(flow=True).variance, rtol=1e-9)


@pytest.fixture(scope="module")
def full_run():
    return engine.run([dy(), data()], MuonKinematicsProcessor(), step_size=20)


def test_histograms_match_event_loop(full_run):
    ref, rows, pdf, counts = reference_muon_kinematics([NANOAOD_DY], is_data=False)
    r = full_run["dy"]
    assert len(rows) > 0
    _close(r.hists["nominal"], ref)
    cf = r.cutflows["main"]
    assert cf.steps == ["all", "trigger", "one good muon"]
    assert cf.counts == counts
    # PDF tensor: 33 replicas in this file; each slice equals a fill weighted by genWeight*pdf_k
    assert r.hists["pdf"].axes["pdfVar"].size == 33
    for k in (0, 7, 32):
        refk = hist.Hist(*ref.axes, storage=hist.storage.Weight())
        cols = list(zip(*rows))
        refk.fill(*[np.asarray(c) for c in cols[:5]], weight=pdf[:, k])
        _close(r.hists["pdf"][..., k], refk)
    ref_d, _, _, counts_d = reference_muon_kinematics([NANOAOD_DATA], is_data=True)
    _close(full_run["data"].hists["nominal"], ref_d)
    assert full_run["data"].cutflows["main"].counts == counts_d
    assert set(full_run["data"].hists) == {"nominal"}


def test_bookkeeping(full_run):
    import uproot

    r = full_run["dy"]
    gw = uproot.open(NANOAOD_DY)["Events"]["genWeight"].array(library="np").astype(np.float64)
    assert r.n_events == 40
    assert r.sumw_processed == pytest.approx(gw.sum(), rel=1e-12)
    assert r.sumw2_processed == pytest.approx((gw**2).sum(), rel=1e-12)
    runs = uproot.open(NANOAOD_DY)["Runs"]["genEventSumw_"].array(library="np")
    assert r.gen_sums.sumw == pytest.approx(runs.sum())
    assert full_run["data"].gen_sums is None and full_run["data"].sumw_processed == 0
    info = r.info()
    assert info["xsec_pb"] == 2000.0 and info["is_data"] is False and info["n_events"] == 40


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """The DY events with only the needed branches: cheap to open once per chunk."""
    return copy_nano_subset(tmp_path_factory.mktemp("subset") / "dy_subset.root")


@pytest.mark.parametrize("step_size,split_every", [(1, 2), (7, 3), (40, 8)])
def test_result_independent_of_chunking(full_run, subset, step_size, split_every):
    r = engine.run(
        [dy([subset])], MuonKinematicsProcessor(), step_size=step_size, split_every=split_every
    )
    assert r.info["graph_layers"] == 3
    for name in ("nominal", "pdf", "scale"):
        np.testing.assert_allclose(
            r["dy"].hists[name].view(flow=True).value,
            full_run["dy"].hists[name].view(flow=True).value,
            rtol=1e-12,
        )
        np.testing.assert_allclose(
            r["dy"].hists[name].view(flow=True).variance,
            full_run["dy"].hists[name].view(flow=True).variance,
            rtol=1e-12,
        )
    assert r["dy"].cutflows["main"].counts == full_run["dy"].cutflows["main"].counts


def test_max_events_and_multiple_files(tmp_path, subset):
    f1 = copy_nano_subset(tmp_path / "first25.root", entry_stop=25)
    r = engine.run([dy([f1, subset])], MuonKinematicsProcessor(), step_size=16, max_events=55)
    assert r["dy"].n_events == 55
    assert r["dy"].files == [str(f1), str(subset)]
    # 25 events of the first file, then the first 30 of the second
    ref1, *_ = reference_muon_kinematics([f1], is_data=False)
    f2 = copy_nano_subset(tmp_path / "first30.root", entry_stop=30)
    ref2, *_ = reference_muon_kinematics([f2], is_data=False)
    _close(r["dy"].hists["nominal"], ref1 + ref2)


def test_files_with_different_branch_types_are_named(tmp_path, subset):
    with pytest.raises(BadInputError, match=r"dy_subset.root.*nMuon.*int32.*uint32"):
        engine.build_plan([dy([NANOAOD_DY, subset])], MuonKinematicsProcessor())


class BigHist(Processor):
    """One histogram of ~4 MB filled in every chunk: to measure the reduction's memory."""

    def histograms(self, dataset):
        return {
            "h": TensorHist([hist.axis.Regular(50, 0, 200, name="pt")], [tensor_axis("k", 10000)])
        }

    def process(self, events, out):
        pt = events.MET.pt
        out.fill("h", pt, tensor=np.ones((len(pt), 10000)) if not out.tracing else pt)


def test_tree_reduction_memory_is_bounded(subset):
    one_copy = 52 * 10000 * 8
    plan = engine.build_plan([dy([subset])], BigHist(), step_size=1, split_every=4)  # 40 partials
    tracemalloc.start()
    try:
        res = engine.execute(plan)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res["dy"].hists["h"].sum() == 40 * 10000
    # 40 chunks: one copy per chunk would be 40 copies; the tree keeps a handful alive.
    assert peak < 12 * one_copy, peak / one_copy


# ----------------------------------------------------------------------------- bad input
def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.root"
    with pytest.raises(BadInputError, match="nope.root.*cannot access"):
        engine.build_plan([dy([NANOAOD_DY, missing])], MuonKinematicsProcessor())


def test_corrupt_and_empty_files_are_named(tmp_path):
    corrupt = tmp_path / "corrupt.root"
    corrupt.write_bytes(b"root" + b"\x00garbage" * 100)
    with pytest.raises(BadInputError, match="corrupt.root.*not a readable ROOT file"):
        engine.build_plan([dy([corrupt])], MuonKinematicsProcessor())
    truncated = tmp_path / "truncated.root"
    truncated.write_bytes(NANOAOD_DY.read_bytes()[:5000])
    with pytest.raises(BadInputError, match="truncated.root"):
        engine.build_plan([dy([truncated])], MuonKinematicsProcessor())
    zero = tmp_path / "zero.root"
    zero.write_bytes(b"")
    with pytest.raises(BadInputError, match="zero.root.*empty"):
        engine.build_plan([dy([zero])], MuonKinematicsProcessor())
    noentries = copy_nano_subset(tmp_path / "noentries.root", entry_stop=0)
    with pytest.raises(BadInputError, match="noentries.root.*0 entries"):
        engine.build_plan([dy([noentries])], MuonKinematicsProcessor())
    notree = write_tree(tmp_path / "notree.root", {"x": np.arange(3.0)})
    with pytest.raises(BadInputError, match="notree.root.*no readable tree 'Other'"):
        ds = dy([notree])
        import dataclasses

        engine.build_plan([dataclasses.replace(ds, treename="Other")], MuonKinematicsProcessor())


def test_missing_branch_is_named(tmp_path):
    nophi = copy_nano_subset(tmp_path / "nophi.root", drop="Muon_phi")
    with pytest.raises(BadInputError, match=r"nophi.root.*Muon_phi"):
        engine.build_plan([dy([NANOAOD_DY, nophi])], MuonKinematicsProcessor())


def test_skip_bad_files_records_reasons(tmp_path):
    nophi = copy_nano_subset(tmp_path / "nophi.root", drop="Muon_phi")
    corrupt = tmp_path / "corrupt.root"
    corrupt.write_bytes(b"not root at all")
    good = copy_nano_subset(tmp_path / "good.root")
    r = engine.run(
        [dy([good, nophi, corrupt, tmp_path / "missing.root"]), data([tmp_path / "missing2.root"])],
        MuonKinematicsProcessor(),
        skip_bad_files=True,
    )
    assert list(r.datasets) == ["dy"]
    skipped = {s["file"].rsplit("/", 1)[-1]: s["reason"] for s in r.info["skipped_files"]}
    assert set(skipped) == {"nophi.root", "corrupt.root", "missing.root", "missing2.root"}
    assert "Muon_phi" in skipped["nophi.root"]
    ref, *_ = reference_muon_kinematics([good], is_data=False)
    _close(r["dy"].hists["nominal"], ref)
