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


def _compare(a: Path, b: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "compare_outputs.py"),
            str(a),
            str(b),
            "--files",
            "x.hdf5",
            *extra,
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


def _write_format(path: Path, version: int, axes: list, stop: int, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["format_version"] = version
        f.attrs["channels"] = json.dumps([{"name": "ch", "axes": axes, "start": 0, "stop": stop}])
        f.create_dataset("values", data=values).attrs["axes"] = json.dumps(axes)


def test_ignore_attr_skips_a_format_change_but_not_the_numbers(tmp_path: Path) -> None:
    """A new axis dialect and format version are ignored on request; a value, or a key of a
    JSON attribute that is not ignored (the channel's bin range), still counts."""
    v = np.array([1.0, 2.0])
    old = [{"type": "regular", "name": "pt", "bins": 2, "start": 0.0, "stop": 1.0}]
    new = [{"type": "regular", "lower": 0.0, "upper": 1.0, "bins": 2, "metadata": {"name": "pt"}}]
    _write_format(tmp_path / "a" / "x.hdf5", 1, old, 2, v)
    _write_format(tmp_path / "b" / "x.hdf5", 2, new, 2, v)
    assert _compare(tmp_path / "a", tmp_path / "b").returncode == 1  # not ignored: differ
    ignore = ("--ignore-attr", "axes", "format_version")
    same = _compare(tmp_path / "a", tmp_path / "b", *ignore)
    assert same.returncode == 0, same.stdout
    _write_format(tmp_path / "c" / "x.hdf5", 2, new, 3, v)  # channel range differs
    out = _compare(tmp_path / "a", tmp_path / "c", *ignore)
    assert out.returncode == 1 and "/@channels: differs" in out.stdout
    _write_format(tmp_path / "d" / "x.hdf5", 2, new, 2, np.array([1.0, 2.5]))
    out = _compare(tmp_path / "a", tmp_path / "d", *ignore)
    assert out.returncode == 1 and "values differ (1 elements)" in out.stdout
