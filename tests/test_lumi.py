"""Luminosity tools against the real brilcalc CSV and golden JSON, checked with plain Python."""

from __future__ import annotations

import json
import random
from pathlib import Path

import awkward as ak
import dask_awkward as dak
import numpy as np
import pytest
import uproot
from conftest import GOLDEN_JSON, LUMI_CSV, NANOAOD_DATA

from wremnants_dask.inputs import lumi
from wremnants_dask.inputs.datasets import load_datasets


def plain_csv(path: Path) -> dict[tuple[int, int], tuple[float, float]]:
    """(run, ls) -> (delivered, recorded), parsed independently of lumi.py."""
    rows = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        f = line.split(",")
        key = (int(f[0].split(":")[0]), int(f[1].split(":")[0]))
        assert key not in rows
        rows[key] = (float(f[5]), float(f[6]))
    return rows


def plain_certified(mask: dict, run: int, ls: int) -> bool:
    return any(a <= ls <= b for a, b in mask.get(str(run), []))


@pytest.fixture(scope="module")
def rows() -> dict[tuple[int, int], tuple[float, float]]:
    return plain_csv(LUMI_CSV)


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN_JSON.read_text())


def test_csv_matches_plain_parse(rows) -> None:
    table = lumi.read_brilcalc_csv(LUMI_CSV)
    assert len(table.run) == len(rows) == 998
    got = {
        (int(r), int(l)): (d, rec)
        for r, l, d, rec in zip(table.run, table.ls, table.delivered, table.recorded)
    }
    assert got == rows
    assert table.total() == pytest.approx(sum(v[1] for v in rows.values()), rel=1e-12)
    assert table.total("delivered") == pytest.approx(sum(v[0] for v in rows.values()), rel=1e-12)
    assert table.runs() == {r for r, _ in rows}


def test_mask_matches_plain_ranges(golden) -> None:
    mask = lumi.read_golden_json(GOLDEN_JSON)
    assert mask.runs == {int(r) for r in golden}
    rng = random.Random(5)
    runs = [int(r) for r in golden] + [1, 294000, 400000]
    pairs = []
    for _ in range(5000):
        r = rng.choice(runs)
        ranges = golden.get(str(r), [[1, 100]])
        a, b = rng.choice(ranges)
        pairs.append((r, rng.choice([a - 1, a, b, b + 1, rng.randint(0, b + 5)])))
    r_arr = np.array([p[0] for p in pairs], dtype=np.uint32)
    l_arr = np.array([p[1] for p in pairs], dtype=np.uint32)
    expected = np.array([plain_certified(golden, r, l) for r, l in pairs])
    assert 0 < expected.sum() < len(pairs)
    np.testing.assert_array_equal(mask.contains(r_arr, l_arr), expected)
    # awkward in -> awkward out, dask-awkward in -> lazy, same values
    got_ak = mask(ak.Array(r_arr), ak.Array(l_arr))
    assert isinstance(got_ak, ak.Array)
    np.testing.assert_array_equal(ak.to_numpy(got_ak), expected)
    d_r = dak.from_awkward(ak.Array(r_arr), npartitions=3)
    d_l = dak.from_awkward(ak.Array(l_arr), npartitions=3)
    got_dak = mask(d_r, d_l)
    assert isinstance(got_dak, dak.Array)
    np.testing.assert_array_equal(ak.to_numpy(got_dak.compute()), expected)
    np.testing.assert_array_equal(ak.to_numpy(d_r[got_dak].compute()), r_arr[expected])


def test_integrated_lumi_of_processed_pairs(rows, golden) -> None:
    rng = random.Random(3)
    chosen = rng.sample(sorted(rows), 300)
    # 297050 ls 138-192 is a gap of the golden JSON (and absent from the CSV), 297056 ls 300 is
    # past its certified range: both must be excluded, not reported missing.
    outside = [(297050, 150), (297050, 192), (297056, 300)]
    events = chosen * 3 + outside  # each pair seen by several events
    rng.shuffle(events)
    runs = np.array([e[0] for e in events], dtype=np.uint32)
    lss = np.array([e[1] for e in events], dtype=np.uint32)
    expected = sum(rows[p][1] for p in set(chosen) if plain_certified(golden, *p))
    got = lumi.integrated_lumi(runs, lss, LUMI_CSV, GOLDEN_JSON)
    assert got == pytest.approx(expected, rel=1e-12)
    delivered = lumi.integrated_lumi(runs, lss, LUMI_CSV, GOLDEN_JSON, column="delivered")
    assert delivered == pytest.approx(sum(rows[p][0] for p in set(chosen)), rel=1e-12)
    report = lumi.lumi_report(
        runs, lss, lumi.read_brilcalc_csv(LUMI_CSV), lumi.read_golden_json(GOLDEN_JSON)
    )
    assert (report.n_pairs, report.n_certified, report.n_counted) == (303, 300, 300)
    assert report.complete


def test_restricted_mask_excludes_pairs(rows, tmp_path: Path) -> None:
    small = {"297050": [[12, 40], [100, 137]], "297057": [[100, 103]]}
    path = tmp_path / "golden.json"
    path.write_text(json.dumps(small))
    r = np.array([k[0] for k in rows], dtype=np.uint32)
    l = np.array([k[1] for k in rows], dtype=np.uint32)
    expected = sum(v[1] for k, v in rows.items() if plain_certified(small, *k))
    assert 0 < expected < sum(v[1] for v in rows.values())
    assert lumi.integrated_lumi(r, l, LUMI_CSV, path) == pytest.approx(expected, rel=1e-12)
    assert lumi.certified_lumi(LUMI_CSV, path) == pytest.approx(expected, rel=1e-12)


def test_certified_lumi_of_csv(rows, golden) -> None:
    expected = sum(v[1] for k, v in rows.items() if plain_certified(golden, *k))
    assert lumi.certified_lumi(LUMI_CSV, GOLDEN_JSON) == pytest.approx(expected, rel=1e-12)
    assert lumi.certified_lumi(LUMI_CSV, None) == pytest.approx(
        sum(v[1] for v in rows.values()), rel=1e-12
    )


def test_run_absent_from_csv_is_reported(rows) -> None:
    # 297100 is certified in the golden JSON but absent from the CSV
    r = np.array([297050, 297100, 297100], dtype=np.uint32)
    l = np.array([12, 5, 6], dtype=np.uint32)
    with pytest.raises(lumi.LumiError, match=r"run\(s\) 297100 absent from .*lumi_small\.csv"):
        lumi.integrated_lumi(r, l, LUMI_CSV, GOLDEN_JSON)
    got = lumi.integrated_lumi(r, l, LUMI_CSV, GOLDEN_JSON, on_missing="ignore")
    assert got == pytest.approx(rows[(297050, 12)][1], rel=1e-12)
    report = lumi.lumi_report(
        r, l, lumi.read_brilcalc_csv(LUMI_CSV), lumi.read_golden_json(GOLDEN_JSON)
    )
    assert report.missing_runs == (297100,)
    assert report.missing_pairs == ((297100, 5), (297100, 6))


def test_certified_lumisection_absent_from_csv_is_reported() -> None:
    # 297057 ls 200 is certified but the (truncated) CSV stops at ls 105
    r = np.array([297057], dtype=np.uint32)
    with pytest.raises(lumi.LumiError, match=r"run 297057: 1 lumi section\(s\) absent"):
        lumi.integrated_lumi(r, np.array([200]), LUMI_CSV, GOLDEN_JSON)


def test_csv_variants_and_errors(tmp_path: Path) -> None:
    text = (
        "#Data tag : x\n#run:fill,ls,time,beamstatus,E(GeV),delivered(/pb),recorded(/pb),avgpu,source\n"
        "1:7,3,t,STABLE BEAMS,6500,0.5,0.25,1,HFET\n"
        "1:7,4:0,t,STABLE BEAMS,6500,0.5,0.0,1,HFET\n"
        "2:8,1:1,t,STABLE BEAMS,6500,1.5,1.25,1,HFET\n"
        "#Summary:\n#nfill,nrun,nls,ncms,totdelivered(/pb),totrecorded(/pb)\n#2,2,3,2,2.5,1.5\n"
    )
    good = tmp_path / "good.csv"
    good.write_text(text)
    table = lumi.read_brilcalc_csv(good)
    assert table.run.tolist() == [1, 1, 2] and table.ls.tolist() == [3, 4, 1]
    assert table.total() == pytest.approx(1.5)
    bad = tmp_path / "bad.csv"
    bad.write_text(text.replace("2:8,1:1", "2:8,one"))
    with pytest.raises(lumi.LumiError, match=r"bad\.csv:5: cannot read the lumi section"):
        lumi.read_brilcalc_csv(bad)
    dup = tmp_path / "dup.csv"
    dup.write_text(text.replace("2:8,1:1", "1:7,3:3"))
    with pytest.raises(lumi.LumiError, match=r"dup\.csv lists run 1 lumi section 3 more than once"):
        lumi.read_brilcalc_csv(dup)
    with pytest.raises(lumi.LumiError, match="not found"):
        lumi.read_brilcalc_csv(tmp_path / "nope.csv")
    js = tmp_path / "bad.json"
    js.write_text('{"1": [[5, 3]]}')
    with pytest.raises(lumi.LumiError, match=r"bad\.json: run 1: bad range \[5, 3\]"):
        lumi.read_golden_json(js)


def test_pairs_from_real_data_file(tmp_path: Path) -> None:
    events = uproot.open(NANOAOD_DATA)["Events"].arrays(["run", "luminosityBlock"], library="np")
    expected = set(zip(events["run"].tolist(), events["luminosityBlock"].tolist()))
    runs, lss = lumi.read_run_lumi_pairs([NANOAOD_DATA, NANOAOD_DATA])
    assert set(zip(runs.tolist(), lss.tolist())) == expected
    assert len(runs) == len(expected)
    # 2018 data against the 2017 golden JSON: nothing certified, every event masked out
    mask = lumi.read_golden_json(GOLDEN_JSON)
    assert not mask(events["run"], events["luminosityBlock"]).any()
    ((run, ls),) = expected
    custom = {str(run): [[ls, ls]]}
    assert lumi.LumiMask(custom)(events["run"], events["luminosityBlock"]).all()


def test_dataset_lumi_end_to_end(tmp_path: Path) -> None:
    """A data sample whose CSV and golden JSON cover its run: lumi = that CSV row."""
    (data,) = load_datasets("nanoaod_shared", filter_procs="Data")
    assert lumi.dataset_lumi(data) == 0.0  # 2018 run, 2017 golden JSON
    runs, lss = lumi.read_run_lumi_pairs(data.files)
    run, ls = int(runs[0]), int(lss[0])
    csv = tmp_path / "lumi.csv"
    csv.write_text(
        "#run:fill,ls,time,beamstatus,E(GeV),delivered(/pb),recorded(/pb),avgpu,source\n"
        f"{run}:6000,{ls}:{ls},t,STABLE BEAMS,6500,0.2,0.1875,30,HFET\n"
        f"{run}:6000,{ls + 1}:{ls + 1},t,STABLE BEAMS,6500,0.2,0.5,30,HFET\n"
    )
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps({str(run): [[1, ls + 10]]}))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"era: '2018'\nsamples:\n  - name: d\n    group: Data\n    is_data: true\n"
        f"    files: {data.files[0]}\n    lumi_csv: lumi.csv\n    golden_json: golden.json\n"
    )
    (ds,) = load_datasets(cfg)
    assert lumi.dataset_lumi(ds) == pytest.approx(0.1875)
