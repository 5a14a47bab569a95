"""``python -m wremnants_dask.plot hists|variations`` on a small histmaker-format file: the
logged yields equal the hand-normalised sums (xsec x lumi / sum of weights), selections and
rebinning act as asked, and bad requests fail with one line naming the file and the axis."""

from __future__ import annotations

import re
from pathlib import Path

import hist
import numpy as np
import pytest

from wremnants_dask.cli.plot import main
from wremnants_dask.histograms.histio import write_hists

LUMI_PB = 2.0
SAMPLES = {  # name: (group, xsec_pb, gen_sumw, scale of the filled counts)
    "wjets": ("Wmunu", 10.0, 100.0, 30.0),
    "dy": ("Zmumu", 4.0, 50.0, 5.0),
}


def _h(scale: float, variation: bool = False) -> hist.Hist:
    axes = [
        hist.axis.Regular(4, 20.0, 60.0, name="pt", label="pT (GeV)"),
        hist.axis.Boolean(name="passIso"),
    ]
    if variation:
        axes.append(hist.axis.Regular(2, -2, 2, name="downUpVar", underflow=False, overflow=False))
    h = hist.Hist(*axes, storage=hist.storage.Weight())
    vals = scale * np.arange(1, 9, dtype=float).reshape(4, 2)
    if variation:
        vals = np.stack([vals * 0.9, vals * 1.1], axis=-1)
    h.view().value = vals
    h.view().variance = vals
    return h


@pytest.fixture(scope="module")
def histfile(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hists") / "mw.hdf5"
    ds = {"data": ({"nominal": _h(7.0)}, {"is_data": True, "group": "Data", "lumi_pb": LUMI_PB})}
    for name, (group, xsec, sumw, scale) in SAMPLES.items():
        info = {"is_data": False, "group": group, "xsec_pb": xsec, "gen_sumw": sumw}
        ds[name] = ({"nominal": _h(scale), "nominal_lepSF": _h(scale, True)}, info)
    write_hists(path, ds, {"stage": "histmaker", "command": "histmaker -a mw"})
    return path


def _logged_yield(log: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)}\s+(\S+)\s", log, re.M)
    assert m, (name, log[:2000])
    return float(m.group(1))


def test_hists_yields_are_normalised(histfile: Path, tmp_path: Path) -> None:
    rc = main(["hists", "--input", str(histfile), "--axes", "pt", "--select", "passIso=1",
               "--rebin", "pt=2", "-o", str(tmp_path)])  # fmt: skip
    assert rc == 0
    png = tmp_path / "hist_nominal_pt_passIso1.png"
    assert png.stat().st_size > 5000
    log = png.with_suffix(".log").read_text()
    passing = np.arange(1, 9, dtype=float).reshape(4, 2)[:, 1].sum()  # passIso=True column
    for group, xsec, sumw, scale in SAMPLES.values():
        expected = scale * passing * xsec * LUMI_PB / sumw
        assert _logged_yield(log, group) == pytest.approx(expected, rel=1e-5)
    assert _logged_yield(log, "Data") == pytest.approx(7.0 * passing, rel=1e-5)
    assert "stage=histmaker" in log and (tmp_path / "index.html").exists()


def test_variation_up_down(histfile: Path, tmp_path: Path) -> None:
    rc = main(["variations", "--input", str(histfile), "--variation", "lepSF", "--process",
               "Wmunu", "--axes", "pt", "-o", str(tmp_path)])  # fmt: skip
    assert rc == 0
    log = (tmp_path / "var_nominal_lepSF_Wmunu_pt.log").read_text()
    nom = _logged_yield(log, "nominal")
    assert nom == pytest.approx(30.0 * 36 * 10.0 * LUMI_PB / 100.0, rel=1e-5)
    assert _logged_yield(log, "Up") == pytest.approx(1.1 * nom, rel=1e-5)
    assert _logged_yield(log, "Down") == pytest.approx(0.9 * nom, rel=1e-5)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--axes", "eta"], "'eta'"),
        (["--axes", "pt", "--select", "passIso=maybe"], "passIso"),
        (["--axes", "pt", "--rebin", "pt=3"], "pt"),
        (["--axes", "pt", "--hist", "nope"], "'nope'"),
    ],
)
def test_bad_requests_fail_in_one_line(histfile, tmp_path, capsys, args, needle) -> None:
    assert main(["hists", "--input", str(histfile), "-o", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "error" in err
