"""The tools in scripts/: compare_outputs must see a one-ulp change and ignore provenance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _write(path: Path, values: np.ndarray, meta: dict, files: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["metadata"] = json.dumps(meta)
        d = f.create_dataset("datasets/a/values", data=values)
        d.attrs["info"] = json.dumps({"files": files, "n_events": 3})
        f.attrs["time_fit"] = meta["t"]


def _compare(a: Path, b: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "compare_outputs.py"),
            str(a),
            str(b),
            "--files",
            "x.hdf5",
        ],
        capture_output=True,
        text=True,
    )


def test_compare_outputs_ignores_provenance_but_not_one_ulp(tmp_path: Path) -> None:
    v = np.array([1.0, 2.0, np.nan])
    _write(tmp_path / "a" / "x.hdf5", v, {"t": 1.0, "git": "abc"}, ["/cache/old/f_0.root"])
    # other provenance, timings and cache folder: identical
    _write(tmp_path / "b" / "x.hdf5", v, {"t": 2.0, "git": "def"}, ["/cache/new/f_0.root"])
    same = _compare(tmp_path / "a", tmp_path / "b")
    assert same.returncode == 0, same.stdout
    # one ulp in one value: a difference
    _write(
        tmp_path / "c" / "x.hdf5",
        np.array([1.0, np.nextafter(2.0, 3.0), np.nan]),
        {"t": 1.0, "git": "abc"},
        ["/cache/old/f_0.root"],
    )
    diff = _compare(tmp_path / "a", tmp_path / "c")
    assert diff.returncode == 1 and "values differ (1 elements)" in diff.stdout
    # another input file name: a difference
    _write(tmp_path / "d" / "x.hdf5", v, {"t": 1.0, "git": "abc"}, ["/cache/old/g_0.root"])
    assert _compare(tmp_path / "a", tmp_path / "d").returncode == 1
