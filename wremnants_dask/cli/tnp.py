"""``python -m wremnants_dask.tnp``: tag-and-probe histograms, efficiency fits and outputs.

Runs the ``tnp`` processor on the datasets (or reads an existing histogram file with
``--histograms``), extracts efficiencies of data and simulation by counting and by the batched
template fit, and writes into ``--outdir``: ``tnp.hdf5`` (histograms), ``efficiencies.csv`` and
``efficiencies.hdf5`` (tables), ``fit_summary.json`` (flagged bins and why) and, with
``--base-payload`` or ``--truth``, the correctionlib payload ``wremnants_corrections.json.gz``
whose muon scale factors and MC efficiencies are the measured ones while everything else
(pileup, momentum scale, resolution, prefiring, reference masses) is the base payload's: the
shipped one (``--base-payload default``) or one built from ``--truth``. The W-mass processor
reads it with ``histmaker --corrections``; the default chain (ci/run_chain.py) does so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import h5py
import numpy as np


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wremnants_dask.tnp", description=__doc__)
    p.add_argument("--dataset-config", help="dataset YAML (Z -> mu mu simulation and data)")
    p.add_argument("--histograms", help="use this tnp histogram file instead of running")
    p.add_argument("--config", help="tag-and-probe YAML (default: configs/tnp.yaml)")
    p.add_argument("-o", "--outdir", required=True, help="output folder")
    p.add_argument("--signal-group", default="Zmumu", help="simulation group of the templates")
    p.add_argument("--nominal", choices=("fit", "count"), default="fit", help="SF method")
    base = p.add_mutually_exclusive_group()
    base.add_argument(
        "--base-payload",
        help="also write the measured payload, the rest taken from this payload "
        "('default': the shipped one the W-mass processor reads otherwise)",
    )
    base.add_argument(
        "--truth", help="also write the measured payload, the rest built from this truth.json"
    )
    p.add_argument(
        "--processes",
        nargs="+",
        default=None,
        help="samples or groups histogrammed (default: the signal group and Data)",
    )
    p.add_argument("--step-size", type=int, default=200_000)
    add_smoothing_args(p)
    return p


def add_smoothing_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--smooth-degree",
        type=int,
        default=2,
        help="polynomial degree of the SF smoothing in pT (-1: binned SFs in the payload)",
    )
    p.add_argument(
        "--smooth-pt-min",
        type=float,
        default=28.0,
        help="coarse pT bins below this stay binned (the trigger turn-on)",
    )


def write_smoothed(ex, outdir: Path, args: argparse.Namespace):
    """Smooth the SFs (unless --smooth-degree < 0), write smooth_sf.hdf5, return the smoothing."""
    if args.smooth_degree < 0:
        return None
    from wremnants_dask.efficiency.smooth import smooth_all, write_smooth

    smooth = smooth_all(ex, args.smooth_degree, args.smooth_pt_min)
    for step, sm in smooth.items():
        bad = int((sm.chi2_prob < 1e-3).sum())
        print(f"  smoothing {step}: degree {sm.degree}, {bad} eta bins with chi2 prob < 1e-3")
    print(f"wrote {write_smooth(smooth, outdir / 'smooth_sf.hdf5')}")
    return smooth


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["refit"]:
        return refit(argv[1:])
    args = make_parser().parse_args(argv)
    from wremnants_dask.efficiency import output
    from wremnants_dask.efficiency.extract import extract
    from wremnants_dask.efficiency.spectra import read_spectra
    from wremnants_dask.processors.tnp_config import load_config

    cfg = load_config(args.config)
    sources = {
        "truth": str(Path(args.truth).resolve()) if args.truth else None,
        "base_payload": base_payload_arg(args.base_payload),
    }
    base = payload_base(sources)  # a bad base payload fails before any work
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    hist_path = Path(args.histograms) if args.histograms else outdir / "tnp.hdf5"
    if not args.histograms:
        if not args.dataset_config:
            raise SystemExit("give --dataset-config (or --histograms)")
        run_histograms(args, cfg.path, hist_path)
    t0 = time.perf_counter()
    data = read_spectra(hist_path, data=True)
    mc = read_spectra(hist_path, data=False, signal_group=args.signal_group)
    ex = extract(cfg, data, mc, nominal=args.nominal)
    print(
        f"extraction: {data.n_bins} bins, data: {len(ex.results['data'])} measurements, "
        f"simulation: {len(ex.results['mc'])}, in {time.perf_counter() - t0:.1f} s"
    )
    for key, s in ex.summary().items():
        print(f"  {key}: {s['flagged']} of {s['bins']} bins flagged")
        for b in s["flagged_bins"][:5]:
            print(f"    {b['step']} pt#{b['pt_bin']} eta#{b['eta_bin']}: {', '.join(b['reasons'])}")
    attrs = {
        "histograms": str(hist_path.resolve()),
        "config": str(cfg.path),
        "signal_group": args.signal_group,
        **sources,
        "refits": [],
        "smooth_degree": args.smooth_degree,
        "smooth_pt_min": args.smooth_pt_min,
    }
    paths = output.write_tables(ex, outdir, attrs)
    for p in paths.values():
        print(f"wrote {p}")
    try:
        smooth = write_smoothed(ex, outdir, args)
    except ValueError as err:
        print(f"no smoothing: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    if base is not None:
        try:
            cset = output.build_measured_payload(ex, base, smooth)
        except ValueError as err:
            print(f"no payload written: {err}", file=sys.stderr)
            raise SystemExit(1) from None
        print(f"wrote {output.write_payload(cset, outdir)}")
    return outdir


def base_payload_arg(value: str | None) -> str | None:
    """--base-payload as recorded: 'default' or an absolute path."""
    if value is None or value == "default":
        return value
    return str(Path(value).resolve())


def payload_base(attrs: dict) -> dict | None:
    """The base CorrectionSet named by the run's attributes (base_payload or truth), or None."""
    from wremnants_dask.corrections.payload import CorrectionError
    from wremnants_dask.efficiency import output

    if attrs.get("base_payload"):
        path = attrs["base_payload"]
        try:
            return output.base_from_file(None if path == "default" else path)
        except CorrectionError as err:
            raise SystemExit(f"--base-payload: {err}") from None
    if attrs.get("truth"):
        try:
            truth = json.loads(Path(attrs["truth"]).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"--truth {attrs['truth']}: {err}") from None
        return output.base_from_truth(truth)
    return None


def run_histograms(args: argparse.Namespace, config_path: str, out: Path) -> Path:
    """The tnp processor over the datasets (synchronously), written like the histmaker's."""
    from wremnants_dask import engine
    from wremnants_dask.histograms import histio
    from wremnants_dask.inputs.datasets import load_datasets
    from wremnants_dask.processors.tnp import TagAndProbeProcessor
    from wremnants_dask.utils.provenance import make_metadata

    procs = args.processes or [args.signal_group, "Data"]
    datasets = load_datasets(args.dataset_config, filter_procs=procs)
    proc = TagAndProbeProcessor(config=config_path)
    t0 = time.perf_counter()
    result = engine.run(datasets, proc, step_size=args.step_size)
    print(f"histograms: {len(datasets)} datasets in {time.perf_counter() - t0:.1f} s")
    meta = make_metadata(
        {"analysis": "tnp", "config": config_path, "dataset_config": args.dataset_config},
        stage="tnp",
        analysis_metadata=proc.analysis_metadata(),
    )
    return histio.write_run(out, result, meta)


def make_refit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wremnants_dask.tnp refit",
        description="Refit one bin of an output folder with other settings; the tables, the "
        "fit summary and (if it was written) the payload are rewritten atomically.",
    )
    p.add_argument("outdir", help="output folder of python -m wremnants_dask.tnp")
    p.add_argument(
        "--bin",
        required=True,
        help="step,eta,pt,charge: the step name (or index) and the bin indices",
    )
    p.add_argument("--signal", choices=("template", "voigt", "cb"), default="template")
    p.add_argument("--background", choices=("exp", "linear"), default="exp")
    p.add_argument("--range", help="fit range lo,hi in GeV (on mass bin edges)")
    p.add_argument(
        "--method", default=None, help="measurement replaced (default: the nominal, fit)"
    )
    return p


def parse_bin(text: str, steps: list[str], shape: tuple[int, ...]) -> tuple[int, tuple]:
    """Flat index of 'step,eta,pt,charge' in the (step, pt, eta, charge) grid."""
    parts = [t.strip() for t in text.split(",")]
    if len(parts) != 4:
        raise SystemExit(f"--bin {text!r}: expected step,eta,pt,charge")
    step = steps.index(parts[0]) if parts[0] in steps else None
    try:
        if step is None:
            step = int(parts[0])
        eta, pt, charge = (int(x) for x in parts[1:])
    except ValueError:
        raise SystemExit(
            f"--bin {text!r}: step one of {steps} or an index, then integers"
        ) from None
    idx = (step, pt, eta, charge)
    if any(not 0 <= i < n for i, n in zip(idx, shape)):
        raise SystemExit(f"--bin {text!r}: outside the grid (step, pt, eta, charge) {shape}")
    return int(np.ravel_multi_index(idx, shape)), idx


def refit(argv: list[str]) -> Path:
    """Refit one bin of the data with other settings and rewrite the outputs."""
    args = make_refit_parser().parse_args(argv)
    from wremnants_dask.efficiency import output
    from wremnants_dask.efficiency.extract import (
        fit_measurement,
        flag_names,
        replace_bins,
        scale_factors,
    )
    from wremnants_dask.efficiency.spectra import read_spectra
    from wremnants_dask.processors.tnp_config import load_config

    outdir = Path(args.outdir)
    with h5py.File(outdir / "efficiencies.hdf5", "r") as f:
        attrs = {k: json.loads(v) for k, v in f.attrs.items() if k != "nominal"}
    if "histograms" not in attrs:
        raise SystemExit(f"{outdir}/efficiencies.hdf5: no 'histograms' attribute (rerun tnp)")
    cfg = load_config(attrs["config"])
    data = read_spectra(attrs["histograms"], data=True)
    mc = read_spectra(attrs["histograms"], data=False, signal_group=attrs["signal_group"])
    ex, attrs = output.read_extraction(outdir, cfg, data, mc)
    b, idx = parse_bin(args.bin, data.steps, data.shape)
    method = args.method or ex.nominal
    if method not in ex.results["data"] or ex.results["data"][method].fit is None:
        raise SystemExit(f"--method {method}: not a fit measurement of {outdir}")
    fit_range = tuple(float(x) for x in args.range.split(",")) if args.range else None
    tmpl = mc.passing + mc.failing
    new = fit_measurement(data, cfg, tmpl, args.signal, args.background, fit_range, rows=[b])
    old = ex.results["data"][method]
    print(
        f"bin {args.bin} ({data.steps[idx[0]]} pt#{idx[1]} eta#{idx[2]} charge#{idx[3]}): "
        f"was {old.eff[b]:.4f} +- {old.err[b]:.4f} flags {flag_names(int(old.flags[b]))}; "
        f"refit {new.eff[0]:.4f} +- {new.err[0]:.4f} flags {flag_names(int(new.flags[0]))}"
    )
    if new.flags[0]:
        print("refit flagged too: nothing written", file=sys.stderr)
        raise SystemExit(1)
    replace_bins(old, [b], new)
    ex.sf = scale_factors(ex.results, ex.nominal)
    attrs["refits"] = [
        *attrs.get("refits", []),
        {
            "bin": list(idx),
            "method": method,
            "signal": args.signal,
            "background": args.background,
            "fit_range": list(fit_range or cfg.fit_range),
            "eff": float(new.eff[0]),
            "err": float(new.err[0]),
        },
    ]
    sm_args = argparse.Namespace(
        smooth_degree=attrs.get("smooth_degree", -1), smooth_pt_min=attrs.get("smooth_pt_min", 0)
    )
    if sm_args.smooth_degree >= 0:
        from wremnants_dask.efficiency.smooth import smooth_all

        smooth = smooth_all(ex, sm_args.smooth_degree, sm_args.smooth_pt_min)
    else:
        smooth = None
    base = payload_base(attrs)
    # built before any file is replaced
    cset = None if base is None else output.build_measured_payload(ex, base, smooth)
    for p in output.write_tables(ex, outdir, attrs).values():
        print(f"wrote {p}")
    if smooth is not None:
        from wremnants_dask.efficiency.smooth import write_smooth

        print(f"wrote {write_smooth(smooth, outdir / 'smooth_sf.hdf5')}")
    if cset is not None:
        print(f"wrote {output.write_payload(cset, outdir)}")
    return outdir
