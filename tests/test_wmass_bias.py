"""scripts/wmass_bias.py: the per-point dataset configs and the linearity fit (the chain it
runs is tests/test_chain.py's). The full scan is too slow for the suite; its figures are in
the report of the run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml

from wremnants_dask.inputs.datasets import check_config, config_path
from wremnants_dask.synth import SynthParams

REPO = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("wmass_bias", REPO / "scripts" / "wmass_bias.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_point_config_is_valid_and_injects_the_shift(tmp_path: Path) -> None:
    bias = _script()
    base = yaml.safe_load(config_path("synthetic_small").read_text())
    cfg = bias.point_config(base, -25.0, 4242, 10.0)
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(cfg))
    check_config(path)  # every check of the loader, nothing generated
    (data,) = [s for s in cfg["samples"] if s["generator"].get("pseudodata")]
    assert data["generator"]["params"]["data_mW"] == pytest.approx(SynthParams().mW - 0.025)
    assert data["generator"]["seed"] == 4242 and cfg["scale"] == 10.0
    # the simulation is untouched (one cached copy for every point)
    mc = [s for s in cfg["samples"] if not s["generator"].get("pseudodata")]
    assert mc == [s for s in base["samples"] if not s["generator"].get("pseudodata")]


def test_linearity_against_numpy() -> None:
    bias = _script()
    rng = np.random.default_rng(1)
    inj = np.repeat([-50.0, -25.0, 0.0, 25.0, 50.0], 3)
    sig = rng.uniform(20, 30, inj.size)
    fit = -7.0 + 0.9 * inj + rng.normal(0, sig)
    res = bias.linearity(inj, fit, sig)
    slope, offset = np.polyfit(inj, fit, 1, w=1 / sig)
    assert res["slope"] == pytest.approx(slope, rel=1e-10)
    assert res["offset_mev"] == pytest.approx(offset, rel=1e-10)
    assert res["offset_in_sigma"] == pytest.approx(offset / sig.mean(), rel=1e-10)
    # the errors are the weighted-LS ones: polyfit's unscaled covariance
    cov = np.polyfit(inj, fit, 1, w=1 / sig, cov="unscaled")[1]
    assert res["slope_err"] == pytest.approx(np.sqrt(cov[0, 0]), rel=1e-8)
