"""The NanoAOD era table (configs/nanoaod_eras.yaml) and its resolution against branch lists."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import pytest
import uproot

from wremnants_dask.inputs import nanoaod_eras as eras
from wremnants_dask.inputs.nanoaod_eras import EraTableError, MissingInputError

DATA = Path(__file__).resolve().parent / "data" / "nanoaod"
MUON = ["Muon_pt", "Muon_eta", "Muon_looseId", "Muon_mediumId"]


def table(tmp_path: Path, text: str) -> eras.EraTable:
    path = tmp_path / "eras.yaml"
    path.write_text(text)
    return eras.load_table(path)


def test_first_present_candidate_wins(tmp_path: Path) -> None:
    t = table(
        tmp_path,
        "defaults:\n  Muon_looseId: [Muon_looseId, {all: [Muon_isPFcand, {any: [A, B]}]}]\n"
        "eras:\n  'x': {trigger: [{any: [HLT_1, HLT_2]}]}\n",
    )
    new = t.resolve("x", ["Muon_looseId", "HLT_1", "HLT_2"], ["Muon_looseId", "trigger"])
    assert new.exprs["Muon_looseId"] == "Muon_looseId"
    old = t.resolve("x", ["Muon_isPFcand", "A", "B", "HLT_1", "HLT_2"], ["Muon_looseId"])
    assert old.mapping() == {"Muon_looseId": "Muon_isPFcand & (A | B)"}
    assert old.notes == ("Muon_looseId read as Muon_isPFcand & (A | B)",)
    # the era's own trigger differs from the default name: noted; the default way is not
    assert new.notes == ("trigger read as HLT_1 | HLT_2",)
    # an input the table does not list is read under its own name
    assert t.resolve("x", ["event"], ["event"]).exprs == {"event": "event"}


def test_expression_evaluates_on_arrays() -> None:
    expr = ("all", ("P", ("any", ("G", "T"))))
    cols = {
        "P": ak.Array([[True, True, False], [True]]),
        "G": ak.Array([[True, False, True], [False]]),
        "T": ak.Array([[False, False, True], [True]]),
    }
    assert eras.evaluate(expr, cols.__getitem__).tolist() == [[True, False, False], [True]]


def test_loose_id_expression_equals_flag_on_real_file() -> None:
    """On a UL2017 file that has both, the default fallback reproduces Muon_looseId."""
    t = eras.load_table()
    ev = uproot.open(DATA / "hggnano_ul2017_dy.root")["Events"].arrays(
        ["Muon_looseId", "Muon_isPFcand", "Muon_isGlobal", "Muon_isTracker"]
    )
    fallback = t.candidates("2017", "Muon_looseId")[1]
    got = eras.evaluate(fallback, ev.__getitem__)
    assert ak.sum(ak.num(got)) > 40
    assert ak.all(ak.flatten(got == ev.Muon_looseId))


def test_missing_required_input_is_one_line(tmp_path: Path) -> None:
    names = uproot.open(DATA / "scouting_run3.root")["Events"].keys()
    with pytest.raises(MissingInputError) as err:
        eras.load_table().resolve(
            "2022", names, ["Muon_pt", "trigger"], ["genWeight"], file="scouting_run3.root"
        )
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("scouting_run3.root: no branch for required input Muon_pt")
    assert "trigger (tried HLT_IsoMu24)" in msg
    assert "set eras.'2022'.Muon_pt in" in msg and msg.rstrip().endswith("this file uses")


def test_optional_input_absent_is_left_out() -> None:
    res = eras.load_table().resolve("2022EE", ["Muon_pt"], ["Muon_pt"], ["L1PreFiringWeight_Nom"])
    assert not res.has("L1PreFiringWeight_Nom") and res.has("Muon_pt")


def test_run3_reads_puppi_met_and_2015_its_triggers() -> None:
    t = eras.load_table()
    assert t.candidates("2022EE", "MET_pt") == ("PuppiMET_pt",)
    assert t.candidates("2018", "MET_pt") == ("MET_pt",)
    assert eras.describe(t.candidates("2015", "trigger")[0]) == "HLT_IsoMu20 | HLT_IsoTkMu20"
    assert t.candidates("2016preVFP", "trigger") == t.candidates("2016", "trigger")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("defaults: {}\n", r"needs a mapping 'eras'"),
        ("eras:\n  2018: {}\n", r"era 2018 must be a string \(quote it\)"),
        ("eras:\n  '2018': {trigger: HLT_IsoMu24}\n", r"eras\.2018\.trigger: must be a non-empty"),
        ("eras:\n  '2018': {trigger: [{or: [a]}]}\n", r"eras\.2018\.trigger: a candidate is"),
        ("eras: {}\nextra: 1\n", r"unknown top-level key"),
    ],
)
def test_malformed_table_names_the_key(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(EraTableError, match=match):
        table(tmp_path, text)


def test_unknown_era_names_the_table(tmp_path: Path) -> None:
    t = table(tmp_path, "eras:\n  '2018': {}\n")
    with pytest.raises(EraTableError, match=r"era '1999' is not in .*eras\.yaml \(known: 2018\)"):
        t.resolve("1999", MUON, MUON)
