"""Throughput of the W-mass analysis: all variation tensors vs nominal only, in the same run.

    python bench/bench_mw_tensors.py [--events 200000] [--repeat 2] [--outdir DIR] [--json OUT]

Generates a W+ -> mu nu sample (cached in --outdir), then runs ``mw`` through the engine
(synchronous scheduler, one process) with ``systematics=False`` and ``systematics=True``,
alternating, and reports the best wall time and events/s of each plus the cost ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from wremnants_dask import engine
from wremnants_dask.inputs.datasets import Dataset
from wremnants_dask.processors.registry import get_processor
from wremnants_dask.synth import PROCESSES, generate_sample


def sample(outdir: Path, n_events: int) -> Dataset:
    files = sorted(outdir.glob("wplus_munu_*.root"))
    if not files:
        files = generate_sample("wplus_munu", n_events, outdir, seed=99, n_files=2)
    return Dataset(
        "wplus_munu",
        "Wmunu",
        tuple(map(str, files)),
        False,
        PROCESSES["wplus_munu"].xsec_pb,
        "2018",
    )


def time_run(ds: Dataset, systematics: bool) -> tuple[float, int, int]:
    proc = get_processor("mw", systematics=systematics)
    t0 = time.perf_counter()
    res = engine.run([ds], proc)
    dt = time.perf_counter() - t0
    r = res[ds.name]
    cells = sum(h.values(flow=True).size for h in r.hists.values())
    return dt, r.n_events, cells


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--outdir", default=None, help="sample cache folder (default: a temp dir)")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    outdir = Path(args.outdir or tempfile.mkdtemp(prefix="bench_mw_"))
    outdir.mkdir(parents=True, exist_ok=True)
    ds = sample(outdir, args.events)
    time_run(ds, False)  # warm caches (file metadata, payload, imports)
    best = {False: float("inf"), True: float("inf")}
    info = {}
    for _ in range(args.repeat):
        for syst in (False, True):
            dt, n, cells = time_run(ds, syst)
            best[syst] = min(best[syst], dt)
            info[syst] = (n, cells)
    n = info[True][0]
    result = {
        "events": n,
        "nominal_only": {
            "seconds": best[False],
            "events_per_s": n / best[False],
            "cells": info[False][1],
        },
        "all_tensors": {
            "seconds": best[True],
            "events_per_s": n / best[True],
            "cells": info[True][1],
        },
        "cost_ratio": best[True] / best[False],
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
