"""Throughput of the W-mass-like workload vs. the I/O floor measured in the same run.

    python bench/bench_histmaker.py [--events 1000000] [--files 2] [--fillers 900]
                                    [--step-size 250000] [--workers 2] [--outdir DIR]

Writes NanoAOD-like files with uproot (Muon_*, MET_*, HLT_IsoMu24, genWeight, LHEPdfWeight[103],
LHEScaleWeight[9] plus ``--fillers`` unused float branches), then for the nominal workload
(``systematics=False``) and with the PDF/scale tensors (``systematics=True``) measures:
  floor:  uproot reading exactly the branches the engine reads, no processing, one process;
  sync:   the engine in one process (no scheduler);
  dist:   the engine through a ``--workers``-process distributed LocalCluster, after
          ``engine.warm_up`` (worker imports and kernel loading; its time is printed, and the
          histmaker overlaps it with building the graph).
``--repeat N`` takes the best of N runs of each (the machine may be shared).
"""

from __future__ import annotations

import argparse
import gc
import math
import tempfile
import time
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from wremnants_dask import engine
from wremnants_dask.inputs.datasets import Dataset
from wremnants_dask.processors.muon_kinematics import MuonKinematicsProcessor


def write_file(path: Path, n: int, fillers: int, seed: int, chunk: int = 200_000) -> None:
    rng = np.random.default_rng(seed)
    with uproot.recreate(path, compression=uproot.ZLIB(1)) as f:
        tree = None
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            nmu = rng.poisson(1.3, m)
            tot = int(nmu.sum())
            muon = ak.zip(
                {
                    "pt": ak.unflatten(rng.exponential(20, tot).astype(np.float32) + 10, nmu),
                    "eta": ak.unflatten(rng.uniform(-2.5, 2.5, tot).astype(np.float32), nmu),
                    "phi": ak.unflatten(rng.uniform(-np.pi, np.pi, tot).astype(np.float32), nmu),
                    "charge": ak.unflatten(rng.choice(np.array([-1, 1], np.int32), tot), nmu),
                    "mediumId": ak.unflatten(rng.random(tot) < 0.9, nmu),
                    "pfRelIso04_all": ak.unflatten(
                        rng.exponential(0.1, tot).astype(np.float32), nmu
                    ),
                }
            )
            branches = {
                "Muon": muon,
                "MET_pt": rng.exponential(30, m).astype(np.float32),
                "MET_phi": rng.uniform(-np.pi, np.pi, m).astype(np.float32),
                "HLT_IsoMu24": rng.random(m) < 0.8,
                "genWeight": rng.normal(1000, 50, m).astype(np.float32),
                "LHEPdfWeight": ak.unflatten(
                    rng.normal(1, 0.02, m * 103).astype(np.float32), np.full(m, 103)
                ),
                "LHEScaleWeight": ak.unflatten(
                    rng.normal(1, 0.1, m * 9).astype(np.float32), np.full(m, 9)
                ),
            }
            for i in range(fillers):
                branches[f"Filler_x{i}"] = rng.random(m).astype(np.float32)
            if tree is None:
                tree = f.mktree(
                    "Events",
                    {
                        k: (v.type if isinstance(v, ak.Array) else v.dtype)
                        for k, v in branches.items()
                    },
                    field_name=lambda o, i: i if o == "" else f"{o}_{i}",
                )
            tree.extend(branches)
        f["Runs"] = {
            "genEventSumw": np.array([1000.0 * n]),
            "genEventSumw2": np.array([1e6 * n]),
            "genEventCount": np.array([n], np.int64),
        }


def floor(plan: engine.Plan) -> float:
    """Seconds for uproot to read the engine's columns over the same steps, one process.

    The files are opened before the clock starts (the strictest floor: the engine has to
    open each file at least once per worker).
    """
    parts = [(p, path, steps) for p in plan.datasets.values() for path, steps in p.steps.items()]
    handles = [uproot.open(path) for _, path, _ in parts]
    trees = [fh[p.dataset.treename] for fh, (p, _, _) in zip(handles, parts)]
    t0 = time.perf_counter()
    for tree, (p, _, steps) in zip(trees, parts):
        for a, b in steps:
            tree.arrays(p.columns, entry_start=a, entry_stop=b)
    t = time.perf_counter() - t0
    for fh in handles:
        fh.close()
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000, help="events per file")
    ap.add_argument("--files", type=int, default=2)
    ap.add_argument("--fillers", type=int, default=900)
    ap.add_argument("--step-size", type=int, default=250_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--outdir", default=None, help="keep/reuse the files here")
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs of each measurement")
    ap.add_argument("--only", choices=("nominal", "pdf"), default=None)
    args = ap.parse_args()
    outdir = Path(args.outdir or tempfile.mkdtemp(prefix="bench_histmaker_"))
    outdir.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(args.files):
        p = outdir / f"bench_{args.events}_{args.fillers}_{i}.root"
        if not p.exists():
            t0 = time.perf_counter()
            write_file(p, args.events, args.fillers, seed=i)
            print(
                f"wrote {p} ({p.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s"
            )
        files.append(str(p))
    ds = Dataset("bench", "Wmunu", tuple(files), False, 1000.0, "2018")
    n_total = args.events * args.files
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cl,
        Client(cl) as client,
    ):
        t0 = time.perf_counter()
        engine.warm_up(client, MuonKinematicsProcessor(), wait=True)
        print(f"worker warm-up (imports, kernels): {time.perf_counter() - t0:.2f} s")
        modes = {"nominal": (False,), "pdf": (True,), None: (False, True)}[args.only]
        for syst in modes:
            t_floor, t_sync, t_dist = (math.inf,) * 3
            alive = []  # distinct processors -> distinct graph keys: no result reuse
            files._OPEN_TREES.clear()  # sync: the first run opens the files like a worker
            for rep in range(args.repeat):
                proc = MuonKinematicsProcessor(systematics=syst, n_pdf=103, n_scale=9)
                plan = engine.build_plan([ds], proc, step_size=args.step_size)
                alive.append(proc)
                t_floor = min(t_floor, floor(plan))
                t0 = time.perf_counter()
                engine.execute(plan, None)
                t_sync = min(t_sync, time.perf_counter() - t0)
                t0 = time.perf_counter()
                r = engine.execute(plan, client)
                t_dist = min(t_dist, time.perf_counter() - t0)
                if rep == 0:
                    first = (time.perf_counter() - t0, t_sync)
                client.run(gc.collect)
            assert r["bench"].n_events == n_total
            label = "with PDF(103)+scale(9) tensors" if syst else "nominal"
            print(
                f"[{label}] {n_total} events, {len(plan.datasets['bench'].columns)} branches read, "
                f"graph built in {plan.build_seconds:.2f} s"
            )
            print(
                f"  first run (files opened in the timed run): sync {first[1]:.2f} s, "
                f"{args.workers}-worker {first[0]:.2f} s"
            )
            for name, t in (
                ("floor (uproot)", t_floor),
                ("engine sync", t_sync),
                (f"engine {args.workers}-worker LocalCluster", t_dist),
            ):
                print(
                    f"  {name:32s} {t:7.2f} s  {n_total / t:10.0f} ev/s  {t_floor / t:5.2f} x floor"
                )


if __name__ == "__main__":
    main()
