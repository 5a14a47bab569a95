"""Data luminosity when files are skipped whole (``--skip-bad-files``) or lose every chunk: a
lumi section whose events are spread over a processed file and a file of which nothing was
processed is partial, so it must not count as recorded. Truth from an independent count:
uproot reads run/luminosityBlock of both files, a plain-Python parse of the CSV sums the
sections all of whose entries were processed."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot
from test_reliab_lumi import DATA_STEP, PER_LS, _run, data_ds, data_file, plain_recorded
from test_reliab_normalisation import damage_basket

__all__ = ["data_file"]  # the module fixture, shared with test_reliab_lumi

# Entries of the source file in the first file; the rest go to the second. 100 is inside a
# lumi section (PER_LS = 24 entries each): section [96, 120) straddles the two files.
SPLIT = 100


def write_part(src, dst, a: int, b: int, drop: tuple[str, ...] = ()):
    """Entries [a, b) of ``src`` into ``dst`` in DATA_STEP-entry baskets, without ``drop``."""
    ev = uproot.open(src)["Events"].arrays()
    ev = ev[a:b]
    keep = [k for k in ev.fields if k not in drop]
    muon = ak.zip({k[5:]: ev[k] for k in keep if k.startswith("Muon_")})
    flat = {k: ev[k] for k in keep if not k.startswith(("Muon_", "nMuon"))}
    with uproot.recreate(dst) as out:
        tree = out.mktree(
            "Events",
            {k: ak.Array(v).type.content for k, v in {"Muon": muon, **flat}.items()},
            field_name=lambda outer, inner: inner if outer == "" else f"{outer}_{inner}",
        )
        for i in range(0, len(ev), DATA_STEP):
            tree.extend(
                {
                    "Muon": muon[i : i + DATA_STEP],
                    **{k: v[i : i + DATA_STEP] for k, v in flat.items()},
                }
            )
    return dst


def pairs(path) -> list[tuple[int, int]]:
    a = uproot.open(path)["Events"].arrays(["run", "luminosityBlock"], library="np")
    return list(zip(a["run"].tolist(), a["luminosityBlock"].tolist()))


def truth_lumi(processed_files, unprocessed_files, count_partial: bool = False) -> float:
    """Recorded lumi of the sections none of whose entries is in ``unprocessed_files``
    (``count_partial``: the wrong accounting that counts every processed section)."""
    done = {k for f in processed_files for k in pairs(f)}
    undone = {k for f in unprocessed_files for k in pairs(f)}
    rec = plain_recorded()
    return sum(rec[k] for k in (done if count_partial else done - undone))


def two_file_ds(first, second):
    ds = data_ds(first)
    return type(ds)(**{**ds.__dict__, "files": (str(first), str(second))})


@pytest.mark.parametrize(
    "count_partial", [False, pytest.param(True, marks=pytest.mark.xfail(strict=True))]
)
def test_file_skipped_whole_makes_shared_sections_partial(data_file, tmp_path, count_partial):
    """The second file lacks Muon_pt: skipped whole at the branch check. The section it
    shares with the first file ([96, 120) of the source) is partial and left out; the xfail
    case is the old accounting, which judged sections from the processed files only."""
    first = write_part(data_file, tmp_path / "a.root", 0, SPLIT)
    second = write_part(data_file, tmp_path / "b.root", SPLIT, 10**9, drop=("Muon_pt",))
    r = _run(two_file_ds(first, second))
    assert [s["file"] for s in r.skipped] == [str(second)]
    assert r.n_events == SPLIT and r.lost == []
    assert r.lumi_error is None
    truth = truth_lumi([first], [second], count_partial)
    # a sum of a few CSV numbers in another order: equal to rounding
    assert r.lumi_pb == pytest.approx(truth, rel=1e-12)
    sec = r.info()["lumi_sections"]
    assert sec["n_complete_sections"] == SPLIT // PER_LS
    assert sec["n_partial_sections"] == 1
    assert sec["events_in_partial_sections"] == SPLIT % PER_LS
    assert sec["skipped_files_read_back"] == [str(second)]


def test_file_with_every_chunk_lost_makes_shared_sections_partial(data_file, tmp_path):
    """Every basket of Muon_pt of the second file is damaged: all its chunks are lost at read
    time; its sections, including the one it shares with the first file, are not counted."""
    first = write_part(data_file, tmp_path / "a.root", 0, SPLIT)
    second = write_part(data_file, tmp_path / "b.root", SPLIT, 10**9)
    n_baskets = uproot.open(second)["Events"]["Muon_pt"].num_baskets
    for i in range(n_baskets):
        damage_basket(second, "Muon_pt", i)
    r = _run(two_file_ds(first, second))
    assert {c["file"] for c in r.lost} == {str(second)}
    assert r.n_events == SPLIT and r.lumi_error is None
    assert r.lumi_pb == pytest.approx(truth_lumi([first], [second]), rel=1e-12)
    assert r.info()["lumi_sections"]["n_partial_sections"] == 1


def test_unreadable_skipped_file_gives_no_lumi_and_names_it(data_file, tmp_path):
    """A second file that is not ROOT at all: which sections it holds cannot be known, so no
    luminosity rather than a possibly over-counted one, and the message names the file."""
    first = write_part(data_file, tmp_path / "a.root", 0, SPLIT)
    junk = tmp_path / "junk.root"
    junk.write_bytes(np.arange(4096, dtype=np.uint8).tobytes())
    r = _run(two_file_ds(first, junk))
    assert [s["file"] for s in r.skipped] == [str(junk)]
    assert r.n_events == SPLIT
    assert r.lumi_pb is None
    assert str(junk) in r.lumi_error and "lumi sections" in r.lumi_error
