"""Overhead of an external Dask scheduler vs. the local cluster, same input, same workers.

    python -m bench.bench_external_scheduler [--events 500000] [--files 2] [--fillers 0]
                                             [--step-size 100000] [--workers 2] [--repeat 3]
                                             [--systematics] [--outdir DIR]

local:    ``distributed.LocalCluster`` (``--workers`` processes x 1 thread), what the histmaker
          starts by default;
external: ``dask scheduler`` and ``dask worker --nworkers W --nthreads 1`` started as separate
          processes on 127.0.0.1, the client connecting through a scheduler file (what
          ``--scheduler tcp://...`` does).
For each: the time to start the cluster and warm the workers (``engine.warm_up``), and the
best of ``--repeat`` runs of the same plan (distinct processor objects, so nothing is reused
between runs). The two are measured one after the other in the same process; the ratio
external / local is the overhead of talking to schedulers and workers over TCP instead of
through a cluster the client process owns.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.bench_histmaker import write_file
from wremnants_dask import engine
from wremnants_dask.inputs.datasets import Dataset
from wremnants_dask.processors.muon_kinematics import MuonKinematicsProcessor


@contextlib.contextmanager
def local_client(workers: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@contextlib.contextmanager
def external_client(workers: int, folder: Path) -> Iterator[Any]:
    """``dask scheduler`` + ``dask worker`` processes on 127.0.0.1 (stopped on exit)."""
    from distributed import Client

    dask_cli = shutil.which("dask") or str(Path(sys.executable).parent / "dask")
    sched_file = folder / "scheduler.json"
    sched_file.unlink(missing_ok=True)
    logs = [open(folder / "scheduler.log", "w"), open(folder / "workers.log", "w")]
    procs = [
        subprocess.Popen(
            [
                dask_cli,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                ":0",
                "--scheduler-file",
                str(sched_file),
            ],
            stdout=logs[0],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    ]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() or not sched_file.read_text().strip():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError(f"dask scheduler did not start (see {folder}/scheduler.log)")
            time.sleep(0.05)
        procs.append(
            subprocess.Popen(
                [
                    dask_cli,
                    "worker",
                    "--scheduler-file",
                    str(sched_file),
                    "--nworkers",
                    str(workers),
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                ],
                stdout=logs[1],
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        )
        with Client(scheduler_file=str(sched_file), timeout=30) as client:
            client.wait_for_workers(workers, timeout=120)
            yield client
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for f in logs:
            f.close()


def measure(make_client: Any, ds: Dataset, args: argparse.Namespace) -> dict[str, float]:
    t0 = time.perf_counter()
    with make_client() as client:
        engine.warm_up(client, MuonKinematicsProcessor(), wait=True)
        start = time.perf_counter() - t0
        best, events = math.inf, 0
        keep = []  # distinct processors -> distinct graph keys: no result reuse
        for _ in range(args.repeat):
            proc = MuonKinematicsProcessor(systematics=args.systematics, n_pdf=103, n_scale=9)
            keep.append(proc)
            plan = engine.build_plan([ds], proc, step_size=args.step_size)
            t1 = time.perf_counter()
            r = engine.execute(plan, client)
            best = min(best, time.perf_counter() - t1)
            events = r["bench"].n_events
    return {"startup_s": start, "run_s": best, "events": events}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=500_000, help="events per file")
    ap.add_argument("--files", type=int, default=2)
    ap.add_argument("--fillers", type=int, default=0)
    ap.add_argument("--step-size", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--systematics", action="store_true", help="with the PDF/scale tensors")
    ap.add_argument("--outdir", default=None, help="keep/reuse the input files here")
    args = ap.parse_args()
    outdir = Path(args.outdir or tempfile.mkdtemp(prefix="bench_extsched_"))
    outdir.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(args.files):
        p = outdir / f"bench_{args.events}_{args.fillers}_{i}.root"
        if not p.exists():
            write_file(p, args.events, args.fillers, seed=i)
        files.append(str(p))
    ds = Dataset("bench", "Wmunu", tuple(files), False, 1000.0, "2018")
    local = measure(lambda: local_client(args.workers), ds, args)
    external = measure(lambda: external_client(args.workers, outdir), ds, args)
    assert local["events"] == external["events"] == args.events * args.files
    n = local["events"]
    print(
        f"{n} events, {args.files} files, step {args.step_size}, {args.workers} workers x 1 "
        f"thread, {'PDF+scale tensors' if args.systematics else 'nominal'}, best of {args.repeat}"
    )
    for name, m in (("local cluster", local), ("external scheduler", external)):
        print(
            f"  {name:20s} start+warm-up {m['startup_s']:6.2f} s   run {m['run_s']:6.2f} s "
            f"({n / m['run_s']:9.0f} ev/s)"
        )
    ratio = external["run_s"] / local["run_s"]
    print(f"  run time external / local: {ratio:.3f}")
    print(json.dumps({"local": local, "external": external, "ratio_run": ratio}))


if __name__ == "__main__":
    main()
