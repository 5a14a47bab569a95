"""Where the histmaker's workers come from: ``--scheduler`` (an existing scheduler), or
``--cluster CONFIG.yaml`` (workers as HTCondor, SLURM or PBS jobs through dask-jobqueue, or a
local cluster), with a fixed number of jobs or adaptive scaling, a bounded wait for the first
worker, and tasks lost with their workers turned into one clear line.

A cluster config (examples: ``configs/cluster_*.yaml``)::

    kind: slurm            # slurm | htcondor | pbs | local
    jobs: 4                # fixed number of batch jobs (local: workers) ...
    adaptive: {minimum: 0, maximum: 20}   # ... or scale with the work (not both)
    wait_workers: 900      # seconds to wait for the first worker (null: forever)
    allowed_failures: 3    # times a task may die with its worker before the run fails
    scheduler: {dashboard_address: ":8787"}   # options of the scheduler (runs here)
    job: {cores: 4, processes: 4, memory: 16GB, walltime: "02:00:00", queue: short}

``job`` holds the options of dask-jobqueue's job class (``local``: of ``LocalCluster``, e.g.
``memory_limit``); each job runs ``processes`` workers sharing ``memory``, which sets every
worker's ``--memory-limit``.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "KINDS",
    "ClusterConfig",
    "ClusterError",
    "cluster_client",
    "job_script",
    "load_cluster_config",
    "wait_for_workers",
]

#: kind -> dask_jobqueue class name (``local``: distributed.LocalCluster)
KINDS = {
    "slurm": "SLURMCluster",
    "htcondor": "HTCondorCluster",
    "pbs": "PBSCluster",
    "local": "LocalCluster",
}
_KEYS = {"kind", "jobs", "adaptive", "wait_workers", "allowed_failures", "scheduler", "job"}


class ClusterError(RuntimeError):
    """The cluster cannot be used (config, batch system, workers); one line naming the cause."""


@dataclass
class ClusterConfig:
    path: str
    kind: str
    jobs: int | None = None
    adaptive: dict[str, int] | None = None
    wait_workers: float | None = None
    allowed_failures: int = 3
    scheduler: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)


def resolve(config: str | os.PathLike) -> Path:
    """A path, or the name of a packaged example (``cluster_slurm`` or ``slurm``)."""
    path = Path(config).expanduser()
    if path.is_file():
        return path
    packaged = importlib.resources.files("wremnants_dask.configs")
    for cand in (str(config), f"{config}.yaml", f"cluster_{config}.yaml"):
        if os.sep not in cand and (packaged / cand).is_file():
            return Path(str(packaged / cand))
    raise ClusterError(f"cluster config {config!r} not found")


def load_cluster_config(config: str | os.PathLike) -> ClusterConfig:
    """Read and check a cluster config; errors name the file and the key."""
    path = resolve(config)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ClusterError(
            f"{path}: cannot read the cluster config ({' '.join(str(err).split())})"
        ) from None
    if not isinstance(raw, dict):
        raise ClusterError(f"{path}: a cluster config is a mapping with a 'kind'")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ClusterError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(_KEYS)}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ClusterError(f"{path}: key 'kind' must be one of {sorted(KINDS)}, got {kind!r}")
    cfg = ClusterConfig(str(path), kind)
    jobs, adaptive = raw.get("jobs"), raw.get("adaptive")
    if jobs is not None and adaptive is not None:
        raise ClusterError(f"{path}: give 'jobs' or 'adaptive', not both")
    if jobs is not None:
        if not _count(jobs, 1):
            raise ClusterError(f"{path}: key 'jobs' must be an integer >= 1, got {jobs!r}")
        cfg.jobs = jobs
    if adaptive is not None:
        if not isinstance(adaptive, dict) or set(adaptive) - {"minimum", "maximum"}:
            raise ClusterError(f"{path}: key 'adaptive' must be {{minimum: N, maximum: M}}")
        lo, hi = adaptive.get("minimum", 0), adaptive.get("maximum")
        if not (_count(lo, 0) and _count(hi, 1) and lo <= hi):
            raise ClusterError(
                f"{path}: key 'adaptive' needs integers 0 <= minimum <= maximum, maximum >= 1"
            )
        cfg.adaptive = {"minimum": lo, "maximum": hi}
    if jobs is None and adaptive is None:
        raise ClusterError(f"{path}: give 'jobs: N' or 'adaptive: {{minimum: 0, maximum: N}}'")
    wait = raw.get("wait_workers")
    if wait is not None and not (
        isinstance(wait, (int, float)) and not isinstance(wait, bool) and 0 < wait < 1e9
    ):
        raise ClusterError(f"{path}: key 'wait_workers' must be a positive number of seconds")
    cfg.wait_workers = None if wait is None else float(wait)
    failures = raw.get("allowed_failures", 3)
    if not _count(failures, 0):
        raise ClusterError(f"{path}: key 'allowed_failures' must be an integer >= 0")
    cfg.allowed_failures = failures
    for key in ("scheduler", "job"):
        value = raw.get(key) or {}
        if not isinstance(value, dict):
            raise ClusterError(f"{path}: key '{key}' must be a mapping of options")
        setattr(cfg, key, dict(value))
    if kind != "local" and not {"cores", "memory"} <= set(cfg.job):
        raise ClusterError(f"{path}: key 'job' needs 'cores' and 'memory' for {kind} jobs")
    return cfg


def _count(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _jobqueue_class(cfg: ClusterConfig) -> Any:
    try:
        import dask_jobqueue
    except ImportError:
        raise ClusterError(
            f"{cfg.path}: kind {cfg.kind!r} needs dask-jobqueue "
            "(pip install 'wremnants_dask[cluster]')"
        ) from None
    return getattr(dask_jobqueue, KINDS[cfg.kind])


def job_script(cfg: ClusterConfig, scheduler: str = "tcp://SCHEDULER:8786") -> str:
    """The batch script one job runs (no scheduler started, no batch system needed)."""
    if cfg.kind == "local":
        raise ClusterError(f"{cfg.path}: kind 'local' has no batch job script")
    cls = _jobqueue_class(cfg)
    try:
        job = cls.job_cls(scheduler=scheduler, name="dask-worker", **cfg.job)
        return job.job_script()
    except (TypeError, ValueError) as err:
        raise ClusterError(f"{cfg.path}: key 'job': {' '.join(str(err).split())}") from None


def wait_for_workers(client: Any, timeout: float | None, where: str) -> None:
    """Return once a worker is connected; say that it waits, and fail after ``timeout`` s.

    A client with no workers otherwise waits silently forever (issue 17)."""
    if client.scheduler_info().get("workers"):
        return
    limit = "" if timeout is None else f" (at most {timeout:g} s)"
    print(f"waiting for a Dask worker to join {where}{limit}...", flush=True)
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise ClusterError(f"{where}: no Dask worker joined within {timeout:g} s") from None


@contextlib.contextmanager
def cluster_client(cfg: ClusterConfig, wait_override: float | None = None) -> Iterator[Any]:
    """A client of the configured cluster, scaled (fixed or adaptive), with a worker."""
    import dask
    from distributed import Client

    from wremnants_dask.engine import WORKER_CONFIG

    allowed = {"distributed.scheduler.allowed-failures": cfg.allowed_failures}
    with dask.config.set({**allowed, **WORKER_CONFIG}):
        if cfg.kind == "local":
            from distributed import LocalCluster

            options = {"dashboard_address": ":0", "host": "127.0.0.1", **cfg.scheduler}
            try:
                cluster = LocalCluster(n_workers=0, processes=True, **options, **cfg.job)
            except TypeError as err:
                raise ClusterError(f"{cfg.path}: key 'job': {err}") from None
        else:
            cls = _jobqueue_class(cfg)
            try:
                cluster = cls(scheduler_options=cfg.scheduler, **cfg.job)
            except (TypeError, ValueError) as err:
                raise ClusterError(f"{cfg.path}: {' '.join(str(err).split())}") from None
        # Closed by hand: a cluster whose workers are being restarted (memory limit) can time
        # out while closing, and that must not replace the error that ended the run.
        client = Client(cluster)
        try:
            if cfg.adaptive is not None:
                lo, hi = cfg.adaptive["minimum"], cfg.adaptive["maximum"]
                if cfg.kind == "local":
                    cluster.adapt(minimum=lo, maximum=hi)
                else:
                    cluster.adapt(minimum_jobs=lo, maximum_jobs=hi)
                scale = f"adaptive {lo}-{hi} {'workers' if cfg.kind == 'local' else 'jobs'}"
            elif cfg.kind == "local":
                cluster.scale(cfg.jobs)
                scale = f"{cfg.jobs} workers"
            else:
                cluster.scale(jobs=cfg.jobs)
                scale = f"{cfg.jobs} jobs"
            print(
                f"{cfg.kind} Dask cluster ({scale}) from {cfg.path}; "
                f"scheduler {cluster.scheduler_address}; dashboard: {client.dashboard_link}",
                flush=True,
            )
            if cfg.adaptive is None or cfg.adaptive["minimum"] > 0:
                wait = wait_override if wait_override is not None else cfg.wait_workers
                where = f"the {cfg.kind} cluster at {cluster.scheduler_address}"
                wait_for_workers(client, wait, where)
            # adaptive from 0: the workers are started by the work itself
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.close()
            with contextlib.suppress(Exception):
                cluster.close()


def memory_limits(client: Any) -> list[int]:
    """The distinct memory limits (bytes) of the workers connected now, else (all restarting)
    the limit the cluster starts its workers with."""
    workers = (client.scheduler_info().get("workers") or {}).values()
    limits = sorted({w.get("memory_limit") for w in workers} - {None, 0})
    if limits:
        return limits
    from dask.utils import parse_bytes

    options = (getattr(getattr(client, "cluster", None), "new_spec", None) or {}).get("options")
    try:
        if options and options.get("memory_limit"):
            return [int(parse_bytes(options["memory_limit"]))]
        if options and options.get("memory"):  # dask-jobqueue: a job's memory over its workers
            return [int(parse_bytes(options["memory"]) / (options.get("processes") or 1))]
    except (TypeError, ValueError):
        pass
    return []


def lost_worker_message(err: BaseException, limits: list[int]) -> str:
    """One line for ``distributed.KilledWorker``: the task, and the likely cause.

    ``limits``: the workers' memory limits seen before the run (they may all be gone now)."""
    limit = f" (worker memory limit {limits[0] / 1e6:.0f} MB)" if limits else ""
    return (
        f"a task died with its worker too many times{limit}: {' '.join(str(err).split())} "
        "Workers killed for exceeding their memory limit are the usual cause: raise it "
        "('job: memory' / 'memory_limit' in the cluster config) or lower --step-size"
    )
