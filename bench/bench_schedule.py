"""Default job on a LocalCluster: graph-order submission vs. the engine's cost-ordered one.

    python bench/bench_schedule.py [--workers 2] [--rounds 4]

Both runs compute the same plan (the default synthetic datasets and analysis, cached) on the
same warm cluster, interleaved round by round because the machine is shared:

- "graph order": the whole graph in one ``client.get``, then ``client.gather`` and the
  conversion of every result to ``hist.Hist`` (what ``engine.execute`` did before);
- "engine": ``engine.execute``: datasets submitted largest chunks first with scheduler
  priorities, each result fetched and converted as its dataset completes.

Printed per round: time until the histograms are in hand, the makespan of the tasks, and the
workers' idle time within it (workers x makespan - busy time), from Dask's task stream.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _stream_stats(ts: object, t0: float, workers: int) -> tuple[float, float]:
    spans = [
        (s["start"] - t0, s["stop"] - t0)
        for task in ts.data  # type: ignore[attr-defined]
        for s in task["startstops"]
        if s["action"] == "compute"
    ]
    makespan = max(b for _, b in spans)
    busy = sum(b - a for a, b in spans)
    return makespan, workers * makespan - busy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()

    from distributed import Client, LocalCluster, get_task_stream

    from wremnants_dask import engine
    from wremnants_dask.inputs.datasets import load_datasets
    from wremnants_dask.processors.registry import DEFAULT_ANALYSIS, get_processor

    datasets = load_datasets(None)
    processor = get_processor(DEFAULT_ANALYSIS, systematics=True)
    rows: dict[str, list[tuple[float, float, float]]] = {"graph order": [], "engine": []}
    with (
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        engine.warm_up(client, processor, wait=True)
        engine.execute(engine.build_plan(datasets, processor, client=client), client)  # warm
        for rnd in range(args.rounds):
            for mode in ("graph order", "engine") if rnd % 2 == 0 else ("engine", "graph order"):
                plan = engine.build_plan(datasets, processor, client=client)
                with get_task_stream(client) as ts:
                    t0 = time.time()
                    if mode == "engine":
                        engine.execute(plan, client)
                    else:
                        graph = engine.optimize_graph(plan.graph, plan.keys)
                        results = client.gather(client.get(graph, plan.keys, sync=False))
                        [{k: h.to_hist() for k, h in r.hists.items()} for r in results]
                    total = time.time() - t0
                makespan, idle = _stream_stats(ts, t0, args.workers)
                rows[mode].append((total, makespan, idle))
                print(
                    f"round {rnd} {mode:11s}: histograms after {total:5.2f} s, tasks end at "
                    f"{makespan:5.2f} s, workers idle {idle:4.2f} s"
                )
                time.sleep(0.5)  # let the previous run's results be released
    med = {m: np.median(np.asarray(r), axis=0) for m, r in rows.items()}
    ratio = np.median([e[0] / g[0] for e, g in zip(rows["engine"], rows["graph order"])])
    for m, (total, makespan, idle) in med.items():
        print(
            f"median {m:11s}: {total:5.2f} s to histograms, makespan {makespan:5.2f} s, idle {idle:4.2f} s"
        )
    print(f"engine / graph order, time to histograms: {ratio:.2f}x (median of per-round ratios)")


if __name__ == "__main__":
    main()
