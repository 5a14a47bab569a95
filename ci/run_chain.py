"""The full analysis chain on a reduced synthetic sample, one command per stage.

    python ci/run_chain.py OUTDIR [--config synthetic_small] [--analysis mw]
                                  [--corrections measured|truth|PAYLOAD]

generate (dataset cache) -> tnp -> [muon calibration: mz_mucalib histmaker -> mucalib, with
``--muon-calibration``] -> [mw, unless ``--no-recoil``: recoil histmaker (mz_recoil) -> recoil
calibration] -> [mw with ``--boson-pt``: mz_bosonpt histmaker -> boson-pT weights] ->
histmaker -> setup_fit -> fit -> plots. Each stage runs as its own
process through the same command line a user types, and the stage times are written to
``OUTDIR/chain.json`` together with the mass result. A failing stage stops the chain with its
exit code, so a change that breaks any stage fails CI (tests/test_chain.py runs this).

The muon efficiency scale factors the histmaker applies are measured by tag-and-probe on the
chain's own Z -> mu mu simulation and pseudo-data (``python -m wremnants_dask.tnp``, stage
``tnp``, binning ``configs/tnp_chain.yaml``): its payload replaces ``muon_sf_*`` and
``muon_eff_mc`` of the shipped payload, everything else (pileup, momentum scale, resolution,
prefiring, reference masses) stays the shipped payload's. ``--corrections truth`` uses the
shipped truth-derived payload instead (no tnp stage), ``--corrections PAYLOAD`` a given one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def fit_analyses() -> list[str]:
    """Registered analyses that have a fit config (configs/fit_<analysis>.yaml)."""
    import importlib.resources

    from wremnants_dask.fitsetup.config import default_config
    from wremnants_dask.processors.registry import ANALYSES

    packaged = importlib.resources.files("wremnants_dask.configs")
    return sorted(n for n in ANALYSES if packaged.joinpath(default_config(n)).is_file())


def fit_setup(hist_file: Path, meta: dict) -> dict:
    """The fit definition of a histmaker output from its analysis's fit config, resolved on its
    histogram (the region's ABCD axes are those the file has): histogram, fit_axes, region,
    nonprompt, signal (the signal process's first histmaker group)."""
    from wremnants_dask.fitsetup.config import default_config, load_fit_config
    from wremnants_dask.fitsetup.setup import resolve_setup
    from wremnants_dask.histograms.histio import HistFile

    cfg = load_fit_config(default_config(meta["analysis"]))
    with HistFile(hist_file) as hf:
        setup, _ = resolve_setup(cfg, hf.get(hf.datasets[0], cfg.histogram), str(hist_file))
    signal = next(p.groups[0] for p in cfg.processes if p.name == cfg.signal)
    return {"histogram": setup.histogram, "fit_axes": list(setup.fit_axes),
            "region": setup.region, "nonprompt": setup.nonprompt, "signal": signal}  # fmt: skip


#: tag-and-probe config of the chain (packaged name) and the payload file the tnp stage writes
TNP_CONFIG = "tnp_chain"
PAYLOAD = "wremnants_corrections.json.gz"
#: SF smoothing of the chain: straight lines in pT per eta bin (two eigen-variations each), the
#: coarse bins of configs/tnp_chain.yaml start above the trigger turn-on
TNP_SMOOTHING = ["--smooth-degree", "1", "--smooth-pt-min", "0"]


def tnp_command(config: str, tnp_config: str, outdir: Path) -> list[str]:
    """The tag-and-probe stage: measured SFs on the chain's Z sample and pseudo-data, written
    as a payload whose other corrections are the shipped payload's."""
    return [sys.executable, "-m", "wremnants_dask.tnp", "--dataset-config", config,
            "--config", tnp_config, "-o", str(outdir), "--base-payload", "default",
            *TNP_SMOOTHING]  # fmt: skip


def run_stage(name: str, cmd: list[str], log: Path) -> float:
    """Run one stage, streaming its output to ``log``; returns its wall time in seconds."""
    print(f"[chain] {name}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise SystemExit(f"[chain] stage {name!r} failed with exit code {proc.returncode}")
    print(f"[chain] {name}: {dt:.1f} s", flush=True)
    return dt


def mass_param(fitinput: Path) -> str:
    """The measured mass parameter that setup_fit recorded in the fit input's metadata."""
    import h5py

    with h5py.File(fitinput, "r") as f:
        return json.loads(f.attrs["metadata"])["setup"]["mass_param"]


#: Variations drawn over the nominal by the plot stage, the first ones the histograms have.
CHAIN_VARIATIONS = ("muonScale", "pdf", "effSyst", "qcdScale", "pileup")


def hist_plot_commands(hist_file: Path, outdir: Path) -> list[list[str]]:
    """Plot-stage commands on the histmaker output: data vs prediction on each fit axis in the
    fit region, and one variation over the nominal of the signal (a few entries)."""
    import h5py

    from wremnants_dask.histograms.histio import HistFile

    with h5py.File(hist_file, "r") as f:
        meta = json.loads(f.attrs["metadata"])
    setup = fit_setup(hist_file, meta)
    name = setup.get("histogram", "nominal")
    region = [
        f"{k}={int(v) if isinstance(v, bool) else v}"
        for k, v in (setup.get("region") or {}).items()
    ]
    base = [sys.executable, "-m", "wremnants_dask.plot"]
    cmds = []
    for axis in setup.get("fit_axes", []):
        cmds.append([*base, "hists", "--input", str(hist_file), "--hist", name, "--axes", axis,
                     "--select", *region, "-o", str(outdir)])  # fmt: skip
    # the non-prompt ABCD regions: the other bins of the two region axes (isolation, mT), on pT
    flags = list((setup.get("region") or {}).items())
    if setup.get("nonprompt") and len(flags) == 2 and len(setup.get("fit_axes", [])) > 1:
        with HistFile(hist_file) as hf:
            h0 = hf.get(hf.datasets[0], name)
            sizes = [len(h0.axes[k]) for k, _ in flags]
        signal = tuple(int(v) % n for (_, v), n in zip(flags, sizes))
        for a in range(sizes[0]):
            for b in range(sizes[1]):
                if (a, b) == signal:
                    continue  # the signal region, drawn above
                cmds.append([*base, "hists", "--input", str(hist_file), "--hist", name, "--axes",
                             setup["fit_axes"][1], "--select", f"{flags[0][0]}={a}",
                             f"{flags[1][0]}={b}", "-o", str(outdir)])  # fmt: skip
        cmds.append([*base, "fakerate", "--input", str(hist_file), "--hist", name,
                     "--iso-axis", flags[0][0], "--mt-axis", flags[1][0], "-o", str(outdir)])  # fmt: skip
    with HistFile(hist_file) as hf:
        signal = [d for d in hf.datasets if hf.info(d).get("group") == setup.get("signal")]
        have = set(hf.names(signal[0])) if signal else set()
    for var in CHAIN_VARIATIONS:
        if f"{name}_{var}" in have:
            # one entry of each variation axis but downUpVar (a category axis: its first 4)
            with HistFile(hist_file) as h:
                nominal_axes = h.get(signal[0], name).axes.name
                sel = [
                    f"{a.name}=0:4" if a.__class__.__name__ == "StrCategory" else f"{a.name}=0"
                    for a in h.get(signal[0], f"{name}_{var}").axes
                    if a.name not in nominal_axes and a.name != "downUpVar"
                ]
            cmds.append([*base, "variations", "--input", str(hist_file), "--hist", name,
                         "--variation", var, "--process", setup["signal"], "--axes",
                         setup["fit_axes"][0], "--select", *region, *sel, "-o", str(outdir)])  # fmt: skip
            break
    return cmds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir")
    p.add_argument("--config", default="synthetic_small", help="dataset config")
    p.add_argument("--analysis", default="mw", choices=fit_analyses())
    p.add_argument("--workers", default="sync", help="'sync' or the number of local workers")
    p.add_argument(
        "--corrections",
        default="measured",
        help="muon corrections of the histmaker: 'measured' (tag-and-probe stage on the chain's "
        "Z sample), 'truth' (the shipped truth-derived payload) or a payload path",
    )
    p.add_argument("--tnp-config", default=TNP_CONFIG, help="tag-and-probe config of the tnp stage")
    p.add_argument(
        "--muon-calibration",
        action="store_true",
        help="measure the muon momentum calibration from the Z events first (mz_mucalib "
        "histmaker + mucalib) and apply it in the W histmaker",
    )
    p.add_argument(
        "--recoil",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="mw: measure the recoil in Z events and calibrate the W simulation with it (group "
        "'recoil', symmetrised in configs/fit_mw.yaml: the chain's W toys converge 60/60); on "
        "by default: the pseudo-data's recoil response and resolution differ from the "
        "simulation's",
    )
    p.add_argument(
        "--recoil-degree",
        type=int,
        default=0,
        help="qT polynomial degree of the recoil ratios (default 0: the reduced sample's ~900 "
        "data Z events do not constrain a slope)",
    )
    p.add_argument(
        "--boson-pt",
        action="store_true",
        help="mw: measure the Z qT spectrum's data/simulation ratio (mz_bosonpt histmaker -> "
        "bosonpt) and weight the W and Z simulation with it (group 'boson_pt'); the pseudo-data "
        "of --config synthetic_small_bosonpt / synthetic_bosonpt has a qT difference",
    )
    p.add_argument(
        "--boson-pt-degree",
        type=int,
        default=2,
        help="degree of the boson-pT ratio in ln(1 + qT/5 GeV) (default 2: the reduced "
        "sample's ~900 data Z events)",
    )
    args = p.parse_args(argv)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    executor = ["--executor", "sync"] if args.workers == "sync" else ["-j", str(args.workers)]
    hist_file = out / "hists" / f"{args.analysis}.hdf5"
    fitinput = out / "fitinput" / f"fitinput_{args.analysis}.hdf5"
    stages = [("generate", [py, "-m", "wremnants_dask.datasets", args.config])]
    payload = args.corrections
    if payload == "measured":
        stages.append(("tnp", tnp_command(args.config, args.tnp_config, out / "tnp")))
        payload = str(out / "tnp" / PAYLOAD)
    elif payload == "truth":
        payload = None  # the histmaker's default: the shipped payload
    corrections = ["--corrections", payload] if payload else []
    calib_payload = out / "mucalib" / "muon_calibration.json.gz"
    calibration = [
        (
            "mucalib_histmaker",
            [py, "-m", "wremnants_dask.histmaker", "-a", "mz_mucalib", "--dataset-config",
             args.config, "--excludeProcs", "Wmunu", "-o", str(out / "mucalib"), "--no-progress",
             *executor, *corrections],
        ),
        (
            "mucalib",
            [py, "-m", "wremnants_dask.mucalib", str(out / "mucalib" / "mz_mucalib.hdf5"),
             "-o", str(calib_payload)],
        ),
    ]  # fmt: skip
    recoil_file = out / "recoil" / "recoil_calibration.json"
    recoil = args.analysis == "mw" and args.recoil
    # the recoil measured in Z -> mu mu events of the same datasets, then applied to W simulation
    recoil_stages = [
        ("recoil_hists", [py, "-m", "wremnants_dask.histmaker", "-a", "mz_recoil",
                          "--dataset-config", args.config, "-o", str(out / "hists"),
                          "--no-progress", "--no-systematics", *executor, *corrections]),
        ("recoil", [py, "-m", "wremnants_dask.recoil", str(out / "hists" / "mz_recoil.hdf5"),
                    "-o", str(recoil_file), "--degree", str(args.recoil_degree)]),
    ]  # fmt: skip
    bpt_file = out / "bosonpt" / "bosonpt_weights.json"
    boson_pt = args.analysis == "mw" and args.boson_pt
    # the Z qT spectrum measured in data, then its ratio applied to W and Z simulation
    bpt_stages = [
        ("bosonpt_hists", [py, "-m", "wremnants_dask.histmaker", "-a", "mz_bosonpt",
                           "--dataset-config", args.config, "-o", str(out / "hists"),
                           "--no-progress", "--no-systematics", *executor, *corrections]),
        ("bosonpt", [py, "-m", "wremnants_dask.bosonpt", str(out / "hists" / "mz_bosonpt.hdf5"),
                     "-o", str(bpt_file), "--degree", str(args.boson_pt_degree)]),
    ]  # fmt: skip
    stages += [
        *(calibration if args.muon_calibration else []),
        *(recoil_stages if recoil else []),
        *(bpt_stages if boson_pt else []),
        (
            "histmaker",
            [
                py,
                "-m",
                "wremnants_dask.histmaker",
                "-a",
                args.analysis,
                "--dataset-config",
                args.config,
                "-o",
                str(out / "hists"),
                "--no-progress",
                *executor,
                *corrections,
                *(["--muon-calibration", str(calib_payload)] if args.muon_calibration else []),
                *(["--recoil-calibration", str(recoil_file)] if recoil else []),
                *(["--boson-pt-weights", str(bpt_file)] if boson_pt else []),
            ],
        ),
        (
            "setup_fit",
            [py, "-m", "wremnants_dask.setup_fit", str(hist_file), "-o", str(out / "fitinput")],
        ),
        (
            "fit",
            lambda: [
                py,
                "-m",
                "wremnants_dask.fit",
                str(fitinput),
                "-o",
                str(out / "fit"),
                "--poi",
                mass_param(fitinput),
                "--impacts",
                "--global-impacts",
            ],
        ),
        # histograms of the histmaker output first: the fit plots' page links to their page
        ("plot_hists", lambda: hist_plot_commands(hist_file, out / "plots" / "hists")),
        (
            "plots",
            [
                py,
                "-m",
                "wremnants_dask.plot",
                "fit",
                str(out / "fit" / "fitresults.hdf5"),
                "-o",
                str(out / "plots"),
            ],
        ),
    ]
    # a stage given as a function is built when it runs (the fit reads its POI from the input);
    # it may give several commands (name_0, name_1, ...)
    times = {}
    for name, cmd in stages:
        cmd = cmd() if callable(cmd) else cmd
        if cmd and isinstance(cmd[0], list):
            for k, c in enumerate(cmd):
                times[f"{name}_{k}"] = run_stage(f"{name}_{k}", c, out / f"{name}_{k}.log")
        else:
            times[name] = run_stage(name, cmd, out / f"{name}.log")
    summary = json.loads((out / "plots" / "summary.json").read_text())
    result = {
        "analysis": args.analysis,
        "config": args.config,
        "corrections": args.corrections,
        "payload": corrections,  # None: the shipped one
        "stage_seconds": times,
        "mass": summary.get("mass"),
        "gof": summary.get("gof"),
    }
    (out / "chain.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
