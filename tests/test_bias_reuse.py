"""The bias scan's reuse (scripts/wmass_bias.py): the simulation's histograms filled once and
merged with each point's pseudo-data give the fit input one full histmaker run gives.

One full run (simulation + pseudo-data of one scan point) is the reference; the reuse fills the
simulation alone and the pseudo-data alone, merges them (histograms.merge) and runs setup_fit.
Every histogram, bookkeeping entry and fit-input array must be identical byte for byte (only
the provenance differs). The check is shown able to fail: pseudo-data of another seed (what a
reuse that mixed up the points would give) differs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import h5py
import pytest
import yaml

from wremnants_dask.cli import histmaker, setup_fit
from wremnants_dask.histograms.merge import MergeError, merge_hist_files
from wremnants_dask.inputs.datasets import config_path

REPO = Path(__file__).resolve().parent.parent
#: Small statistics: 1/10 of synthetic_small (its simulation is 1/10 of the default).
SCALE = 0.1
SEED, OTHER_SEED = 9001, 9002


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModuleType, ModuleType]:
    """Full run and reuse of one scan point (+25 MeV), with pseudo-data of a second seed."""
    bias = _script("wmass_bias")
    cmp = _script("compare_outputs")
    tmp = tmp_path_factory.mktemp("bias_reuse")
    base = yaml.safe_load(config_path("synthetic_small").read_text())
    data = bias.pseudodata_name(base)

    def hm(cfg: dict, out: Path, *extra: str) -> None:
        path = out / "datasets.yaml"
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(cfg))
        histmaker.main(
            [
                "-a",
                "mw",
                "--dataset-config",
                str(path),
                "-o",
                str(out),
                "--no-progress",
                "--executor",
                "sync",
                *extra,
            ]  # fmt: skip
        )

    hm(bias.point_config(base, 25.0, SEED, SCALE), tmp / "full")
    hm(bias.simulation_config(base, SCALE), tmp / "sim")
    for seed in (SEED, OTHER_SEED):
        d = tmp / f"data{seed}"
        hm(bias.point_config(base, 25.0, seed, SCALE), d, "--datasets", data, "-p", "data")
        merge_hist_files([tmp / "sim" / "mw.hdf5", d / "mw_data.hdf5"], d / "mw.hdf5")
    for d in ("full", f"data{SEED}", f"data{OTHER_SEED}"):
        assert setup_fit.main([str(tmp / d / "mw.hdf5"), "-o", str(tmp / d)]) == 0
    return tmp, bias, cmp


@pytest.mark.parametrize("seed", [SEED, OTHER_SEED], ids=["same-seed", "other-seed-must-differ"])
def test_reuse_gives_the_full_runs_fit_input(scan: tuple, seed: int) -> None:
    tmp, _, cmp = scan
    hist_diffs = cmp.compare_files(tmp / "full" / "mw.hdf5", tmp / f"data{seed}" / "mw.hdf5")
    fit_diffs = cmp.compare_files(
        tmp / "full" / "fitinput_mw.hdf5", tmp / f"data{seed}" / "fitinput_mw.hdf5"
    )
    if seed == SEED:
        assert hist_diffs == [] and fit_diffs == [], hist_diffs + fit_diffs
    else:  # the injected error: the check sees other pseudo-data, in the data and fit input
        assert hist_diffs and all(d.startswith("datasets/data") for d in hist_diffs), hist_diffs
        assert any("data" in d and "values differ" in d for d in fit_diffs), fit_diffs


def test_merge_refuses_a_dataset_in_two_files(scan: tuple) -> None:
    tmp = scan[0]
    sim = tmp / "sim" / "mw.hdf5"
    with pytest.raises(MergeError, match="dataset 'diboson' is also in .*sim.mw.hdf5"):
        merge_hist_files([sim, sim], tmp / "twice.hdf5")
    assert not (tmp / "twice.hdf5").exists()


def test_merge_refuses_another_analysis(scan: tuple) -> None:
    tmp = scan[0]
    other = tmp / "other.hdf5"
    with h5py.File(tmp / f"data{SEED}" / "mw_data.hdf5", "r") as src, h5py.File(other, "w") as f:
        for k, v in src.attrs.items():
            f.attrs[k] = v
        f.attrs["metadata"] = src.attrs["metadata"].replace('"analysis": "mw"', '"analysis": "x"')
        f.create_group("datasets")
    with pytest.raises(MergeError, match="other.hdf5: metadata 'analysis' differs"):
        merge_hist_files([tmp / "sim" / "mw.hdf5", other], tmp / "bad.hdf5")
