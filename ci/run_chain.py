"""The full analysis chain on a reduced synthetic sample, one command per stage.

    python ci/run_chain.py OUTDIR [--config synthetic_small] [--analysis mw]

generate (dataset cache) -> histmaker -> setup_fit -> fit -> plots. Each stage runs as its own
process through the same command line a user types, and the stage times are written to
``OUTDIR/chain.json`` together with the mass result. A failing stage stops the chain with its
exit code, so a change that breaks any stage fails CI (tests/test_chain.py runs this).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def fit_analyses() -> list[str]:
    """Registered analyses that declare a fit (the chain needs one)."""
    from wremnants_dask.processors.registry import ANALYSES, processor_class

    return sorted(n for n in ANALYSES if processor_class(n).fit_setup is not None)


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
    setup = meta.get("fit_setup") or {}
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
    p.add_argument("--corrections", default=None, help="muon corrections payload for the histmaker")
    args = p.parse_args(argv)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    executor = ["--executor", "sync"] if args.workers == "sync" else ["-j", str(args.workers)]
    hist_file = out / "hists" / f"{args.analysis}.hdf5"
    fitinput = out / "fitinput" / f"fitinput_{args.analysis}.hdf5"
    stages = [
        ("generate", [py, "-m", "wremnants_dask.datasets", args.config]),
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
                *(["--corrections", args.corrections] if args.corrections else []),
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
        "stage_seconds": times,
        "mass": summary.get("mass"),
        "gof": summary.get("gof"),
    }
    (out / "chain.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
