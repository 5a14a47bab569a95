"""Graph construction time for many files (target: < 10 s for 500 files).

    python bench/bench_graph.py [--files 500] [--small-files 500]

Case 1: 500 references to the real NanoAOD file (~1500 branches; each file is opened once).
Case 2: 500 distinct small files written here with uproot.
Case 3: the same 500 files with a 2-worker LocalCluster client: the workers inspect the files
(as the histmaker does with its cluster); the cluster is started and warmed up untimed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import NANOAOD_DY
from engine_helpers import copy_nano_subset, dy

from wremnants_dask import engine
from wremnants_dask.processors.muon_kinematics import MuonKinematicsProcessor


def _time(files: list, label: str, client=None) -> None:
    files._FILE_CACHE.clear()
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
    args = ap.parse_args()
    _time([NANOAOD_DY] * args.files, "same NanoAOD file")
    with tempfile.TemporaryDirectory() as d:
        src = copy_nano_subset(Path(d) / "f0.root")
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
