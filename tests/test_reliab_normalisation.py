"""MC normalisation after chunks lost at read time (issue 17): the generator sums used by the
cross-section normalisation are those of the events actually processed, checked against an
independent uproot count of genWeight."""

from __future__ import annotations

import struct

import awkward as ak
import numpy as np
import pytest
import uproot
from engine_helpers import copy_nano_subset, dy

from wremnants_dask import engine
from wremnants_dask.processors.muon_kinematics import MuonKinematicsProcessor

STEP = 10  # chunk size of the runs below; the files are written in 10-entry baskets


def rebasket(src, dst, *, runs_from_events: bool):
    """Copy ``src`` (written by ``copy_nano_subset``) with every branch in 10-entry baskets, so
    that one damaged basket loses one chunk. ``runs_from_events``: the Runs sums are those of
    the events (a file that was not skimmed), else the original CMS sums (a skimmed file)."""
    f = uproot.open(src)
    ev = f["Events"].arrays()
    muon = ak.zip({k[5:]: ev[k] for k in ev.fields if k.startswith("Muon_")})
    flat = {k: ev[k] for k in ev.fields if not k.startswith(("Muon_", "nMuon"))}
    runs = f["Runs"].arrays(library="np")
    w = ev["genWeight"].to_numpy().astype(np.float64)
    if runs_from_events:
        runs = {
            "run": np.array([1], np.uint32),
            "genEventSumw": np.array([w.sum()]),
            "genEventSumw2": np.array([(w * w).sum()]),
            "genEventCount": np.array([w.size], np.int64),
        }
    with uproot.recreate(dst) as out:
        tree = out.mktree(
            "Events",
            {k: ak.Array(v).type.content for k, v in {"Muon": muon, **flat}.items()},
            field_name=lambda outer, inner: inner if outer == "" else f"{outer}_{inner}",
        )
        for a in range(0, len(w), STEP):
            tree.extend(
                {"Muon": muon[a : a + STEP], **{k: v[a : a + STEP] for k, v in flat.items()}}
            )
        out["Runs"] = runs
    return dst


def damage_basket(path, branch: str, index: int) -> tuple[int, int]:
    """Flip bytes inside the compressed data of basket ``index`` of ``branch`` (in place)."""
    b = uproot.open(path)["Events"][branch]
    seek, nbytes = int(b.member("fBasketSeek")[index]), int(b.member("fBasketBytes")[index])
    start, stop = b.basket_entry_start_stop(index)
    data = bytearray(path.read_bytes())
    keylen = struct.unpack(">h", bytes(data[seek + 14 : seek + 16]))[0]
    mid = seek + keylen + 9 + (nbytes - keylen - 9) // 2
    for i in range(mid, mid + 6):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return int(start), int(stop)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return copy_nano_subset(tmp_path_factory.mktemp("norm") / "base.root")


def _weights(path) -> np.ndarray:
    return uproot.open(path)["Events"]["genWeight"].array(library="np").astype(np.float64)


def _runs(path, name: str) -> float:
    return float(uproot.open(path)["Runs"][name].array(library="np").sum())


def _run(files):
    return engine.run([dy(files)], MuonKinematicsProcessor(), step_size=STEP, skip_bad_files=True)[
        "dy"
    ]


def test_unskimmed_file_sums_equal_the_processed_genweight(base, tmp_path):
    """Runs sums = events' sums: the corrected sumw must be exactly sum(genWeight) over the
    processed events, counted here with uproot, independently of the engine."""
    clean = rebasket(base, tmp_path / "clean.root", runs_from_events=True)
    bad = rebasket(base, tmp_path / "bad.root", runs_from_events=True)
    a, b = damage_basket(bad, "Muon_pt", 1)
    assert (a, b) == (10, 20)
    r = _run([clean, bad])
    assert [(c["entry_start"], c["entry_stop"]) for c in r.lost] == [(a, b)]
    w_clean, w_bad = _weights(clean), _weights(bad)
    keep = np.ones(w_bad.size, bool)
    keep[a:b] = False
    truth_sumw = w_clean.sum() + w_bad[keep].sum()
    truth_sumw2 = (w_clean**2).sum() + (w_bad[keep] ** 2).sum()
    assert r.gen_sums.sumw == pytest.approx(truth_sumw, rel=1e-12)
    assert r.gen_sums.sumw2 == pytest.approx(truth_sumw2, rel=1e-12)
    assert r.gen_sums.count == w_clean.size + keep.sum()
    # the processed-events sum of the engine (before selection) is the same number
    assert r.sumw_processed == pytest.approx(truth_sumw, rel=1e-9)
    (rec,) = r.gen_sums_correction
    assert rec["file"] == str(bad) and rec["method"] == "genWeight fraction"
    assert r.info()["gen_sums_lost_correction"] == r.gen_sums_correction
    # without the correction the sums would keep the lost chunk's weights: off by far more
    # than the tolerance (the lost chunk holds a quarter of the file)
    uncorrected = w_clean.sum() + w_bad.sum()
    assert abs(uncorrected / truth_sumw - 1) > 0.05


def test_skimmed_file_scales_its_runs_sums_by_the_processed_weight_fraction(base, tmp_path):
    """Runs sums of all generated events (a skim): each file's Runs sumw is scaled by the
    processed share of its genWeight sum, which keeps the MC yield per generated event."""
    bad = rebasket(base, tmp_path / "skim.root", runs_from_events=False)
    a, b = damage_basket(bad, "Muon_eta", 3)
    r = _run([bad])
    w = _weights(bad)
    keep = np.ones(w.size, bool)
    keep[a:b] = False
    frac = w[keep].sum() / w.sum()
    assert r.gen_sums.sumw == pytest.approx(_runs(bad, "genEventSumw") * frac, rel=1e-12)
    frac2 = (w[keep] ** 2).sum() / (w**2).sum()
    assert r.gen_sums.sumw2 == pytest.approx(_runs(bad, "genEventSumw2") * frac2, rel=1e-12)
    # the sample has negative weights: the entry fraction would be a different (worse) number
    assert abs(keep.mean() / frac - 1) > 1e-3


def test_unreadable_genweight_falls_back_to_the_entry_fraction(base, tmp_path):
    bad = rebasket(base, tmp_path / "nogw.root", runs_from_events=True)
    a, b = damage_basket(bad, "genWeight", 2)
    r = _run([bad])
    assert {c["branch"] for c in r.lost} == {"genWeight"}
    n = uproot.open(bad)["Events"].num_entries
    kept = 1 - (b - a) / n
    assert r.gen_sums.sumw == pytest.approx(_runs(bad, "genEventSumw") * kept, rel=1e-12)
    assert r.gen_sums.count == round(n * kept)
    (rec,) = r.gen_sums_correction
    assert rec["method"] == "entry fraction" and "genWeight unreadable" in rec["fallback_reason"]


def test_no_loss_leaves_the_sums_alone(base, tmp_path):
    clean = rebasket(base, tmp_path / "ok.root", runs_from_events=False)
    r = _run([clean])
    assert r.gen_sums.sumw == _runs(clean, "genEventSumw") and r.gen_sums_correction == []
