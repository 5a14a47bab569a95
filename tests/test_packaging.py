"""The top-level folders install inside the wremnants_dask namespace, editable or not."""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("module", "folder"),
    [
        ("wremnants_dask.processors", "processors"),
        ("wremnants_dask.corrections", "corrections"),
        ("wremnants_dask.fitting", "fitting"),
        ("wremnants_dask.configs", "configs"),
    ],
)
def test_namespace_mapping(module: str, folder: str) -> None:
    mod = importlib.import_module(module)
    assert Path(mod.__file__).resolve().parent == (REPO / folder).resolve()


def test_wheel_contains_every_module(tmp_path: Path) -> None:
    """A regular (non-editable) install must carry every module of the mapped folders."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("wremnants_dask-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for folder, pkg in [
        ("wremnants_dask", "wremnants_dask"),
        ("wremnants_dask/synth", "wremnants_dask/synth"),
        ("processors", "wremnants_dask/processors"),
        ("corrections", "wremnants_dask/corrections"),
        ("fitting", "wremnants_dask/fitting"),
    ]:
        for py in (REPO / folder).glob("*.py"):
            expected.add(f"{pkg}/{py.name}")
    for data in list((REPO / "configs").glob("*.yaml")) + list(
        (REPO / "corrections").glob("*.json*")
    ):
        expected.add(f"wremnants_dask/{data.parent.name}/{data.name}")
    missing = sorted(expected - names)
    assert not missing, f"modules missing from the wheel: {missing}"
