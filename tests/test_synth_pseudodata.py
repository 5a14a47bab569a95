"""Pseudo-data: Poisson yields per process at the configured luminosity, lumi CSV and golden JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import uproot

from wremnants_dask.synth import PROCESSES, generate_pseudodata

LUMI = 0.4  # /pb


@pytest.fixture(scope="module")
def pseudo(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_data")
    return generate_pseudodata(out, lumi_pb=LUMI, seed=11, n_files=2, chunk_size=20000)


def _read_csv(path):
    """Independent minimal brilcalc reader: {(run, ls): recorded}."""
    rec = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        cols = line.split(",")
        run = int(cols[0].split(":")[0])
        ls = int(cols[1].split(":")[0])
        assert cols[1].split(":")[1] == cols[1].split(":")[0]
        rec[(run, ls)] = float(cols[6])
    return rec


def _certified(golden, run, ls):
    return any(a <= ls <= b for a, b in golden.get(str(run), []))


def test_lumi_csv_and_golden_json_sum_to_lumi(pseudo):
    rec = _read_csv(pseudo.lumi_csv)
    golden = json.loads(pseudo.golden_json.read_text())
    assert pseudo.lumi_csv.read_text().splitlines()[1].startswith("#run:fill,ls,time,beamstatus")
    cert = sum(v for (r, l), v in rec.items() if _certified(golden, r, l))
    assert cert == pytest.approx(LUMI, rel=1e-9)
    assert sum(rec.values()) == pytest.approx(pseudo.lumi_all_pb, rel=1e-9)
    assert sum(rec.values()) > cert  # some lumi sections are not certified
    for run, ranges in golden.items():
        assert all(a <= b for a, b in ranges) and all((int(run), a) in rec for a, _ in ranges)


def test_yields_follow_xsec_times_lumi(pseudo):
    golden = json.loads(pseudo.golden_json.read_text())
    rec = _read_csv(pseudo.lumi_csv)
    total_written, total_cert = 0, 0
    for name, s in pseudo.processes.items():
        xs = PROCESSES[name].xsec_pb
        assert s["expected_all"] == pytest.approx(xs * pseudo.lumi_all_pb)
        assert s["expected_certified"] == pytest.approx(xs * LUMI)
        mu = s["expected_all"]
        assert abs(s["generated"] - mu) < 5 * np.sqrt(mu) + 1, name
        # prefiring removes < 3 % of the events
        assert 0.97 * s["generated"] - 5 * np.sqrt(mu) <= s["written"] <= s["generated"]
        mu_c = s["expected_certified"]
        assert abs(s["written_certified"] - mu_c) < 5 * np.sqrt(mu_c) + 0.03 * mu_c + 1, name
        total_written += s["written"]
        total_cert += s["written_certified"]
    runs, lss = [], []
    for path in pseudo.files:
        a = uproot.open(path)["Events"].arrays(["run", "luminosityBlock", "event"], library="np")
        runs.append(a["run"])
        lss.append(a["luminosityBlock"])
    runs, lss = np.concatenate(runs), np.concatenate(lss)
    assert runs.size == total_written
    assert all((int(r), int(l)) in rec for r, l in set(zip(runs.tolist(), lss.tolist())))
    cert = np.array([_certified(golden, r, l) for r, l in zip(runs.tolist(), lss.tolist())])
    assert int(cert.sum()) == total_cert
    # events per lumi section follow its recorded luminosity
    keys, counts = np.unique(np.stack([runs, lss], 1), axis=0, return_counts=True)
    lumi = np.array([rec[(int(r), int(l))] for r, l in keys])
    rate = counts.sum() / lumi.sum()
    assert np.all(np.abs(counts - rate * lumi) < 6 * np.sqrt(rate * lumi) + 2)


def test_pseudodata_is_reproducible(pseudo, tmp_path):
    again = generate_pseudodata(tmp_path, lumi_pb=LUMI, seed=11, n_files=2, chunk_size=20000)
    assert again.processes == pseudo.processes
    a = uproot.open(pseudo.files[1])["Events"]["MET_pt"].array(library="np")
    b = uproot.open(again.files[1])["Events"]["MET_pt"].array(library="np")
    assert np.array_equal(a, b)
