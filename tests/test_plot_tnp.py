"""The tag-and-probe command chain on a small synthetic sample: run, refit a bin, plot.

``python -m wremnants_dask.tnp`` on histograms of 20k Z -> mu mu (simulation and pseudo-data)
with a 2 x 2 bin config writes the tables, the smoothed SFs and the payload; ``tnp refit``
replaces one bin's nominal fit by one with a linear background and another range and rewrites the outputs
(the tables then hold the refit's value, the refit is recorded, the payload follows); a bin
outside the grid is a one-line error. ``python -m wremnants_dask.plot tnp`` then writes every
plot with a non-empty log beside it and an index.html that links them.
"""

from __future__ import annotations

import json

import h5py
import pytest

from wremnants_dask import synth

CONFIG = """
tag: {pt_min: 26.0, eta_max: 2.4, id: tightId, dxy_max: 0.05, iso_max: 0.15, trigger_match: true}
probe: {pt_min: 15.0, eta_max: 2.4}
trigger: {bit: 8, dr: 0.3}
pair: {opposite_charge: true, mass_bins: 80, mass_range: [50.0, 130.0]}
steps:
  - {name: idip, pass: {id: mediumId, dxy_max: 0.05}}
  - {name: iso, pass: {iso_max: 0.15}}
  - {name: trigger, pass: {trigger_match: true}}
binning: {pt: [15, 30, 40, 80], eta: [-2.4, 0.0, 2.4], charge: false}
extraction:
  fit_range: [60.0, 120.0]
  signal_window: [81.0, 101.0]
  sidebands: [[60.0, 71.0], [111.0, 120.0]]
  alternatives: []
"""


@pytest.fixture(scope="module")
def tnp_out(tmp_path_factory):
    from wremnants_dask import engine
    from wremnants_dask.cli.tnp import main
    from wremnants_dask.histograms import histio
    from wremnants_dask.inputs.datasets import Dataset
    from wremnants_dask.processors.tnp import TagAndProbeProcessor

    base = tmp_path_factory.mktemp("tnpcli")
    cfg = base / "tnp.yaml"
    cfg.write_text(CONFIG)
    mc = synth.generate_sample("zmumu", 20_000, base / "mc", seed=61)
    info = synth.generate_pseudodata(
        base / "data", lumi_pb=10.0, seed=62, processes=("zmumu", "ttbar")
    )
    datasets = [
        Dataset("zmumu", "Zmumu", tuple(map(str, mc)), False, 2000.0, "2018"),
        Dataset("data", "Data", tuple(map(str, info.files)), True, None, "2018",
                lumi_csv=str(info.lumi_csv), golden_json=str(info.golden_json)),
    ]  # fmt: skip
    proc = TagAndProbeProcessor(config=str(cfg))
    hists = histio.write_run(base / "tnp.hdf5", engine.run(datasets, proc), {"stage": "test"})
    out = base / "out"
    argv = ["--histograms", str(hists), "--config", str(cfg), "-o", str(out)]
    main([*argv, "--truth", str(base / "mc" / "truth.json"), "--smooth-pt-min", "0",
          "--smooth-degree", "1"])  # fmt: skip
    return out


def _eff(out, b):
    with h5py.File(out / "efficiencies.hdf5") as f:
        return float(f["data/fit/eff"][()].ravel()[b]), json.loads(f.attrs["refits"])


def test_outputs_written(tnp_out):
    for name in ("efficiencies.csv", "efficiencies.hdf5", "fit_summary.json", "smooth_sf.hdf5",
                 "wremnants_corrections.json.gz"):  # fmt: skip
        assert (tnp_out / name).stat().st_size > 0, name


def test_refit_one_bin(tnp_out, capsys):
    from wremnants_dask.cli.tnp import main
    from wremnants_dask.corrections.payload import CorrectionsPayload

    before, refits = _eff(tnp_out, 4)
    assert refits == []
    mtime = (tnp_out / "wremnants_corrections.json.gz").stat().st_mtime_ns
    # step iso (index 1), eta bin 0, pt bin 2, charge 0 -> flat (1, 2, 0, 0) = 6 + 4 = 10
    argv = ["refit", str(tnp_out), "--bin", "iso,0,2,0", "--background", "linear"]
    main([*argv, "--range", "65,115"])
    text = capsys.readouterr().out
    assert "refit" in text and "wrote" in text
    after, refits = _eff(tnp_out, 10)
    assert refits and refits[-1]["bin"] == [1, 2, 0, 0] and refits[-1]["background"] == "linear"
    assert refits[-1]["fit_range"] == [65.0, 115.0]
    assert after == pytest.approx(refits[-1]["eff"], rel=1e-12)
    assert (tnp_out / "wremnants_corrections.json.gz").stat().st_mtime_ns > mtime
    CorrectionsPayload(tnp_out / "wremnants_corrections.json.gz")  # still a valid payload
    assert before == _eff(tnp_out, 4)[0]  # other bins untouched
    with pytest.raises(SystemExit, match="outside the grid"):
        main(["refit", str(tnp_out), "--bin", "iso,0,7,0"])


def test_plots_and_logs(tnp_out, tmp_path):
    from wremnants_dask.cli.plot import main

    plots = tmp_path / "plots"
    assert main(["tnp", str(tnp_out), "-o", str(plots), "--bins", "0"]) == 0
    steps = ("idip", "iso", "trigger")
    want = [f"eff_map_{s}_{k}.png" for s in steps for k in ("data", "mc")]
    want += [f"sf_map_{s}.png" for s in steps] + [f"sf_vs_pt_{s}.png" for s in steps]
    want += ["fit_idip_pt0_eta0_q0.png", "fit_iso_pt2_eta0_q0.png"]  # asked for, refitted
    for name in want:
        png = plots / name
        assert png.stat().st_size > 5000, name
        log = png.with_suffix(".log").read_text()
        assert "command:" in log and "== yields" in log and len(log) > 200, name
    assert "template/linear" in (plots / "fit_iso_pt2_eta0_q0.log").read_text()
    assert "smoothed" in (plots / "sf_vs_pt_iso.log").read_text()
    index = (plots / "index.html").read_text()
    for name in want:
        assert f"href='{name}'" in index and f"href='{name[:-4]}.log'" in index, name
    assert main(["tnp", str(tmp_path / "nothing"), "-o", str(plots)]) == 2
