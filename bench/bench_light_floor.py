"""Light workload (no tensors) through N workers vs. N independent uproot readers.

    python -m bench.bench_light_floor [--workers 1 2 4 8 16] [--threads 1 2]
                                      [--analysis muon_kinematics] [--procs wplus_munu zmumu]
                                      [--scale 1] [--repeat 3] [--step-size 200000]
                                      [--compare-env]

Issue 17 ("Scale"): light workloads should reach >= 0.9x the *parallel* floor. On the default
synthetic samples (the project's dataset cache, ``load_datasets(None)``; generated on first
use, ``--scale`` multiplies their sizes) and for each N in ``--workers``, in the same run:

  floor:  N processes (multiprocessing, started and with their files opened before the clock)
          each reading with uproot, through the engine's own decompression setting, exactly
          the columns the engine traced for the workload, over its share of the engine's
          chunks (balanced by entries); wall time from the common start to the last reader
          finishing;
  engine: ``engine.execute`` of the same plan on a LocalCluster of N worker processes of T
          threads each (``--threads``, default 1) after ``engine.warm_up`` and one warm-up
          run; best of ``--repeat``. With T = 2 a worker reads one chunk while it processes
          another (decompression and numpy release the GIL): the floor has one process per
          worker, the engine may use threads inside it, so T = 2 needs 2N free cores.

N up to 16 (or more) needs a machine with that many free cores, and enough chunks to keep
N x T threads busy (``--scale``, ``--step-size``): the script says when there are fewer than
4 chunks per thread.

CPU seconds are printed beside wall times (readers: summed over processes; engine: the worker
processes' CPU time over the run, best of ``--repeat``): on a shared, loaded machine the CPU
ratio is the steadier figure, and with T = 1 it is about the wall ratio an idle machine with
N free cores would give.

``--compare-env`` also runs the engine on a cluster started without ``engine.WORKER_CONFIG``
(Dask's default worker environment). Besides the ratio engine/floor it prints where the
engine's wall time goes, from Dask's task stream: the chunk tasks (read + process; summed over
threads and divided by N x T), the merge tasks, the threads' idle time, and the rest (graph
optimisation and submission, scheduler round trips, fetching and converting the result); the
plan's build time is printed apart (not in the ratio).
"""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing as mp
import time
from typing import Any

from bench.bench_schedule import _stream_stats


def _shares(parts: list[tuple[str, list[str], int, int]], n: int) -> list[list]:
    """Split the chunks among ``n`` readers, largest first onto the least loaded one."""
    loads = [0] * n
    out: list[list] = [[] for _ in range(n)]
    for part in sorted(parts, key=lambda p: p[3] - p[2], reverse=True):
        i = loads.index(min(loads))
        out[i].append(part)
        loads[i] += part[3] - part[2]
    return out


def _reader(share: list, barrier: Any, queue: Any) -> None:
    import uproot

    from wremnants_dask.utils.fast_zlib import use_isal_decompression

    use_isal_decompression()  # the library the engine's reader uses
    trees = {path: uproot.open(path)["Events"] for path in {p for p, *_ in share}}
    barrier.wait()
    t0, c0 = time.time(), time.process_time()
    n = 0
    for path, columns, a, b in share:
        n += len(trees[path].arrays(columns, entry_start=a, entry_stop=b))
    queue.put((t0, time.time(), n, time.process_time() - c0))


def parallel_floor(
    parts: list[tuple[str, list[str], int, int]], n: int
) -> tuple[float, int, float]:
    """Seconds for ``n`` reader processes to read ``parts``, common start to last finish;
    events read; CPU seconds of the readers, summed."""
    ctx = mp.get_context("spawn")  # like the workers: a fresh interpreter, no shared state
    barrier, queue = ctx.Barrier(n + 1), ctx.Queue()
    procs = [ctx.Process(target=_reader, args=(s, barrier, queue)) for s in _shares(parts, n)]
    for p in procs:
        p.start()
    barrier.wait()
    got = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    wall = max(g[1] for g in got) - min(g[0] for g in got)
    return wall, sum(g[2] for g in got), sum(g[3] for g in got)


def _breakdown(ts: Any, t0: float, workers: int, total: float) -> dict[str, float]:
    chunk = merge = 0.0
    for task in ts.data:
        for s in task["startstops"]:
            if s["action"] == "compute":
                d = s["stop"] - s["start"]
                if "reduce" in str(task["key"]) or "merge" in str(task["key"]):
                    merge += d
                else:
                    chunk += d
    makespan, idle = _stream_stats(ts, t0, workers)
    return {
        "chunk": chunk / workers,
        "merge": merge / workers,
        "idle": idle / workers,
        "rest": total - makespan,
        "n_tasks": len(ts.data),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--threads", type=int, nargs="+", default=[1], help="threads per worker (engine)"
    )
    ap.add_argument("--analysis", default="muon_kinematics")
    ap.add_argument("--procs", nargs="+", default=["wplus_munu", "wminus_munu", "zmumu"])
    ap.add_argument("--scale", type=float, default=None, help="load_datasets(scale=...)")
    ap.add_argument("--step-size", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--compare-env",
        action="store_true",
        help="also run the engine with Dask's default worker environment",
    )
    args = ap.parse_args()

    from wremnants_dask import engine
    from wremnants_dask.inputs.datasets import load_datasets
    from wremnants_dask.processors.registry import get_processor

    datasets = load_datasets(None, filter_procs=args.procs, scale=args.scale)
    kw = {} if args.step_size is None else {"step_size": args.step_size}
    plan = engine.build_plan(datasets, get_processor(args.analysis, systematics=False), **kw)
    parts = [(path, p.columns, a, b) for p in plan.datasets.values() for path, a, b in p.parts]
    n_events = sum(b - a for *_, a, b in parts)
    print(
        f"{args.analysis} (systematics=False) on {', '.join(args.procs)}: {n_events} events, "
        f"{len({p for p, *_ in parts})} files, {len(parts)} chunks of "
        f"<= {plan.step_size}, {len(parts[0][1])} columns; plan built in "
        f"{plan.build_seconds:.2f} s"
    )
    envs = {"engine": engine.WORKER_CONFIG}
    if args.compare_env:
        envs = {"dask default env": {}, **envs}
    for n in args.workers:
        floors = [parallel_floor(parts, n) for _ in range(args.repeat)]
        t_floor = min(f[0] for f in floors)
        cpu_floor = min(f[2] for f in floors)
        print(
            f"N={n:2d}: floor {t_floor:6.3f} s {n_events / t_floor / 1e6:5.2f}M ev/s, "
            f"CPU {cpu_floor:6.3f} s",
            flush=True,
        )
        for threads in args.threads:
            if len(parts) < 4 * n * threads:
                print(
                    f"      note: {len(parts)} chunks for {n * threads} threads: raise --scale "
                    "or lower --step-size for a balanced run",
                    flush=True,
                )
            for label, cfg in envs.items():
                best, bd = _engine(plan, n, threads, args.repeat, cfg, n_events)
                print(
                    f"      {label + f' T={threads}':20s} {best:6.3f} s "
                    f"{n_events / best / 1e6:5.2f}M ev/s, {t_floor / best:4.2f}x floor; CPU "
                    f"{bd['cpu']:6.3f} s, {cpu_floor / bd['cpu']:4.2f}x floor's | per "
                    f"thread: chunks {bd['chunk']:.3f} s, merges {bd['merge']:.3f} s, idle "
                    f"{bd['idle']:.3f} s; outside tasks {bd['rest']:.3f} s "
                    f"({bd['n_tasks']} tasks)",
                    flush=True,
                )


def _engine(
    plan: Any, n: int, threads: int, repeat: int, cfg: dict, n_events: int
) -> tuple[float, dict]:
    """Best of ``repeat`` warm runs on a new LocalCluster of ``n`` workers x ``threads``
    started under ``cfg``."""
    import dask
    from distributed import Client, LocalCluster, get_task_stream

    from wremnants_dask import engine

    with (
        dask.config.set(cfg),
        LocalCluster(
            n_workers=n, threads_per_worker=threads, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        engine.warm_up(client, plan.processor, wait=True)
        engine.execute(plan, client)  # warm: files opened, kernels compiled on the workers
        best, best_bd, best_cpu = math.inf, {}, math.inf
        for _ in range(repeat):
            client.run(gc.collect)
            c0 = client.run(time.process_time)
            with get_task_stream(client) as ts:
                t0 = time.time()
                r = engine.execute(plan, client)
                t = time.time() - t0
            c1 = client.run(time.process_time)
            assert sum(d.n_events for d in r.datasets.values()) == n_events
            best_cpu = min(best_cpu, sum(c1[w] - c0[w] for w in c1))
            if t < best:
                best, best_bd = t, _breakdown(ts, t0, n * threads, t)
    return best, {**best_bd, "cpu": best_cpu}


if __name__ == "__main__":
    main()
