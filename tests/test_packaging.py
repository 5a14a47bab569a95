"""The top-level folders install inside the wremnants_dask namespace, editable or not."""

from __future__ import annotations

import importlib
import importlib.metadata
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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("wremnants_dask-*.whl")
    return path


def test_version_written_once(wheel: Path) -> None:
    """pyproject takes the version from wremnants_dask.__version__: the installed metadata and
    a freshly built wheel both carry it (an editable install made before a version bump fails
    here until reinstalled)."""
    import wremnants_dask

    assert importlib.metadata.version("wremnants_dask") == wremnants_dask.__version__
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        lines = z.read(meta).decode().splitlines()
    assert f"Version: {wremnants_dask.__version__}" in lines
    assert wheel.name.startswith(f"wremnants_dask-{wremnants_dask.__version__}-")


def test_wheel_contains_every_module(wheel: Path) -> None:
    """A regular (non-editable) install must carry every module of the mapped folders."""
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
