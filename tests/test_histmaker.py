"""The histmaker CLI end to end (synchronous executor) on the real NanoAOD dataset config."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import NANOAOD_DATA, NANOAOD_DY
from engine_helpers import reference_muon_kinematics

from wremnants_dask.cli import histmaker
from wremnants_dask.histograms.histio import HistFile


def test_cli_writes_histograms_and_provenance(tmp_path, capsys):
    out = histmaker.main(
        [
            "--dataset-config",
            "nanoaod_shared",
            "--analysis",
            "muon_kinematics",
            "--executor",
            "sync",
            "-o",
            str(tmp_path),
            "-p",
            "t1",
            "--step-size",
            "20",
            "--no-progress",
        ]
    )
    assert out == tmp_path / "muon_kinematics_t1.hdf5" and out.exists()
    assert "processed 80 events" in capsys.readouterr().out
    ref, *_ = reference_muon_kinematics([NANOAOD_DY], is_data=False)
    ref_d, *_ = reference_muon_kinematics([NANOAOD_DATA], is_data=True)
    with HistFile(out) as f:
        assert set(f.datasets) == {"dy_m50", "data_dimuon"}
        h = f.get("dy_m50", "nominal")
        np.testing.assert_allclose(h.view(flow=True).value, ref.view(flow=True).value, rtol=1e-9)
        np.testing.assert_allclose(
            f.get("data_dimuon", "nominal").view(flow=True).value, ref_d.view(flow=True).value
        )
        assert f.get("dy_m50", "pdf").axes["pdfVar"].size == 33
        info = f.info("dy_m50")
        assert info["xsec_pb"] == 6077.22 and info["n_events"] == 40 and info["gen_sumw"] > 0
        dinfo = f.info("data_dimuon")
        assert dinfo["is_data"] and dinfo["lumi_pb"] == 0.0  # 2018 run not in the 2017 golden JSON
        meta = f.metadata
        assert meta["stage"] == "histmaker" and meta["args"]["analysis"] == "muon_kinematics"
        assert str(NANOAOD_DY) in meta["input_files"] and "git" in meta and "versions" in meta
        assert meta["run"]["graph_layers"] == 6


def test_cli_no_systematics_and_skip_bad_files(tmp_path):
    bad = tmp_path / "bad.root"
    bad.write_bytes(b"definitely not ROOT")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "era: '2018'\nsamples:\n  - name: dy\n    group: Zmumu\n    xsec_pb: 10.0\n"
        f"    files: [{NANOAOD_DY}, {bad}]\n"
    )
    args = [
        "--dataset-config",
        str(cfg),
        "--analysis",
        "muon_kinematics",
        "--executor",
        "sync",
        "-o",
        str(tmp_path),
        "--no-progress",
        "--no-systematics",
        "--step-size",
        "40",
    ]
    with pytest.raises(Exception, match="bad.root"):
        histmaker.main(args)
    out = histmaker.main([*args, "--skip-bad-files"])
    with HistFile(out) as f:
        assert f.names("dy") == ["nominal"]
        skipped = f.metadata["skipped_files"]
        assert [s["file"] for s in skipped] == [str(bad)] and "not a readable ROOT file" in skipped[
            0
        ]["reason"]
        assert f.info("dy")["skipped_files"] == skipped
