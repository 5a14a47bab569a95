"""``python -m wremnants_dask.plot fakerate``: on a file with a known log-linear fake rate and a
prompt contribution to subtract, the logged smoothed fake rate equals the truth."""

from __future__ import annotations

import re
from pathlib import Path

import hist
import numpy as np
import pytest

from wremnants_dask.cli.plot import main
from wremnants_dask.histograms.histio import write_hists

EDGES = np.linspace(25.0, 55.0, 11)
CENTERS = 0.5 * (EDGES[1:] + EDGES[:-1])
TRUE_FR = 0.6 * np.exp(-0.02 * (CENTERS - 25.0))  # log-linear: exact for the order-2 smoothing


def _h(values: np.ndarray) -> hist.Hist:
    h = hist.Hist(
        hist.axis.Variable(EDGES, name="pt", label="pT (GeV)"),
        hist.axis.Boolean(name="passIso"),
        hist.axis.Boolean(name="passMT"),
        storage=hist.storage.Weight(),
    )
    h.view().value = values
    h.view().variance = values
    return h


@pytest.fixture(scope="module")
def histfile(tmp_path_factory) -> Path:
    fail = 1e6 * np.exp(-0.05 * (CENTERS - 25.0))  # non-prompt, failing isolation
    nonprompt = np.zeros((10, 2, 2))
    for mt in (0, 1):
        nonprompt[:, 0, mt] = fail * (1.0 if mt == 0 else 0.4)
        nonprompt[:, 1, mt] = TRUE_FR * nonprompt[:, 0, mt]
    prompt = np.zeros((10, 2, 2))
    prompt[:, 1, :] = 2e5  # isolated prompt muons, also in the low-mT sideband
    prompt[:, 0, :] = 1e4
    path = tmp_path_factory.mktemp("fr") / "mw.hdf5"
    ds = {
        "data": ({"nominal": _h(nonprompt + prompt)}, {"is_data": True, "group": "Data", "lumi_pb": 1.0}),
        "w": ({"nominal": _h(prompt)}, {"is_data": False, "group": "Wmunu", "xsec_pb": 1.0, "gen_sumw": 1.0}),
    }  # fmt: skip
    write_hists(path, ds, {"stage": "histmaker"})
    return path


def test_smoothed_fake_rate_is_the_truth(histfile: Path, tmp_path: Path) -> None:
    assert main(["fakerate", "--input", str(histfile), "-o", str(tmp_path)]) == 0
    log = (tmp_path / "fakerate_nominal_pt.log").read_text()
    got = [float(v) for v in re.findall(r"^pT \S+ smoothed\s+(\S+)", log, re.M)]
    # 1e5-1e6 events per bin: statistical precision ~1e-3, the truth is exactly representable
    np.testing.assert_allclose(got, TRUE_FR, rtol=5e-3)
    assert (tmp_path / "fakerate_nominal_pt.png").stat().st_size > 5000
    assert "prompt subtracted: ['Wmunu']" in log


def test_unsubtracted_prompt_is_caught(histfile: Path, tmp_path: Path, monkeypatch) -> None:
    """The check above fails when the prompt subtraction is dropped (injected here)."""
    from wremnants_dask.plotting import nonprompt

    monkeypatch.setattr(nonprompt, "NONPROMPT_MC", (*nonprompt.NONPROMPT_MC, "Wmunu"))
    assert main(["fakerate", "--input", str(histfile), "-o", str(tmp_path)]) == 0
    log = (tmp_path / "fakerate_nominal_pt.log").read_text()
    got = np.array([float(v) for v in re.findall(r"^pT \S+ smoothed\s+(\S+)", log, re.M)])
    assert not np.allclose(got, TRUE_FR, rtol=5e-3)
