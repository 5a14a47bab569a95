"""Shared test fixtures: where the real CMS files live, and a per-session scratch folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# The fit command keeps compiled JAX programs in ~/.cache by default; the suite (and the chain
# commands it spawns, which inherit the environment) uses a scratch folder instead, so running
# the tests never writes into the user's home. An explicit setting wins.
os.environ.setdefault(
    "WREMNANTS_DASK_JAX_CACHE",
    str(Path(tempfile.gettempdir()) / f"wremnants_dask_tests_jax_cache_{os.getuid()}"),
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("WREMNANTS_SHARED", REPO_ROOT.parent / "shared"))
NANOAOD_DY = SHARED / "data" / "nanoaod" / "nano_dy.root"
NANOAOD_DATA = SHARED / "data" / "nanoaod" / "nano_dimuon.root"
LUMI_CSV = SHARED / "data" / "lumi" / "lumi_small.csv"
GOLDEN_JSON = (
    SHARED / "data" / "lumi" / "Cert_294927-306462_13TeV_EOY2017ReReco_Collisions17_JSON.txt"
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.exists():
        pytest.fail(f"shared data folder not found at {SHARED} (set WREMNANTS_SHARED)")
    return SHARED / "data"
