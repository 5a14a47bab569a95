"""Worker memory across repeated runs on the same workers (issue 17, item 7).

    python -m bench.bench_worker_memory [--files 20] [--events 2000] [--runs 12] [--outdir DIR]

One worker process (LocalCluster, 1 thread) runs the same small job ``--runs`` times, each with
a new processor object as a notebook user would; after each run the worker's resident memory
(after ``gc.collect``) and the sizes of the engine's per-process caches are printed. Growth per
run is measured over the second half of the runs (the first fill the bounded caches).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from bench.bench_histmaker import write_file
from wremnants_dask import engine
from wremnants_dask.inputs.datasets import Dataset
from wremnants_dask.processors.muon_kinematics import MuonKinematicsProcessor


def worker_state(dask_worker: Any = None) -> dict[str, Any]:
    """On a worker: RSS after a collection, and the sizes of the caches that could grow."""
    import gc

    import psutil

    from wremnants_dask.inputs import files

    gc.collect()
    w = dask_worker  # given by Client.run
    return {
        "rss": psutil.Process().memory_info().rss,
        "fds": psutil.Process().num_fds(),
        "open_trees": len(files._OPEN_TREES),
        "file_infos": len(files._FILE_CACHE),
        "worker_tasks": len(w.state.tasks),
        "worker_data": len(w.data),
    }


def repeated_runs(client: Any, ds: Dataset, runs: int, step_size: int) -> list[dict[str, Any]]:
    """Run the job ``runs`` times; the worker state before the first and after each run (one
    dict per worker)."""
    out = [client.run(worker_state)]  # before the first run
    for _ in range(runs):
        engine.run([ds], MuonKinematicsProcessor(systematics=False), client, step_size=step_size)
        out.append(client.run(worker_state))
    return out


def growth_per_run(rss: list[float]) -> float:
    """Bytes per run over the second half of the runs (least squares slope)."""
    import numpy as np

    half = rss[len(rss) // 2 :]
    if len(half) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(half)), half, 1)[0])


def make_files(folder: Path, n: int, events: int) -> list[str]:
    files = []
    for i in range(n):
        p = folder / f"mem_{events}_{i}.root"
        if not p.exists():
            write_file(p, events, 0, seed=i)
        files.append(str(p))
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--events", type=int, default=2000, help="events per file")
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--outdir", default=None)
    args = ap.parse_args()
    outdir = Path(args.outdir or tempfile.mkdtemp(prefix="bench_workermem_"))
    outdir.mkdir(parents=True, exist_ok=True)
    ds = Dataset("bench", "Wmunu", tuple(make_files(outdir, args.files, args.events)), False,
                 1000.0, "2018")  # fmt: skip
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        engine.warm_up(client, MuonKinematicsProcessor(), wait=True)
        states = repeated_runs(client, ds, args.runs, max(1, args.events // 2))
    rss = []
    for i, st in enumerate(states):
        (s,) = st.values()
        rss.append(s["rss"])
        print(f"run {i:3d}: RSS {s['rss'] / 1e6:8.1f} MB  " + "  ".join(
            f"{k} {v}" for k, v in s.items() if k != "rss"))  # fmt: skip
    g = growth_per_run(rss[1:])
    print(
        f"growth over the second half: {g / 1e6:.3f} MB per run "
        f"({g / 1e3 / args.files:.1f} kB per file per run, {args.files} files)"
    )


if __name__ == "__main__":
    main()
