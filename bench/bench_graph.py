"""Graph construction time for many files (target: < 10 s for 500 files).

    python -m bench.bench_graph [--files 500] [--small-files 500] [--nano PATH]

Case 1: 500 references to the real NanoAOD file (``--nano``, default the DY file of
``../shared``; ~1500 branches; each file is opened once).
Case 2: 500 distinct small files: one NanoAOD-like file written here with uproot
(``bench.bench_histmaker.write_file``), copied.
Case 3: the same 500 files with a 2-worker LocalCluster client: the workers inspect the files
(as the histmaker does with its cluster); the cluster is started and warmed up untimed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.bench_histmaker import write_file
from wremnants_dask import engine
from wremnants_dask.inputs import files as input_files
from wremnants_dask.inputs.datasets import Dataset
from wremnants_dask.processors.muon_kinematics import MuonKinematicsProcessor

SHARED = Path(os.environ.get("WREMNANTS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
NANOAOD_DY = SHARED / "data" / "nanoaod" / "nano_dy.root"


def dy(files: list) -> Dataset:
    return Dataset("dy", "Zmumu", tuple(str(f) for f in files), False, 2000.0, "2018")


def _time(files: list, label: str, client=None) -> None:
    input_files._FILE_CACHE.clear()
    t0 = time.perf_counter()
    plan = engine.build_plan([dy(files)], MuonKinematicsProcessor(), step_size=10, client=client)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    g = engine.optimize_graph(plan.graph, plan.keys)
    n_tasks = len(dict(g))
    t_opt = time.perf_counter() - t0
    print(
        f"{label}: {len(files)} files, {sum(len(s) for s in plan.datasets['dy'].steps.values())} chunks: "
        f"build {t_build:.2f} s, optimise+materialise {t_opt:.2f} s ({n_tasks} tasks, "
        f"{len(plan.graph.layers)} layers)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--small-files", type=int, default=500)
    ap.add_argument("--nano", type=Path, default=NANOAOD_DY, help="a NanoAOD file")
    args = ap.parse_args()
    _time([args.nano] * args.files, "same NanoAOD file")
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "f0.root"
        write_file(src, 400, fillers=0, seed=1)
        files = [src]
        for i in range(1, args.small_files):
            p = Path(d) / f"f{i}.root"
            p.write_bytes(src.read_bytes())
            files.append(p)
        _time(files, "distinct small files")
        from distributed import Client, LocalCluster

        with (
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cl,
            Client(cl) as client,
        ):
            engine.warm_up(client, MuonKinematicsProcessor(), wait=True)
            _time(files, "distinct small files, inspected on 2 workers", client)


if __name__ == "__main__":
    main()
