"""Running on clusters (issue 17): batch job scripts from the example configs (dask-jobqueue,
no batch system needed), adaptive local workers, the wait for workers, a small memory limit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import copy_nano_subset, dy

from wremnants_dask import engine
from wremnants_dask.cli import histmaker
from wremnants_dask.cli.cluster import ClusterError, job_script, load_cluster_config
from wremnants_dask.histograms.histio import HistFile
from wremnants_dask.processors.muon_kinematics import MuonKinematicsProcessor

REPO = Path(__file__).resolve().parent.parent
pytest.importorskip("dask_jobqueue", reason="dask-jobqueue not installed (extra 'cluster')")


# ----------------------------------------------------------------------------- job scripts
@pytest.mark.parametrize(
    "kind,expected",
    [
        # 16 GB over 4 worker processes: 4e9 bytes = 3.73 GiB each
        ("slurm", ["#SBATCH --cpus-per-task=4", "#SBATCH -p short", "--nworkers 4", "3.73GiB"]),
        # one 4 GB worker per job
        ("htcondor", ["MY.DaskWorkerMemory = 4000000000", "--memory-limit 3.73GiB"]),
        # 32 GB over 4 processes: 8e9 bytes = 7.45 GiB; 8 cores = 2 threads per worker
        ("pbs", ["#PBS -q workq", "ncpus=8", "--nworkers 4", "--nthreads 2", "7.45GiB"]),
    ],
)
def test_example_configs_give_job_scripts(kind, expected):
    cfg = load_cluster_config(REPO / "configs" / f"cluster_{kind}.yaml")
    script = job_script(cfg, "tcp://10.0.0.1:8786")
    assert "distributed.cli.dask_worker tcp://10.0.0.1:8786" in script
    for text in expected:
        assert text in script, (text, script)


def test_slurm_example_script_prints_its_job_script():
    env = {**os.environ, "PYTHON": sys.executable}
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "histmaker_on_slurm.sh"), "--cluster-job-script"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert "#SBATCH --mem=15G" in run.stdout and "--memory-limit 3.73GiB" in run.stdout


@pytest.mark.parametrize(
    "text,key",
    [
        ("kind: lsf\njobs: 1\n", "kind"),
        (
            "kind: slurm\njobs: 1\nadaptive: {maximum: 2}\njob: {cores: 1, memory: 1GB}\n",
            "adaptive",
        ),
        ("kind: slurm\njobs: 0\njob: {cores: 1, memory: 1GB}\n", "jobs"),
        ("kind: slurm\njobs: 1\njob: {cores: 1}\n", "job"),
        ("kind: pbs\njobs: 1\njob: {cores: 1, memory: 1GB, colour: red}\n", "job"),
        ("kind: local\nadaptive: {minimum: 3, maximum: 2}\n", "adaptive"),
        ("kind: local\njobs: 1\nwait_workers: -5\n", "wait_workers"),
        ("kind: local\njobs: 1\njbos: 2\n", "jbos"),
    ],
)
def test_cluster_config_errors_name_the_key(tmp_path, text, key):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ClusterError) as err:
        cfg = load_cluster_config(path)
        job_script(cfg)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and key in msg, msg


# ----------------------------------------------------------------------------- real workers
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("cluster")
    files = [copy_nano_subset(d / f"f{i}.root") for i in range(2)]
    cfg = d / "datasets.yaml"
    cfg.write_text(
        "era: '2018'\nsamples:\n  - name: dy\n    group: Zmumu\n    xsec_pb: 2000.0\n"
        f"    files: [{', '.join(map(str, files))}]\n"
    )
    return files, cfg


def _cluster_yaml(tmp_path, body: str) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(body)
    return path


@pytest.mark.slow
def test_adaptive_local_cluster_matches_sync(small, tmp_path, capsys):
    files, dcfg = small
    ccfg = _cluster_yaml(
        tmp_path,
        "kind: local\nadaptive: {minimum: 0, maximum: 2}\nwait_workers: 60\n"
        "job: {threads_per_worker: 1, memory_limit: 2GB}\n",
    )
    out = histmaker.main(
        ["--dataset-config", str(dcfg), "-a", "muon_kinematics", "--cluster", str(ccfg),
         "-o", str(tmp_path), "--no-progress", "--step-size", "20"]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert re.search(r"local Dask cluster \(adaptive 0-2 workers\).*dashboard: http://", printed)
    ref = engine.run([dy(files)], MuonKinematicsProcessor(), step_size=20)
    with HistFile(out) as f:
        np.testing.assert_array_equal(
            f.get("dy", "pdf").values(flow=True), ref["dy"].hists["pdf"].values(flow=True)
        )
        assert f.metadata["run"]["scheduler"].startswith("tcp://127.0.0.1:")


def _command(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wremnants_dask.histmaker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_a_scheduler_without_workers_says_so_and_times_out(small, tmp_path):
    _, dcfg = small
    sched = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--dashboard-address", ":0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        address = None
        for _ in range(200):
            m = re.search(r"Scheduler at:\s+(tcp://127\.0\.0\.1:\d+)", sched.stdout.readline())
            if m:
                address = m.group(1)
                break
        assert address, "the scheduler did not start"
        run = _command(
            "--dataset-config", str(dcfg), "-a", "muon_kinematics", "--scheduler", address,
            "--wait-workers", "2", "-o", str(tmp_path), "--no-progress",
        )  # fmt: skip
    finally:
        sched.terminate()
        sched.wait(20)
    assert "waiting for a Dask worker to join" in run.stdout, run.stdout
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert f"{address}: no Dask worker joined within 2 s" in lines[0]


def test_unreachable_scheduler_is_one_line(small, tmp_path):
    _, dcfg = small
    run = _command(
        "--dataset-config", str(dcfg), "-a", "muon_kinematics", "--scheduler",
        "tcp://127.0.0.1:1", "--connect-timeout", "2", "-o", str(tmp_path), "--no-progress",
    )  # fmt: skip
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert "tcp://127.0.0.1:1: cannot connect to the Dask scheduler" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("limit,completes", [("120MB", False), ("1GB", True)])
def test_worker_memory_limit(small, tmp_path, capsys, limit, completes):
    """A worker needs ~150 MB once the engine is imported: under a 120 MB limit its nanny
    restarts it until the task is given up, which must be one line naming the limit and the
    fix; with 1 GB the same run completes."""
    _, dcfg = small
    ccfg = _cluster_yaml(
        tmp_path,
        "kind: local\njobs: 1\nwait_workers: 60\nallowed_failures: 1\n"
        f"job: {{threads_per_worker: 1, memory_limit: {limit}}}\n",
    )
    rc = histmaker.console_main(
        ["--dataset-config", str(dcfg), "-a", "muon_kinematics", "--cluster", str(ccfg),
         "-o", str(tmp_path), "--no-progress", "--step-size", "20"]
    )  # fmt: skip
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("histmaker: error:")]
    if completes:
        assert rc == 0 and not err and (tmp_path / "muon_kinematics.hdf5").exists()
    else:
        assert rc == 2 and len(err) == 1, err
        assert "worker memory limit 120 MB" in err[0] and "memory_limit" in err[0]
        assert not (tmp_path / "muon_kinematics.hdf5").exists()
