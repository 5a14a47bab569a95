"""The whole chain (generate -> histmaker -> setup_fit -> fit -> plots) on the reduced sample.

The pseudo-data are generated with a true W mass that differs from the simulation's; the fit
must find that shift within its quoted uncertainty, and every stage's output must carry the
provenance of the stages before it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("chain")
    env = dict(os.environ, WREMNANTS_DASK_CACHE=str(out / "cache"))
    subprocess.run(
        [sys.executable, str(REPO / "ci" / "run_chain.py"), str(out)],
        check=True,
        env=env,
        timeout=900,
    )
    return out


def _truth(out: Path) -> dict:
    (truth,) = [p for p in (out / "cache").rglob("truth.json") if "pseudodata" in str(p)]
    return json.loads(truth.read_text())


def test_mass_shift_recovered(chain: Path) -> None:
    result = json.loads((chain / "chain.json").read_text())
    mass = result["mass"]
    truth = _truth(chain)
    true_shift_mev = (truth["data_params"]["mW"] - truth["params"]["mW"]) * 1e3
    assert mass["reference_mev"] == pytest.approx(truth["params"]["mW"] * 1e3)
    pull = (mass["shift_mev"] - true_shift_mev) / mass["uncertainty_mev"]
    assert abs(pull) < 3.0, (mass, true_shift_mev)
    # the statistical part dominates at this tiny luminosity, but every group is reported
    assert mass["stat_mev"] <= mass["uncertainty_mev"] + 1e-9
    assert {"pdf", "muon_eff_stat", "nonprompt", "luminosity"} <= set(mass["impacts_mev"])
    assert result["gof"]["p_value"] > 1e-3


def test_outputs_carry_the_chain(chain: Path) -> None:
    with h5py.File(chain / "fit" / "fitresults.hdf5") as f:
        meta = json.loads(f.attrs["metadata"])
    stages = []
    while meta:
        stages.append(meta.get("stage"))
        assert meta["git"] is not None and "versions" in meta and meta["argv"]
        meta = (meta.get("inputs") or [None])[0]
    assert stages[:2] == ["fit", "setup_fit"] and stages[-1] in ("histmaker", "histograms")
    summary = json.loads((chain / "plots" / "summary.json").read_text())
    assert summary["metadata"]["inputs"][0]["stage"] == "fit"
    for name in ("prefit_ch0_pt.png", "postfit_ch0_eta.png", "pulls.png", "impacts_mass.png"):
        assert (chain / "plots" / name).stat().st_size > 1000
