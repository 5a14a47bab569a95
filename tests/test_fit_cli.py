"""The CLI end to end: output file, provenance chain, hists, impacts, scans, Asimov."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from wremnants_dask.fitting import write_fit_input
from wremnants_dask.fitting.cli import main
from wremnants_dask.fitting.output import read_hist
from wremnants_dask.fitting.synthmodel import build_synthetic


@pytest.fixture(scope="module")
def fit_input(tmp_path_factory):
    fi, truth, _ = build_synthetic(nsyst=8, nnorm=2, neta=6, npt=5, signal_per_bin=800.0)
    path = tmp_path_factory.mktemp("fit") / "fitinput.hdf5"
    write_fit_input(fi, path, {"stage": "fitinput", "marker": 42})
    return path, fi


def test_cli_full_run(fit_input, tmp_path, capsys):
    path, fi = fit_input
    rc = main(
        [
            str(path),
            "-o",
            str(tmp_path),
            "--impacts",
            "--impacts-refit",
            "--scan",
            "massShiftW",
            "--scan-points",
            "3",
            "--scan-range",
            "1",
        ]
    )
    assert rc == 0
    assert "POI mu" in capsys.readouterr().out
    with h5py.File(tmp_path / "fitresults.hdf5") as f:
        meta = json.loads(f.attrs["metadata"])
        assert meta["stage"] == "fit" and meta["inputs"][0]["marker"] == 42
        par = f["parameters"][()]
        names = [n.decode() for n in par["name"]]
        i = names.index("massShiftW")
        # scan at +-1 sigma: 2 dNLL close to 1 (near-Gaussian), exactly 0 at the minimum
        grid, q = f["scans/massShiftW"][()]
        assert q[1] == pytest.approx(0.0, abs=1e-6)
        assert q[0] == pytest.approx(1.0, abs=0.05) and q[2] == pytest.approx(1.0, abs=0.05)
        # refit impacts agree with covariance impacts for a near-Gaussian likelihood
        ic = f["impacts/impacts"][()][0]
        up = f["impacts_refit/up"][()][0]
        refit_names = json.loads(f["impacts_refit"].attrs["params"])
        cov_for_refit = np.array([ic[names.index(n)] for n in refit_names])
        np.testing.assert_allclose(up, cov_for_refit, atol=0.05 * np.abs(cov_for_refit).max())
        # post-fit total in each bin equals the sum of processes; hists rebuild
        h = read_hist(f["hists/postfit/ch/total"])
        procs = sum(read_hist(f[f"hists/postfit/ch/{p}"]).values() for p in fi.processes)
        np.testing.assert_allclose(h.values(), procs, rtol=1e-12)
        assert np.all(h.variances() > 0)
        assert f["covariance"].shape == (fi.npar, fi.npar)
        assert np.isfinite(par["error"][i])


def test_cli_module_asimov_and_bad_name(fit_input, tmp_path):
    path, _ = fit_input
    cmd = [sys.executable, "-m", "wremnants_dask.fit", str(path), "-o", str(tmp_path), "-t", "-1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    with h5py.File(tmp_path / "fitresults.hdf5") as f:
        par = f["parameters"][()]
        np.testing.assert_allclose(par["value"], par["prefit"], atol=1e-5)  # Asimov: truth back
    bad = subprocess.run(
        cmd + ["--freeze", "nosuchparam"], capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 2 and "unknown parameter 'nosuchparam'" in bad.stderr
