"""Running a plan: synchronously in this process, or on a ``distributed`` cluster with
datasets submitted largest chunks first and each result fetched as soon as it completes."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask
from dask.highlevelgraph import HighLevelGraph

from wremnants_dask.engine.plan import (
    DEFAULT_SPLIT_EVERY,
    DEFAULT_STEP_SIZE,
    Plan,
    build_plan,
)
from wremnants_dask.engine.processor import Processor
from wremnants_dask.engine.results import DatasetResult, RunResult, dataset_result

__all__ = ["WORKER_CONFIG", "execute", "optimize_graph", "run", "warm_up"]

# Dask config for clusters whose worker processes we start (``dask.config.set(WORKER_CONFIG)``
# around the cluster's lifetime). Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536;
# setting it stops glibc from raising its mmap threshold, so every array above 128 kB is a new
# mmap, faulted in page by page and unmapped when freed. A chunk of the light (no tensor)
# workload then took 2.1x as long (0.30 -> 0.63 s for 650k events in one process with the
# variable set). A fixed 64 MiB mmap threshold keeps such arrays on the reused heap (0.29 s),
# while the trim threshold still hands the heap's free top back to the system.
WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": str(64 << 20)}


def _load_on_worker(modules: Sequence[str]) -> None:
    import importlib

    from wremnants_dask.engine import select, tensorhist

    for m in modules:
        importlib.import_module(m)
    tensorhist.warm_kernels()
    select.warm()


async def _load_on_worker_async(modules: Sequence[str]) -> None:
    import asyncio

    await asyncio.get_running_loop().run_in_executor(None, _load_on_worker, modules)


def warm_up(client: Any, processor: Processor | None = None, *, wait: bool = False) -> None:
    """Import the engine and the processor's module and load the compiled kernels on every
    worker of ``client``.

    A fresh worker process spends seconds importing awkward/uproot/numba and the analysis on
    its first task; started right after the cluster (``wait=False``), this overlaps with
    building the graph instead of delaying the first chunks.
    """
    modules = ["wremnants_dask.inputs.reader", "wremnants_dask.engine.executor"]
    if processor is not None:
        modules.append(type(processor).__module__)
    if wait:
        client.run(_load_on_worker, modules)
    else:  # distributed runs only coroutines without waiting: import in a worker thread
        client.run(_load_on_worker_async, modules, wait=False)


def optimize_graph(graph: HighLevelGraph, keys: list[tuple]) -> HighLevelGraph:
    """Fuse the input and processing layers, so that reading + processing a chunk is one task."""
    from dask.blockwise import fuse_roots, optimize_blockwise

    graph = optimize_blockwise(graph, keys=keys)
    return fuse_roots(graph, keys=keys)


def execute(
    plan: Plan,
    client: Any = None,
    *,
    progress: bool = False,
    performance_report: str | os.PathLike | None = None,
    lumi: bool = True,
) -> RunResult:
    """Compute a plan with ``client`` (a ``distributed.Client``) or synchronously if None.

    With a client, each dataset is submitted with a priority from its estimated chunk cost
    (largest first: the cheap chunks fill the end of the run), and each dataset's result is
    fetched and converted to ``hist.Hist`` as soon as it is complete, while the others run.
    """
    t0 = time.perf_counter()
    # culled after fusing (the blockwise optimisation forgets a culled layer's blocks): a
    # resumed run's graph (``engine.checkpoint``) has chunks that no root needs
    graph = optimize_graph(plan.graph, plan.keys).cull(set(plan.keys))
    names = list(plan.datasets)
    if client is None:
        ctx = contextlib.nullcontext()
        if progress:
            from dask.diagnostics import ProgressBar

            ctx = ProgressBar()
        with ctx:
            results = dask.get(graph, plan.keys)
        out = {n: dataset_result(plan.datasets[n], r, lumi) for n, r in zip(names, results)}
    else:
        import distributed

        report: Any = contextlib.nullcontext()
        if performance_report:
            try:
                import bokeh  # noqa: F401  (Dask's performance report renders with bokeh)
            except ImportError:
                raise ImportError(
                    f"--performance-report {performance_report}: Dask needs bokeh>=3.1 for it "
                    "(pip install 'bokeh>=3.1')"
                ) from None
            report = distributed.performance_report(filename=str(performance_report))
        with report:
            futures = _submit_by_cost(client, graph, plan)
            with ThreadPoolExecutor(1) as pool:
                collected = pool.submit(_collect, futures, plan, lumi)
                try:
                    if progress:
                        distributed.progress(list(futures.values()), notebook=False)
                        print()
                    out = collected.result()
                except BaseException:
                    client.cancel(list(futures.values()))
                    raise
        out = {n: out[n] for n in names}
    seconds = time.perf_counter() - t0
    total_events = sum(r.n_events for r in out.values())
    info = {
        "processor": f"{type(plan.processor).__module__}:{type(plan.processor).__name__}",
        "systematics": getattr(plan.processor, "systematics", None),
        "step_size": plan.step_size,
        "split_every": plan.split_every,
        "graph_layers": len(plan.graph.layers),
        "graph_build_seconds": plan.build_seconds,
        "compute_seconds": seconds,
        "events": total_events,
        "events_per_second": total_events / seconds if seconds > 0 else None,
        "skipped_files": plan.skipped_files,
        "lost_chunks": [{"dataset": n, **c} for n, r in out.items() for c in r.lost],
        "events_lost": sum(r.n_events_lost for r in out.values()),
        "scheduler": None if client is None else str(client.scheduler.address),
    }
    return RunResult(out, info)


def _submit_by_cost(client: Any, graph: HighLevelGraph, plan: Plan) -> dict[str, Any]:
    """Submit each dataset's part of ``graph``; a larger estimated chunk gets a higher priority.

    Longest chunks first is the classic heuristic for finishing a set of jobs on a few
    machines early: submitted in graph order, one large chunk started last can run alone
    while the other workers idle. A dataset's reduction shares its priority, so its partial
    results are merged as they come rather than after every other dataset's chunks.
    """
    # Largest first also in submission: a free worker takes what arrives first, whatever
    # the priorities of what is submitted after.
    order = sorted(plan.datasets, key=lambda n: plan.datasets[n].chunk_cost, reverse=True)
    futures = {}
    for rank, name in enumerate(order):
        root = plan.datasets[name].root_key
        sub = graph.cull({root}) if len(order) > 1 else graph
        futures[name] = client.get(sub, [root], sync=False, priority=len(order) - rank)[0]
    return futures


def _collect(futures: dict[str, Any], plan: Plan, lumi: bool) -> dict[str, DatasetResult]:
    """Fetch each dataset's result as it completes and convert it (runs in a thread)."""
    import distributed

    name_of = {f.key: n for n, f in futures.items()}
    out = {}
    for fut, res in distributed.as_completed(list(futures.values()), with_results=True):
        name = name_of[fut.key]
        out[name] = dataset_result(plan.datasets[name], res, lumi)
    return out


def run(
    datasets: Sequence[Any],
    processor: Processor,
    client: Any = None,
    *,
    step_size: int = DEFAULT_STEP_SIZE,
    max_events: int | None = None,
    split_every: int = DEFAULT_SPLIT_EVERY,
    skip_bad_files: bool = False,
    progress: bool = False,
    performance_report: str | os.PathLike | None = None,
) -> RunResult:
    """Process ``datasets`` with ``processor``; the notebook entry point.

    ``client``: a ``distributed.Client`` (local or remote cluster) or None for synchronous
    single-process execution. Returns histograms (``hist.Hist``) and bookkeeping per dataset.
    """
    plan = build_plan(
        datasets,
        processor,
        step_size=step_size,
        max_events=max_events,
        split_every=split_every,
        skip_bad_files=skip_bad_files,
        client=client,
    )
    return execute(plan, client, progress=progress, performance_report=performance_report)
