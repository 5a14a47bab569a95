"""``python -m wremnants_dask.tnp``: tag-and-probe histograms, efficiency fits and outputs.

Runs the ``tnp`` processor on the datasets (or reads an existing histogram file with
``--histograms``), extracts efficiencies of data and simulation by counting and by the batched
template fit, and writes into ``--outdir``: ``tnp.hdf5`` (histograms), ``efficiencies.csv`` and
``efficiencies.hdf5`` (tables), ``fit_summary.json`` (flagged bins and why) and, with
``--truth``, the correctionlib payload ``wremnants_corrections.json.gz`` whose muon scale factors
and MC efficiencies are the measured ones (the W-mass processor reads it with
``corrections=<path>``; the default chain keeps the truth-derived payload).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wremnants_dask.tnp", description=__doc__)
    p.add_argument("--dataset-config", help="dataset YAML (Z -> mu mu simulation and data)")
    p.add_argument("--histograms", help="use this tnp histogram file instead of running")
    p.add_argument("--config", help="tag-and-probe YAML (default: configs/tnp.yaml)")
    p.add_argument("-o", "--outdir", required=True, help="output folder")
    p.add_argument("--signal-group", default="Zmumu", help="simulation group of the templates")
    p.add_argument("--nominal", choices=("fit", "count"), default="fit", help="SF method")
    p.add_argument("--truth", help="truth.json: also write the measured correctionlib payload")
    p.add_argument("--step-size", type=int, default=200_000)
    return p


def main(argv: list[str] | None = None) -> Path:
    args = make_parser().parse_args(argv)
    from wremnants_dask.efficiency import output
    from wremnants_dask.efficiency.extract import extract
    from wremnants_dask.efficiency.spectra import read_spectra
    from wremnants_dask.processors.tnp_config import load_config

    cfg = load_config(args.config)
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
        f"extraction: {data.n_bins} bins x 2 samples x 2 methods in {time.perf_counter() - t0:.1f} s"
    )
    for key, s in ex.summary().items():
        print(f"  {key}: {s['flagged']} of {s['bins']} bins flagged")
        for b in s["flagged_bins"][:5]:
            print(f"    {b['step']} pt#{b['pt_bin']} eta#{b['eta_bin']}: {', '.join(b['reasons'])}")
    paths = output.write_tables(ex, outdir)
    for p in paths.values():
        print(f"wrote {p}")
    if args.truth:
        truth = json.loads(Path(args.truth).read_text())
        try:
            cset = output.build_measured_payload(ex, truth)
        except ValueError as err:
            print(f"no payload written: {err}", file=sys.stderr)
            raise SystemExit(1) from None
        print(f"wrote {output.write_payload(cset, outdir)}")
    return outdir


def run_histograms(args: argparse.Namespace, config_path: str, out: Path) -> Path:
    """The tnp processor over the datasets (synchronously), written like the histmaker's."""
    from wremnants_dask import engine
    from wremnants_dask.histograms import histio
    from wremnants_dask.inputs.datasets import load_datasets
    from wremnants_dask.processors.tnp import TagAndProbeProcessor
    from wremnants_dask.utils.provenance import make_metadata

    datasets = load_datasets(args.dataset_config)
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
