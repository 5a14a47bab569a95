"""The histmaker CLI end to end (synchronous executor) on the real NanoAOD dataset config."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

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


def _scaled_payload(src: Path, dst: Path, correction: str, factor: float) -> None:
    """A copy of the payload ``src`` with the nominal of ``correction`` multiplied by
    ``factor`` (every number under its ``variation: nominal`` branch)."""

    def scale(node: Any) -> Any:
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            return node * factor
        if isinstance(node, list):
            return [scale(x) for x in node]
        if isinstance(node, dict) and "content" in node:
            return {**node, "content": scale(node["content"])}
        return node

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("nodetype") == "category" and node.get("input") == "variation":
                for item in node["content"]:
                    if item["key"] == "nominal":
                        item["value"] = scale(item["value"])
                return
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    d = json.loads(gzip.decompress(src.read_bytes()))
    for c in d["corrections"]:
        if c["name"] == correction:
            walk(c["data"])
    dst.write_bytes(gzip.compress(json.dumps(d).encode()))


def test_corrections_payload_option(tmp_path: Path) -> None:
    """``--corrections`` makes the processor read another payload (a measured one from
    tag-and-probe): with the ID scale factors x1.1 every simulated W-selected event weighs
    1.1x the default run's (one muon), data are unchanged, and the output names the payload
    and its hash. Were the option ignored, the ratio would be 1."""
    from wremnants_dask.corrections.payload import default_payload_path
    from wremnants_dask.utils.provenance import file_sha256

    mod = tmp_path / "sf_idip_x1.1.json.gz"
    _scaled_payload(default_payload_path(), mod, "muon_sf_idip", 1.1)
    base = ["-a", "mw", "--dataset-config", "nanoaod_shared", "--executor", "sync"]
    base += ["-o", str(tmp_path), "--no-progress"]
    ref = histmaker.main([*base, "-p", "default"])
    got = histmaker.main([*base, "-p", "mod", "--corrections", str(mod)])
    with HistFile(ref) as fr, HistFile(got) as fg:
        mc_ref = fr.get("dy_m50", "nominal").values(flow=True)
        mc_got = fg.get("dy_m50", "nominal").values(flow=True)
        assert np.count_nonzero(mc_ref) > 0
        np.testing.assert_allclose(mc_got, 1.1 * mc_ref, rtol=1e-9)
        np.testing.assert_array_equal(
            fg.get("data_dimuon", "nominal").values(flow=True),
            fr.get("data_dimuon", "nominal").values(flow=True),
        )
        meta = fg.metadata["analysis_metadata"]
        assert meta["corrections"] == str(mod) and meta["corrections_sha256"] == file_sha256(mod)
        ref_meta = fr.metadata["analysis_metadata"]
        assert ref_meta["corrections_sha256"] == file_sha256(default_payload_path())


def test_corrections_payload_errors_are_one_line(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.json.gz"
    args = ["--dataset-config", "nanoaod_shared", "--executor", "sync", "-o", str(tmp_path)]
    assert histmaker.console_main([*args, "-a", "mw", "--corrections", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(missing) in err and len(err.splitlines()) == 1
    assert histmaker.console_main([*args, "-a", "tnp", "--corrections", str(missing)]) == 2
    assert "reads no corrections payload" in capsys.readouterr().err
