"""Command line for the synthetic NanoAOD generator.

    python -m wremnants_dask.generate --process wplus_munu -n 100000 -o DIR --seed 1 \
        [--n-files N] [--fillers] [--mw 80.379]
    python -m wremnants_dask.generate --pseudodata --lumi 10 -o DIR --seed 7
    python -m wremnants_dask.generate --all -o DIR      # every process + pseudo-data, small

Prints the events/s of each sample.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from wremnants_dask.synth import PROCESSES, SynthParams, generate_pseudodata, generate_sample


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wremnants_dask.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--process", choices=sorted(PROCESSES), help="simulated process")
    what.add_argument("--pseudodata", action="store_true", help="pseudo-data (all processes)")
    what.add_argument("--all", action="store_true", help="every process + pseudo-data")
    p.add_argument("-n", "--n-events", type=int, default=10_000, help="events per process")
    p.add_argument("-o", "--outdir", required=True, type=Path)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--n-files", type=int, default=1)
    p.add_argument("--fillers", action="store_true", help="add ~1400 filler branches")
    p.add_argument("--lumi", type=float, default=1.0, help="pseudo-data luminosity (/pb)")
    p.add_argument("--mw", type=float, default=None, help="simulation W mass (GeV)")
    p.add_argument("--data-mw", type=float, default=None, help="pseudo-data W mass (GeV)")
    p.add_argument("--chunk-size", type=int, default=50_000)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    params = SynthParams()
    if args.mw is not None:
        params = dataclasses.replace(params, mW=args.mw)
    if args.data_mw is not None:
        params = dataclasses.replace(params, data_mW=args.data_mw)
    common = {"seed": args.seed, "params": params, "n_files": args.n_files,
              "fillers": args.fillers, "chunk_size": args.chunk_size}  # fmt: skip
    procs = [args.process] if args.process else (list(PROCESSES) if args.all else [])
    for i, proc in enumerate(procs):
        outdir = args.outdir / proc if args.all else args.outdir
        t0 = time.perf_counter()
        files = generate_sample(proc, args.n_events, outdir, **{**common, "seed": args.seed + i})
        dt = time.perf_counter() - t0
        print(f"{proc}: {args.n_events} events in {len(files)} file(s), {dt:.1f} s, "
              f"{args.n_events / dt:.0f} events/s -> {outdir}")  # fmt: skip
    if args.pseudodata or args.all:
        outdir = args.outdir / "data" if args.all else args.outdir
        t0 = time.perf_counter()
        info = generate_pseudodata(outdir, lumi_pb=args.lumi, **common)
        dt = time.perf_counter() - t0
        n = sum(int(v["written"]) for v in info.processes.values())
        print(f"pseudodata: {args.lumi} /pb, {n} events in {len(info.files)} file(s), {dt:.1f} s, "
              f"{n / dt:.0f} events/s -> {outdir} (lumi.csv, golden.json)")  # fmt: skip
    return 0
