"""Distributed execution: a LocalCluster and real `dask scheduler`/`dask worker` processes give
the same histograms as the synchronous run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from engine_helpers import copy_nano_subset, data, dy

from wremnants_dask import engine
from wremnants_dask.cli import histmaker
from wremnants_dask.engine import executor
from wremnants_dask.histograms.histio import HistFile
from wremnants_dask.inputs import files as input_files
from wremnants_dask.inputs import preprocess
from wremnants_dask.processors.muon_kinematics import MuonKinematicsProcessor


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    return [copy_nano_subset(d / f"f{i}.root") for i in range(3)]


@pytest.fixture(scope="module")
def sync_result(files):
    return engine.run([dy(files)], MuonKinematicsProcessor(), step_size=40)


def _same(a, b):
    for name in ("nominal", "pdf", "scale"):
        np.testing.assert_allclose(
            a.hists[name].view(flow=True).value, b.hists[name].view(flow=True).value, rtol=1e-12
        )
        np.testing.assert_allclose(
            a.hists[name].view(flow=True).variance,
            b.hists[name].view(flow=True).variance,
            rtol=1e-12,
        )
    assert a.cutflows["main"].counts == b.cutflows["main"].counts
    assert a.n_events == b.n_events and a.sumw_processed == pytest.approx(
        b.sumw_processed, rel=1e-12
    )


@pytest.mark.slow
def test_local_cluster_matches_sync(files, sync_result, tmp_path):
    n_workers, step_size = 2, 7  # 1 worker: see the real-scheduler test
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cl,
        Client(cl) as client,
    ):
        report = tmp_path / "report.html"
        r = engine.run(
            [dy(files)],
            MuonKinematicsProcessor(),
            client,
            step_size=step_size,
            split_every=3,
            performance_report=report,
        )
    _same(r["dy"], sync_result["dy"])
    assert report.stat().st_size > 1000


def _start(cmd, pattern, timeout=20.0):
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    t0, lines = time.time(), []
    while time.time() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(pattern, line)
        if m:
            return proc, m
    proc.kill()
    raise RuntimeError(f"{cmd[0:3]} did not start: {''.join(lines)}")


def _stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_real_scheduler_and_worker_processes(files, sync_result, tmp_path):
    dask_cli = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    sched, m = _start(
        [*dask_cli, "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0"],
        r"Scheduler at:\s+(tcp://127\.0\.0\.1:\d+)",
    )
    address = m.group(1)
    worker = None
    try:
        worker, _ = _start(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                address,
                "--nworkers",
                "1",
                "--nthreads",
                "1",
                "--no-dashboard",
            ],
            r"Starting established connection|Registered to",
        )
        from distributed import Client

        with Client(address, timeout=20) as client:
            client.wait_for_workers(1, timeout=20)
            r = engine.run([dy(files)], MuonKinematicsProcessor(), client, step_size=13)
        _same(r["dy"], sync_result["dy"])
        assert r.info["scheduler"] == address
        # the CLI against the same scheduler
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(
            "era: '2018'\nsamples:\n  - name: dy\n    group: Zmumu\n    xsec_pb: 2000.0\n"
            f"    files: [{', '.join(map(str, files))}]\n"
        )
        out = histmaker.main(
            [
                "--dataset-config",
                str(cfg),
                "--analysis",
                "muon_kinematics",
                "--scheduler",
                address,
                "-o",
                str(tmp_path),
                "--no-progress",
            ]
        )
        with HistFile(out) as f:
            h = f.get("dy", "pdf")
            np.testing.assert_allclose(
                h.view(flow=True).value,
                sync_result["dy"].hists["pdf"].view(flow=True).value,
                rtol=1e-12,
            )
            assert f.metadata["run"]["scheduler"] == address
    finally:
        if worker is not None:
            _stop(worker)
        _stop(sched)


@pytest.mark.slow
def test_many_files_are_inspected_on_the_workers(files, tmp_path):
    """Above preprocess._REMOTE_INSPECT_MIN files the workers inspect them: the same plan (entries,
    chunks, Runs sums, columns) as in one process, and the same named errors for bad files."""
    from distributed import Client, LocalCluster

    src = files[0]
    many = []
    for i in range(preprocess._REMOTE_INSPECT_MIN + 4):
        p = tmp_path / f"copy{i}.root"
        p.write_bytes(src.read_bytes())
        many.append(p)
    corrupt = tmp_path / "corrupt.root"
    corrupt.write_bytes(b"not a ROOT file")
    nophi = copy_nano_subset(tmp_path / "nophi.root", drop="Muon_phi")
    inputs = [*many, corrupt, nophi, tmp_path / "missing.root"]
    kwargs = dict(step_size=40, skip_bad_files=True)
    local = engine.build_plan([dy(inputs)], MuonKinematicsProcessor(), **kwargs)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cl,
        Client(cl) as client,
    ):
        input_files._FILE_CACHE.clear()  # the client process must not answer from its own cache
        remote = engine.build_plan([dy(inputs)], MuonKinematicsProcessor(), client=client, **kwargs)
        ran_on = client.run(lambda: len(input_files._FILE_CACHE))
    assert sum(ran_on.values()) >= preprocess._REMOTE_INSPECT_MIN  # the workers did inspect them
    a, b = local.datasets["dy"], remote.datasets["dy"]
    assert a.steps == b.steps and a.n_entries == b.n_entries and a.columns == b.columns
    assert a.gen_sums == b.gen_sums
    reasons = {s["file"].rsplit("/", 1)[-1]: s["reason"] for s in b.skipped}
    assert reasons == {s["file"].rsplit("/", 1)[-1]: s["reason"] for s in a.skipped}
    assert set(reasons) == {"corrupt.root", "nophi.root", "missing.root"}
    assert "Muon_phi" in reasons["nophi.root"]


@pytest.mark.slow
def test_datasets_with_larger_chunks_go_first(files):
    """The distributed run submits datasets by estimated chunk cost (compressed bytes of the
    columns read plus a per-event cost), largest first: the simulation (PDF and scale weights
    read) gets a higher scheduler priority than the data, which comes first in the list. The
    priorities are read on a scheduler without workers (nothing runs yet); the histograms,
    once a worker joins, are those of the synchronous run."""
    from distributed import Client, LocalCluster

    datasets = [data(), dy(files)]
    proc = MuonKinematicsProcessor()
    plan = engine.build_plan(datasets, proc, step_size=40)
    assert plan.datasets["dy"].chunk_cost > plan.datasets["data"].chunk_cost
    sync = engine.execute(plan, None)
    with (
        LocalCluster(n_workers=0, processes=True, dashboard_address=":0") as cl,
        Client(cl) as client,
    ):
        futures = executor._submit_by_cost(
            client, engine.optimize_graph(plan.graph, plan.keys), plan
        )
        deadline = time.monotonic() + 30
        priorities: dict[str, list] = {}
        while time.monotonic() < deadline and sum(map(len, priorities.values())) < 4:
            time.sleep(0.1)
            found = client.run_on_scheduler(
                lambda dask_scheduler: [
                    (str(k), ts.priority) for k, ts in dask_scheduler.tasks.items()
                ]
            )
            priorities = {d: [p for k, p in found if f"process-{d}-" in k] for d in ("dy", "data")}
        assert len(priorities["dy"]) == 3 and len(priorities["data"]) == 1
        assert max(priorities["dy"]) < min(priorities["data"])  # lower tuple: scheduled first
        cl.scale(1)
        result = engine.execute(plan, client)
        del futures
    _same(result["dy"], sync["dy"])
    assert result["data"].n_events == sync["data"].n_events
