"""Worker memory across repeated runs on the same workers (issue 17, item 7).

Measured with ``python -m bench.bench_worker_memory``: a worker grew ~1-1.7 MB per run with
distributed's default settings, and the growth stops once distributed's own bounded logs
(``distributed.admin.log-length`` 10000 and ``low-level-log-length`` 1000 entries: stimuli,
transitions) are full; with them set to 20 it falls to ~0.15 MB per run and then to noise. The
engine's per-process caches (open trees, file inspections) stay at their bounds. So it is not a
leak of the engine. This test runs the same job repeatedly on one worker with the logs capped
and checks that the growth per run in the second half is a small fraction of what the first
run added (open trees, imports' first use); a processor that keeps 1 MB per chunk, like a cache
keyed by file that is never bounded, is shown to fail the same check."""

from __future__ import annotations

import dask
import pytest

from bench.bench_worker_memory import make_files
from wremnants_dask.inputs.datasets import Dataset

N_FILES, EVENTS, RUNS = 6, 2000, 6
# A leak keeps memory per run; distributed's capped logs and allocator noise do not. The bound
# is relative to the first run's own footprint (~9 MB: open trees, first-use allocations).
MAX_GROWTH_FRACTION = 0.25


def _growth(tmp_path_factory, processor_cls) -> tuple[float, float, list[float]]:
    from distributed import Client, LocalCluster

    from wremnants_dask import engine

    files = make_files(tmp_path_factory.getbasetemp() / "workermem", N_FILES, EVENTS)
    ds = Dataset("mem", "Wmunu", tuple(files), False, 1000.0, "2018")
    with (
        dask.config.set(
            {"distributed.admin.log-length": 20, "distributed.admin.low-level-log-length": 20}
        ),
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        engine.warm_up(client, processor_cls(), wait=True)
        states = []
        states.append(client.run(_rss))
        for _ in range(RUNS):
            engine.run([ds], processor_cls(systematics=False), client, step_size=EVENTS)
            states.append(client.run(_rss))
    rss = [next(iter(s.values())) for s in states]
    first = rss[1] - rss[0]
    half = RUNS // 2
    per_run = (rss[-1] - rss[half]) / (RUNS - half)
    return first, per_run, rss


def _rss() -> int:
    import gc

    import psutil

    gc.collect()
    return psutil.Process().memory_info().rss


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    (tmp_path_factory.getbasetemp() / "workermem").mkdir(exist_ok=True)
    return tmp_path_factory


@pytest.mark.parametrize("leaky", [False, True], ids=["engine", "injected-leak"])
def test_worker_memory_does_not_grow_per_run(base, leaky):
    if leaky:
        from memory_processors import LeakyMuonKinematics as cls
    else:
        from wremnants_dask.processors.muon_kinematics import MuonKinematicsProcessor as cls
    first, per_run, rss = _growth(base, cls)
    mb = [round(r / 1e6, 1) for r in rss]
    ok = per_run < MAX_GROWTH_FRACTION * max(first, 1e6)
    print(f"first {first / 1e6:.2f} MB, per run {per_run / 1e6:.2f} MB, RSS {mb}")
    assert ok != leaky, (
        f"growth {per_run / 1e6:.2f} MB per run vs first run {first / 1e6:.2f} MB; RSS {mb}"
    )
