"""Resumable histmaker runs (issue 17): a run killed or interrupted half-way keeps its
partial results in OUTPUT.partial/, ``--resume`` computes only the missing chunks and writes an
output identical to an uninterrupted run's (scripts/compare_outputs.py: every histogram and
attribute byte for byte, provenance aside), an incompatible resume is refused in one line, and
``--list-missing`` names what is left."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import resume_processors
import uproot
from conftest import NANOAOD_DATA, NANOAOD_DY

from wremnants_dask.cli import histmaker
from wremnants_dask.engine.checkpoint import missing_chunks, partial_folder
from wremnants_dask.histograms.histio import HistFile

TESTS = Path(__file__).parent
REPO = TESTS.parent
N_CHUNKS = 20  # two datasets of 40 events, four events per chunk
SLOW = "resume_processors:SlowMuonKinematics"


def _compare():
    spec = importlib.util.spec_from_file_location(
        "compare_outputs", REPO / "scripts" / "compare_outputs.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.compare_files


def args(out: Path, *extra: str, analysis: str = SLOW) -> list[str]:
    return ["--dataset-config", "nanoaod_shared", "-a", analysis, "--step-size", "4",
            "--split-every", "2", "--checkpoint-groups", "8", "-o", str(out),
            "--no-progress", *extra]  # fmt: skip


def output(folder: Path, analysis: str = SLOW) -> Path:
    return folder / (analysis.replace(":", "_").replace(".", "_") + ".hdf5")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run (synchronous, in this process)."""
    out = histmaker.main(args(tmp_path_factory.mktemp("ref"), "--executor", "sync"))
    assert not partial_folder(out).exists()  # removed once the output is written
    return out


def _saved(partial: Path) -> list[Path]:
    return sorted(partial.glob("*/group*.pkl"))


def start_and_interrupt(out: Path, executor: list[str], sig: int) -> subprocess.Popen:
    """Start the histmaker in its own process group, wait for its first saved group, then send
    ``sig`` to the whole group (client, local cluster, workers)."""
    env = dict(os.environ, PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               RESUME_TEST_SLEEP="0.3")  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "wremnants_dask.histmaker", *args(out, *executor)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    partial = partial_folder(output(out))
    deadline = time.monotonic() + 120
    while not _saved(partial):
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be interrupted: {proc.communicate()}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("no partial result saved within 120 s")
        time.sleep(0.02)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)
    if sig != signal.SIGKILL:  # the rest of the group, if any is left
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc


def resume_and_check(out_folder: Path, reference: Path, capsys) -> dict:
    partial = partial_folder(output(out_folder))
    assert not output(out_folder).exists() and partial.exists()
    saved = _saved(partial)
    missing = missing_chunks(partial)
    n_missing = sum(len(d["chunks_missing"]) for d in missing["datasets"].values())
    # the listing: every chunk of every group not saved, nothing else (groups of 2 chunks)
    assert n_missing == N_CHUNKS - 2 * len(saved)
    capsys.readouterr()
    assert histmaker.main(args(out_folder, "--list-missing", str(output(out_folder)))) is None
    listed = capsys.readouterr().out
    assert listed.count(" [") == n_missing
    assert f"{NANOAOD_DY}" in listed or f"{NANOAOD_DATA}" in listed

    resume_processors.SlowMuonKinematics.calls = 0
    out = histmaker.main(args(out_folder, "--executor", "sync", "--resume"))
    said = capsys.readouterr().out
    assert f"{N_CHUNKS - n_missing} of {N_CHUNKS} chunks done" in said
    # only the missing chunks were processed
    assert resume_processors.SlowMuonKinematics.calls == n_missing
    assert _compare()(out, reference) == []
    assert not partial.exists()
    with HistFile(out) as f:
        resumed = f.metadata["run"]["resume"]
    assert resumed["resumed"] and resumed["chunks_reused"] == N_CHUNKS - n_missing
    assert resumed["attempts"] == 2 and resumed["partial_folder"] == str(partial)
    return resumed


def test_killed_local_cluster_run_resumes_to_the_same_output(tmp_path, reference, capsys):
    """kill -9 of the client with its local cluster (workers included) mid-run."""
    proc = start_and_interrupt(tmp_path, ["--executor", "local", "-j", "1"], signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    resume_and_check(tmp_path, reference, capsys)


def test_ctrl_c_keeps_partial_results_and_resumes(tmp_path, reference, capsys):
    proc = start_and_interrupt(tmp_path, ["--executor", "sync"], signal.SIGINT)
    _, err = proc.communicate()
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == (
        "histmaker: error: interrupted; partial results kept in "
        f"{partial_folder(output(tmp_path))}: rerun with --resume to continue"
    )
    resume_and_check(tmp_path, reference, capsys)


def test_incompatible_resume_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "o"
    fail = ["--executor", "sync"]
    os.environ["RESUME_TEST_FAIL_BELOW"] = "1e9"  # fails on the first chunk: partial folder left
    try:
        assert (
            histmaker.console_main(
                args(out, *fail, analysis="resume_processors:FailingMuonKinematics")
            )
            == 1
        )
    finally:
        del os.environ["RESUME_TEST_FAIL_BELOW"]
    capsys.readouterr()
    rc = histmaker.console_main(
        [
            *args(out, *fail, "--resume", analysis="resume_processors:FailingMuonKinematics"),
            "--step-size",
            "2",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "cannot resume: --step-size differs from the interrupted run (step_size 4 -> 2)" in err
    rc = histmaker.console_main(args(tmp_path / "none", *fail, "--resume"))
    assert rc == 2 and "nothing to resume" in capsys.readouterr().err


def test_a_chunk_that_keeps_failing_is_named_with_its_entry_range(tmp_path, capsys):
    """The failing chunk is named with file and entries, counted across runs, and listed; the
    chunks done before it are kept (the second run reuses them)."""
    met = uproot.open(NANOAOD_DY)["Events"]["MET_pt"].array(library="np")
    limit = float(np.sort(met)[0]) + 1e-3  # only the event with the smallest MET fails
    entry = int(np.argmin(met)) // 4 * 4  # its chunk
    a = args(tmp_path, "--executor", "sync", "--datasets", "dy_m50",
             analysis="resume_processors:FailingMuonKinematics")  # fmt: skip
    os.environ["RESUME_TEST_FAIL_BELOW"] = str(limit)
    try:
        assert histmaker.console_main(a) == 1
        first = capsys.readouterr().err
        assert histmaker.console_main([*a, "--resume"]) == 1
        second = capsys.readouterr().err.strip()
    finally:
        del os.environ["RESUME_TEST_FAIL_BELOW"]
    where = f"{NANOAOD_DY} entries [{entry}, {entry + 4})"
    assert where in first and "failed in" not in first
    assert where in second and "(failed in 2 runs; see --list-missing)" in second
    assert "MET_pt below" in second and "\n" not in second
    out = output(tmp_path, "resume_processors:FailingMuonKinematics")
    histmaker.main(["--list-missing", str(out)])
    listed = capsys.readouterr().out
    assert f"failed in 2 run(s): dy_m50: {NANOAOD_DY} [{entry}, {entry + 4})" in listed


@pytest.mark.slow
def test_killed_external_scheduler_run_resumes_to_the_same_output(tmp_path, reference, capsys):
    """``dask scheduler`` + ``dask worker`` processes on 127.0.0.1; the scheduler is killed
    mid-run: the histmaker fails (not hangs), and the rerun with --resume completes."""
    import json
    import shutil

    dask_cli = shutil.which("dask") or str(Path(sys.executable).parent / "dask")
    env = dict(os.environ, PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               RESUME_TEST_SLEEP="0.3")  # fmt: skip
    sched_file = tmp_path / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    sched = subprocess.Popen(
        [dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
         ":0", "--scheduler-file", str(sched_file)], env=env, start_new_session=True, **quiet,
    )  # fmt: skip
    procs = [sched]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() or not sched_file.read_text().strip():
            assert time.monotonic() < deadline and sched.poll() is None, "no scheduler"
            time.sleep(0.05)
        address = json.loads(sched_file.read_text())["address"]
        procs.append(subprocess.Popen(
            [dask_cli, "worker", address, "--nworkers", "1", "--nthreads", "1",
             "--no-dashboard", "--host", "127.0.0.1"], env=env, start_new_session=True, **quiet,
        ))  # fmt: skip
        run = subprocess.Popen(
            [sys.executable, "-m", "wremnants_dask.histmaker",
             *args(tmp_path, "--scheduler", address, "--wait-workers", "60",
                   "--connect-timeout", "5")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        procs.append(run)
        partial = partial_folder(output(tmp_path))
        deadline = time.monotonic() + 120
        while not _saved(partial):
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "no partial result saved within 120 s"
            time.sleep(0.02)
        os.killpg(sched.pid, signal.SIGKILL)
        _, err = run.communicate(timeout=90)  # fails, does not hang
        assert run.returncode != 0
        assert err.strip().splitlines()[-1].startswith("histmaker: error:")
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    resume_and_check(tmp_path, reference, capsys)


def test_changed_input_file_refuses_the_resume(tmp_path):
    """An input file rewritten since the interrupted run (size or modification time differ):
    its saved groups may hold other events, so the resume is refused naming the file."""
    from engine_helpers import copy_nano_subset, dy

    from wremnants_dask import engine
    from wremnants_dask.engine.checkpoint import Checkpoint, ResumeError
    from wremnants_dask.processors.muon_kinematics import MuonKinematicsProcessor

    f = copy_nano_subset(tmp_path / "in.root")
    plan = engine.build_plan([dy([f])], MuonKinematicsProcessor(), step_size=10)
    Checkpoint.open(tmp_path / "p", plan, resume=False)
    Checkpoint.open(tmp_path / "p", plan, resume=True)  # the same work: accepted
    st = os.stat(f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(ResumeError, match=r"dataset 'dy': its input files .* \(.*in.root\)"):
        Checkpoint.open(tmp_path / "p", plan, resume=True)
