"""MC normalisation: generator sums from Runs trees (both NanoAOD spellings) and scale factors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import uproot
from conftest import NANOAOD_DATA, NANOAOD_DY

from wremnants_dask.inputs import normalization as norm
from wremnants_dask.inputs.datasets import Dataset, load_datasets


def direct_runs(path: Path, suffix: str) -> tuple[float, float, int]:
    runs = uproot.open(path)["Runs"]
    return (
        float(runs[f"genEventSumw{suffix}"].array(library="np").sum()),
        float(runs[f"genEventSumw2{suffix}"].array(library="np").sum()),
        int(runs[f"genEventCount{suffix}"].array(library="np").sum()),
    )


def write_runs(path: Path, sumw: list[float], sumw2: list[float], count: list[int]) -> Path:
    with uproot.recreate(path) as f:
        f["Runs"] = {
            "run": np.ones(len(sumw), dtype=np.uint32),
            "genEventSumw": np.array(sumw, dtype=np.float64),
            "genEventSumw2": np.array(sumw2, dtype=np.float64),
            "genEventCount": np.array(count, dtype=np.int64),
        }
        f["Events"] = {"genWeight": np.ones(3, dtype=np.float32)}
    return path


def test_real_nanoaod_v6_sums() -> None:
    sums = norm.read_gen_sums([NANOAOD_DY])
    sumw, sumw2, count = direct_runs(NANOAOD_DY, "_")
    assert (sums.sumw, sums.sumw2, sums.count, sums.n_files) == (sumw, sumw2, count, 1)
    # the Runs sums describe the full generated sample, not the 40 skimmed events
    gen_weights = uproot.open(NANOAOD_DY)["Events"]["genWeight"].array(library="np")
    assert sums.sumw > 1000 * gen_weights.sum()
    assert sums.effective_entries == pytest.approx(sumw**2 / sumw2)


def test_new_spelling_and_several_files(tmp_path: Path) -> None:
    a = write_runs(tmp_path / "a.root", [10.5, -2.0, 4.0], [30.0, 4.0, 9.5], [7, 2, 3])
    b = write_runs(tmp_path / "b.root", [1.25], [2.0], [1])
    sums = norm.read_gen_sums([a, b, NANOAOD_DY])
    dy = direct_runs(NANOAOD_DY, "_")
    assert sums.sumw == pytest.approx(10.5 - 2.0 + 4.0 + 1.25 + dy[0], rel=1e-15)
    assert sums.sumw2 == pytest.approx(30.0 + 4.0 + 9.5 + 2.0 + dy[1], rel=1e-15)
    assert sums.count == 7 + 2 + 3 + 1 + dy[2]
    assert sums.n_files == 3


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(
        norm.NormalizationError, match=r"nano_dimuon\.root:Runs has none of .*genEventSumw"
    ):
        norm.read_gen_sums([NANOAOD_DY, NANOAOD_DATA])
    no_runs = tmp_path / "no_runs.root"
    with uproot.recreate(no_runs) as f:
        f["Events"] = {"genWeight": np.ones(2, dtype=np.float32)}
    with pytest.raises(norm.NormalizationError, match=r"no_runs\.root has no 'Runs' tree"):
        norm.read_gen_sums([no_runs])
    with pytest.raises(norm.NormalizationError, match="no files"):
        norm.read_gen_sums([])
    with pytest.raises(norm.NormalizationError, match=r"cannot open .*missing\.root"):
        norm.read_gen_sums([tmp_path / "missing.root"])


def test_scale_factor() -> None:
    assert norm.scale_factor(2.0, 3.0, 4.0) == 1.5
    for bad in [(1.0, 1.0, 0.0), (1.0, 1.0, -5.0), (0.0, 1.0, 1.0), (1.0, -1.0, 1.0)]:
        with pytest.raises(norm.NormalizationError):
            norm.scale_factor(*bad)


def test_dataset_scale_from_config() -> None:
    mc, data = load_datasets("nanoaod_shared")
    sumw = direct_runs(NANOAOD_DY, "_")[0]
    assert mc.xsec_pb == 6077.22
    assert norm.mc_scale(mc, 41.5) == pytest.approx(6077.22 * 41.5 / sumw, rel=1e-14)
    assert norm.dataset_gen_sums(data) is None
    assert norm.mc_scale(data, 41.5) == 1.0
    broken = Dataset("dy_bad", "Zmumu", (str(NANOAOD_DATA),), False, 1.0, "2018")
    with pytest.raises(norm.NormalizationError, match=r"dataset 'dy_bad': .*nano_dimuon\.root"):
        norm.mc_scale(broken, 1.0)
