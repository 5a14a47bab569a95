"""mw and mz_dilepton on public NanoAOD of other versions and eras (tests/data/nanoaod).

The selected-event counts of every cut-flow step are compared with a count made here with plain
uproot and Python loops, from the same cuts and the era's trigger and ID definitions written out
independently of configs/nanoaod_eras.yaml. A case with a wrong era table shows the comparison
fails when the branch names are wrong.
"""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import uproot
from conftest import GOLDEN_JSON

from wremnants_dask import engine
from wremnants_dask.inputs import nanoaod_eras as eras
from wremnants_dask.inputs.datasets import Dataset
from wremnants_dask.processors.common import _WARNED
from wremnants_dask.processors.registry import get_processor

DATA = Path(__file__).resolve().parent / "data" / "nanoaod"


@dataclass(frozen=True)
class Case:
    file: str
    era: str
    group: str
    is_data: bool
    trigger: tuple[str, ...]  # OR of these paths
    loose: str  # "flag": Muon_looseId; "pf_gt": PF and (global or tracker); "pf": PF
    medium: str = "flag"  # "flag": Muon_mediumId; else as ``loose``
    met: str = "MET"

    @property
    def id(self) -> str:
        return self.file.removesuffix(".root")


CASES = [
    # the 2015 Open Data file has no Runs tree and no filled ID flags
    Case(
        "opendata2015_ttbar.root",
        "2015",
        "Top",
        False,
        ("HLT_IsoMu20", "HLT_IsoTkMu20"),
        "pf_gt",
        medium="pf_gt",
    ),
    Case("nano2016_mc_old.root", "2016", "Top", False, ("HLT_IsoMu24", "HLT_IsoTkMu24"), "pf"),
    Case("nano2017_doublemuon_old.root", "2017", "Data", True, ("HLT_IsoMu27",), "pf"),
    Case("nano2018_dy_old.root", "2018", "Zmumu", False, ("HLT_IsoMu24",), "pf"),
    Case("hggnano_ul2017_dy.root", "2017", "Zmumu", False, ("HLT_IsoMu27",), "flag"),
    Case("nano2017_tth_94x.root", "2017", "Higgs", False, ("HLT_IsoMu27",), "flag"),
    Case(
        "nano2022ee_v13_ggh.root",
        "2022EE",
        "Higgs",
        False,
        ("HLT_IsoMu24",),
        "flag",
        met="PuppiMET",
    ),
]


def dataset(case: Case) -> Dataset:
    return Dataset(
        f"c_{case.id}",
        case.group,
        (str(DATA / case.file),),
        case.is_data,
        None if case.is_data else 1.0,
        case.era,
        golden_json=str(GOLDEN_JSON) if case.is_data else None,
    )


# ------------------------------------------------------------------ independent selection
def _read(case: Case) -> dict[str, list]:
    tree = uproot.open(DATA / case.file)["Events"]
    names = set(tree.keys())
    want = [
        *case.trigger,
        "Muon_pt",
        "Muon_eta",
        "Muon_phi",
        "Muon_charge",
        "Muon_dxy",
        "Muon_pfRelIso04_all",
        "Muon_mediumId",
        "Muon_looseId",
        "Muon_isPFcand",
        "Muon_isGlobal",
        "Muon_isTracker",
        "Muon_genPartFlav",
        "genWeight",
        "TrigObj_id",
        "TrigObj_filterBits",
        "TrigObj_eta",
        "TrigObj_phi",
    ]
    arrays = tree.arrays([b for b in want if b in names], library="np")
    return {k: [np.asarray(x).tolist() for x in v] for k, v in arrays.items()}


def _id(ev: dict, i: int, j: int, rule: str, flag: str) -> bool:
    if rule == "flag":
        return bool(ev[flag][i][j])
    pf = bool(ev["Muon_isPFcand"][i][j])
    if rule == "pf":
        return pf
    return pf and bool(ev["Muon_isGlobal"][i][j] or ev["Muon_isTracker"][i][j])


def _matched(ev: dict, i: int, j: int) -> bool:
    for oid, bits, teta, tphi in zip(
        ev["TrigObj_id"][i], ev["TrigObj_filterBits"][i], ev["TrigObj_eta"][i], ev["TrigObj_phi"][i]
    ):
        if oid == 13 and bits & 8:
            dphi = (ev["Muon_phi"][i][j] - tphi + math.pi) % (2 * math.pi) - math.pi
            if (ev["Muon_eta"][i][j] - teta) ** 2 + dphi**2 < 0.09:
                return True
    return False


def expected_cutflow(case: Case, analysis: str) -> tuple[dict[str, int], float | None]:
    """Events passing each step, and the genWeight sum of the last step (None for data)."""
    ev = _read(case)
    n = len(ev["Muon_pt"])
    has_trigobj = "TrigObj_id" in ev
    prompt_match = case.group in ("Zmumu", "Wmunu") and "Muon_genPartFlav" in ev
    if analysis == "mw":
        names = ["one good muon", "loose muon veto"]
    else:
        names = ["two good muons", "loose muon veto", "opposite charge", "mll window"]
    names += (["trigger match"] if has_trigobj else []) + (["prompt match"] if prompt_match else [])
    steps = {"all": n, **({"golden json": n} if case.is_data else {}), "trigger": 0}
    steps.update(dict.fromkeys(names, 0))
    # run 297100, lumi 1 (the data file) is certified in the 2017 golden JSON
    last_sumw = 0.0
    for i in range(n):
        if not any(ev[p][i] for p in case.trigger):
            continue
        steps["trigger"] += 1
        mu = range(len(ev["Muon_pt"][i]))
        pt, eta = ev["Muon_pt"][i], ev["Muon_eta"][i]
        medium = [_id(ev, i, j, case.medium, "Muon_mediumId") for j in mu]
        loose = [_id(ev, i, j, case.loose, "Muon_looseId") for j in mu]
        base = [
            medium[j] and pt[j] > 26 and abs(eta[j]) < 2.4 and abs(ev["Muon_dxy"][i][j]) < 0.05
            for j in mu
        ]
        veto = [loose[j] and pt[j] > 15 and abs(eta[j]) < 2.4 for j in mu]
        if analysis == "mw":
            good = [j for j in mu if base[j] and pt[j] < 56]
            one = len(good) == 1
            ok = [one, sum(1 for j in mu if veto[j] or j in good) == 1]
            if has_trigobj:
                ok.append(one and _matched(ev, i, good[0]))
            if prompt_match:
                ok.append(one and ev["Muon_genPartFlav"][i][good[0]] == 1)
        else:
            good = [j for j in mu if base[j] and ev["Muon_pfRelIso04_all"][i][j] < 0.15]
            two = len(good) == 2
            opp = two and ev["Muon_charge"][i][good[0]] * ev["Muon_charge"][i][good[1]] < 0
            ok = [two, sum(1 for j in mu if veto[j] or j in good) == 2, opp]
            ok.append(two and 60 < _mass(ev, i, good) < 120)
            if has_trigobj:
                ok.append(two and any(_matched(ev, i, j) for j in good))
            if prompt_match:
                ok.append(two and all(ev["Muon_genPartFlav"][i][j] == 1 for j in good))
        for name, passed in zip(names, ok):
            if not passed:
                break
            steps[name] += 1
        else:
            if not case.is_data:
                last_sumw += float(ev["genWeight"][i])
    return steps, (None if case.is_data else last_sumw)


def _mass(ev: dict, i: int, good: list[int]) -> float:
    e = px = py = pz = 0.0
    for j in good[:2]:
        pt, eta, phi = ev["Muon_pt"][i][j], ev["Muon_eta"][i][j], ev["Muon_phi"][i][j]
        x, y, z = pt * math.cos(phi), pt * math.sin(phi), pt * math.sinh(eta)
        e += math.sqrt(x * x + y * y + z * z + 0.1056583755**2)
        px, py, pz = px + x, py + y, pz + z
    return math.sqrt(max(e * e - px * px - py * py - pz * pz, 0.0))


# ------------------------------------------------------------------ the runs
def run_case(case: Case | list[Case], analysis: str, **options) -> engine.RunResult:
    _WARNED.clear()
    proc = get_processor(analysis, calibrate_data=False, **options)
    cases = case if isinstance(case, list) else [case]
    return engine.run([dataset(c) for c in cases], proc)


@pytest.fixture(scope="module")
def results() -> dict[str, engine.RunResult]:
    """One run per analysis over all files (a dataset each): one graph, one startup."""
    return {a: run_case(CASES, a) for a in ("mw", "mz_dilepton")}


@pytest.mark.parametrize("analysis", ["mw", "mz_dilepton"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cutflow_equals_independent_count(results, case: Case, analysis: str) -> None:
    res = results[analysis][f"c_{case.id}"]
    cf = res.cutflows["main"]
    want, want_sumw = expected_cutflow(case, analysis)
    got = dict(zip(cf.steps, cf.counts))
    assert got == want
    # the cut flow only narrows the selection
    assert all(a >= b for a, b in zip(cf.counts, cf.counts[1:]))
    if want_sumw is not None:
        # float32 genWeight summed in float64 both ways; only the order differs
        assert cf.sumw[-1] == pytest.approx(want_sumw, rel=1e-9, abs=1e-9)
    first = "nominal" if analysis == "mw" else "mll"
    assert first in res.hists
    # the output records which branch held each input
    meta = res.info()["processor_metadata"]
    assert meta["era"] == case.era
    assert meta["nanoaod_inputs"]["trigger"] == " | ".join(case.trigger)
    if analysis == "mw":
        assert meta["nanoaod_inputs"]["MET_pt"] == f"{case.met}_pt"


def test_wrong_era_table_is_caught(tmp_path: Path) -> None:
    """The comparison fails when the table maps the medium ID of 2017 to the tight ID."""
    case = next(c for c in CASES if c.file == "hggnano_ul2017_dy.root")
    table = Path(eras.default_table_path()).read_text()
    wrong = table.replace(
        "trigger: [HLT_IsoMu27]", "trigger: [HLT_IsoMu27]\n    Muon_mediumId: [Muon_tightId]"
    )
    assert wrong != table
    path = tmp_path / "eras.yaml"
    path.write_text(wrong)
    cf = run_case(case, "mw", eras=str(path))[f"c_{case.id}"].cutflows["main"]
    want, _ = expected_cutflow(case, "mw")
    got = dict(zip(cf.steps, cf.counts))
    assert got["trigger"] == want["trigger"]
    assert got["one good muon"] != want["one good muon"]


def test_simulation_without_runs_tree_sums_genweight(results) -> None:
    """No Runs tree: the generator sums are genWeight summed over the Events tree, recorded so."""
    case = CASES[0]
    ev = uproot.open(DATA / case.file)["Events"].arrays(["genWeight"], library="np")
    w = ev["genWeight"].astype(np.float64)
    res = results["mw"][f"c_{case.id}"]
    gs = res.gen_sums
    assert gs.count == len(w) == 200
    assert gs.sumw == pytest.approx(w.sum(), rel=1e-12)
    assert gs.sumw2 == pytest.approx((w * w).sum(), rel=1e-12)
    assert res.info()["gen_sums_source"] == "Events genWeight (no Runs tree)"
    # a file with a Runs tree keeps its sums (written before any skim), whatever the spelling
    old = results["mz_dilepton"]["c_nano2018_dy_old"].info()
    assert old["gen_sums_source"] == "Runs tree (genEventSumw)"
    assert old["gen_count"] == 1400477


def test_cli_missing_branch_is_one_line(tmp_path: Path) -> None:
    """ScoutingNANO has no offline Muon collection: one line naming branch, file and table key."""
    cfg = tmp_path / "scouting.yaml"
    cfg.write_text(
        "era: '2022'\nsamples:\n  - name: scouting\n    group: Top\n    xsec_pb: 1.0\n"
        f"    files: {DATA / 'scouting_run3.root'}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "wremnants_dask.histmaker", "-a", "mz_dilepton"]
        + ["--dataset-config", str(cfg), "--executor", "sync", "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("histmaker: error: ")
    assert "scouting_run3.root: no branch for required input Muon_pt" in last
    assert "eras.'2022'.Muon_pt" in last and "nanoaod_eras.yaml" in last
