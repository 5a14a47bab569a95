"""Command line histmaker: datasets + analysis -> one HDF5 file of histograms.

``python -m wremnants_dask.histmaker`` with no arguments runs the default analysis on the default
synthetic datasets (generated into the cache on first use) with a local Dask cluster, and
writes ``<outfolder>/<analysis>[_<postfix>].hdf5``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from wremnants_dask import engine
from wremnants_dask.cli.cluster import (
    ClusterError,
    cluster_client,
    job_script,
    load_cluster_config,
    lost_worker_message,
    memory_limits,
    wait_for_workers,
)
from wremnants_dask.engine.checkpoint import (
    DEFAULT_MAX_GROUPS,
    Checkpoint,
    ResumeError,
    missing_chunks,
    partial_folder,
)
from wremnants_dask.histograms import histio
from wremnants_dask.inputs.datasets import ConfigError
from wremnants_dask.inputs.files import BadInputError
from wremnants_dask.inputs.nanoaod_eras import EraTableError
from wremnants_dask.processors.registry import ANALYSES, DEFAULT_ANALYSIS, get_processor
from wremnants_dask.utils.provenance import make_metadata


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wremnants_dask.histmaker",
        description="Fill the analysis histograms of the datasets with Dask and write one HDF5 file.",
    )
    p.add_argument(
        "-a",
        "--analysis",
        default=DEFAULT_ANALYSIS,
        help=f"analysis name ({', '.join(sorted(ANALYSES))}) or module:Class",
    )
    p.add_argument(
        "--dataset-config",
        default=None,
        help="dataset YAML config (default: the synthetic datasets)",
    )
    p.add_argument(
        "--datasets",
        "--filterProcs",
        dest="filter_procs",
        nargs="+",
        default=None,
        help="only these datasets/groups (names or glob patterns)",
    )
    p.add_argument(
        "--excludeProcs",
        dest="exclude_procs",
        nargs="+",
        default=None,
        help="skip these datasets/groups",
    )
    p.add_argument(
        "--maxFiles",
        dest="max_files",
        type=int,
        default=None,
        help="at most this many files per dataset",
    )
    p.add_argument(
        "--max-events",
        "--maxEvents",
        dest="max_events",
        type=int,
        default=None,
        help="at most this many events per dataset",
    )
    p.add_argument(
        "-j",
        "--workers",
        type=int,
        default=max(1, min(os.cpu_count() or 1, 8)),
        help="local cluster worker processes",
    )
    p.add_argument("--threads-per-worker", type=int, default=1)
    p.add_argument(
        "--step-size", type=int, default=engine.DEFAULT_STEP_SIZE, help="events per chunk (task)"
    )
    p.add_argument(
        "--split-every",
        type=int,
        default=engine.DEFAULT_SPLIT_EVERY,
        help="fan-in of the tree reduction of partial histograms",
    )
    p.add_argument(
        "--executor",
        choices=("local", "sync"),
        default="local",
        help="local: distributed LocalCluster; sync: one process, no Dask scheduler",
    )
    p.add_argument(
        "--scheduler", default=None, help="address of an existing Dask scheduler (tcp://host:port)"
    )
    p.add_argument(
        "--cluster",
        default=None,
        metavar="CONFIG.yaml",
        help="start workers as batch jobs (HTCondor, SLURM, PBS via dask-jobqueue) or a local "
        "cluster, as described in a cluster config (examples: configs/cluster_*.yaml)",
    )
    p.add_argument(
        "--wait-workers",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --scheduler/--cluster: fail if no worker has joined after this long "
        "(default: the cluster config's wait_workers, else wait, saying so)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="give up reaching the --scheduler after this long",
    )
    p.add_argument(
        "--cluster-job-script",
        action="store_true",
        help="print the batch job script of --cluster CONFIG and exit (nothing is submitted)",
    )
    p.add_argument("-o", "--outfolder", default=".", help="output folder")
    p.add_argument("-p", "--postfix", default=None, help="appended to the output file name")
    p.add_argument(
        "--no-systematics",
        action="store_true",
        help="nominal histograms only (passed to the processor)",
    )
    p.add_argument(
        "--corrections",
        default=None,
        metavar="PAYLOAD",
        help="correctionlib payload of the muon corrections (default: the shipped one; e.g. "
        "the payload `python -m wremnants_dask.tnp` writes from measured efficiencies)",
    )
    p.add_argument(
        "--muon-calibration",
        default=None,
        metavar="PAYLOAD",
        help="measured muon momentum calibration (`python -m wremnants_dask.mucalib`), for -a mw: "
        "data scale and simulation resolution corrected, with its nuisances",
    )
    p.add_argument(
        "--recoil-calibration",
        default=None,
        metavar="FILE.json",
        help="recoil calibration (`python -m wremnants_dask.recoil`) applied to W/Z simulation "
        "by analyses that take it (mw, mz_recoil)",
    )
    p.add_argument(
        "--boson-pt-weights",
        default=None,
        metavar="FILE.json",
        help="boson-pT weights (`python -m wremnants_dask.bosonpt`) applied at the generator "
        "boson pT of W/Z simulation by analyses that take them (mw, mz_bosonpt)",
    )
    p.add_argument(
        "--skip-bad-files",
        action="store_true",
        help="skip unreadable/corrupt/empty files and record them in the output",
    )
    p.add_argument(
        "--performance-report",
        default=None,
        metavar="FILE.html",
        help="save Dask's performance report (distributed executors)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: reuse the partial results it saved in "
        "OUTPUT.partial/ and compute only the missing chunks (refused if anything differs)",
    )
    p.add_argument(
        "--checkpoint-groups",
        type=int,
        default=DEFAULT_MAX_GROUPS,
        metavar="N",
        help="save partial results in at most N groups of chunks per dataset into "
        "OUTPUT.partial/ (removed once the output is written); 0: save none",
    )
    p.add_argument(
        "--list-missing",
        default=None,
        metavar="OUTPUT.hdf5",
        help="list the chunks an interrupted run writing OUTPUT.hdf5 has not processed "
        "(and those that made it fail), then exit",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error (default: one line naming the file or key)",
    )
    return p


def output_path(args: argparse.Namespace) -> Path:
    name = args.analysis.replace(":", "_").replace(".", "_")
    if args.postfix:
        name += f"_{args.postfix}"
    return Path(args.outfolder) / f"{name}.hdf5"


@contextlib.contextmanager
def make_client(args: argparse.Namespace) -> Iterator[Any]:
    """The Dask client for the chosen executor (None for synchronous execution)."""
    if args.scheduler and args.cluster:
        raise ClusterError("give --scheduler or --cluster, not both")
    if args.cluster:
        with cluster_client(load_cluster_config(args.cluster), args.wait_workers) as client:
            yield client
        return
    if args.scheduler:
        from distributed import Client

        try:
            client = Client(args.scheduler, timeout=args.connect_timeout)
        except (OSError, TimeoutError) as err:
            raise ClusterError(
                f"{args.scheduler}: cannot connect to the Dask scheduler "
                f"({' '.join(str(err).split())})"
            ) from None
        with client:
            print(
                f"connected to Dask scheduler {args.scheduler}; dashboard: {client.dashboard_link}"
            )
            wait_for_workers(client, args.wait_workers, f"scheduler {args.scheduler}")
            yield client
        return
    if args.executor == "sync":
        yield None
        return
    import dask
    from distributed import Client, LocalCluster

    with (
        dask.config.set(engine.WORKER_CONFIG),
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=args.threads_per_worker,
            processes=True,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        print(
            f"local Dask cluster: {args.workers} workers x {args.threads_per_worker} threads; "
            f"dashboard: {client.dashboard_link}"
        )
        yield client


def console_main(argv: list[str] | None = None) -> int:
    """The command: :func:`main` with errors as one line on stderr and a non-zero exit code
    (tracebacks only with ``--debug``). Returns the exit code."""
    raw = sys.argv[1:] if argv is None else argv
    try:
        main(raw)
    except KeyboardInterrupt:
        if "--debug" in raw:
            raise
        hint = ""
        with contextlib.suppress(Exception):
            folder = partial_folder(output_path(make_parser().parse_args(raw)))
            if folder.exists():
                hint = f"; partial results kept in {folder}: rerun with --resume to continue"
        print(f"histmaker: error: interrupted{hint}", file=sys.stderr)
        return 130
    except Exception as err:
        if "--debug" in raw:
            raise
        print(f"histmaker: error: {one_line(err)}", file=sys.stderr)
        return 2 if isinstance(err, _user_errors()) else 1
    return 0


def one_line(err: BaseException) -> str:
    """An exception as one line: its message for the errors users cause (they name the file
    or key), else its type and message with a pointer to ``--debug``."""
    msg = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, _user_errors()):
        return msg
    return f"{type(err).__name__}: {msg} (run with --debug for the traceback)"


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that come from the inputs, the configuration or the arguments, not the code."""
    from wremnants_dask.corrections.boson_pt import BosonPtError
    from wremnants_dask.corrections.payload import CorrectionError
    from wremnants_dask.engine.processor import ProcessorError
    from wremnants_dask.inputs.lumi import LumiError
    from wremnants_dask.inputs.normalization import NormalizationError
    from wremnants_dask.inputs.reader import ChunkReadError
    from wremnants_dask.utils.outputs import OutputError

    return (
        ClusterError,
        ResumeError,
        ConfigError,
        CorrectionError,
        BadInputError,
        EraTableError,
        ChunkReadError,
        OutputError,
        ProcessorError,
        LumiError,
        NormalizationError,
        BosonPtError,
        FileNotFoundError,
    )


def estimate_output_bytes(plan: engine.Plan, checkpoint: Checkpoint | None = None) -> int:
    """Upper estimate of the bytes the run writes: every declared histogram uncompressed (weight
    storage: two doubles per cell) plus a megabyte of metadata per dataset, once for the output
    and once per group of partial results still to save (``checkpoint``)."""
    total = 0
    for name, p in plan.datasets.items():
        size = 1_000_000
        for h in plan.processor.declared(p.dataset).values():
            size += h.size * (2 if h.storage == "weight" else 1) * 8
        copies = 1 + (checkpoint.groups_to_save(name) if checkpoint is not None else 0)
        total += size * copies
    return total


def main(argv: list[str] | None = None) -> Path | None:
    """Run the histmaker; errors are raised (see :func:`console_main` for the command).
    Returns the output path (None with ``--cluster-job-script``)."""
    args = make_parser().parse_args(argv)
    if args.list_missing:
        print_missing(Path(args.list_missing))
        return None
    if args.checkpoint_groups < 0:
        raise ResumeError(
            f"--checkpoint-groups must be 0 or positive, got {args.checkpoint_groups}"
        )
    if args.resume and args.checkpoint_groups == 0:
        raise ResumeError("--resume needs partial results: not with --checkpoint-groups 0")
    if args.cluster_job_script:
        if not args.cluster:
            raise ClusterError("--cluster-job-script needs --cluster CONFIG.yaml")
        print(job_script(load_cluster_config(args.cluster)))
        return None
    from wremnants_dask.inputs.datasets import load_datasets
    from wremnants_dask.utils.outputs import OutputError, check_free_space, check_output_location

    # Before anything is computed: a run whose output cannot be written fails now.
    check_output_location(output_path(args))

    datasets = load_datasets(
        args.dataset_config,
        filter_procs=args.filter_procs,
        exclude_procs=args.exclude_procs,
        max_files=args.max_files,
    )
    if not datasets:
        raise SystemExit("no datasets selected")
    options: dict[str, Any] = {"systematics": not args.no_systematics}
    if args.corrections is not None:
        options["corrections"] = args.corrections
    if args.muon_calibration is not None:
        options["muon_calibration"] = args.muon_calibration
    if args.recoil_calibration is not None:
        options["recoil_calibration"] = args.recoil_calibration
    if args.boson_pt_weights is not None:
        options["boson_pt_weights"] = args.boson_pt_weights
    processor = get_processor(args.analysis, **options)
    if args.boson_pt_weights is not None and not hasattr(processor, "boson_pt"):
        raise ConfigError(f"--boson-pt-weights: analysis {args.analysis!r} does not apply them")
    if args.recoil_calibration is not None and not hasattr(processor, "recoil"):
        raise ConfigError(f"--recoil-calibration: analysis {args.analysis!r} does not apply it")
    if args.corrections is not None and not hasattr(processor, "payload"):
        raise ConfigError(f"--corrections: analysis {args.analysis!r} reads no corrections payload")
    if args.muon_calibration is not None and not hasattr(processor, "calibration"):
        raise ConfigError(f"--muon-calibration: analysis {args.analysis!r} does not apply one")
    out = output_path(args)
    print(
        f"analysis {args.analysis}: {len(datasets)} datasets "
        f"({', '.join(d.name for d in datasets)}) -> {out}"
    )
    t0 = time.perf_counter()
    with ThreadPoolExecutor(1) as writer:
        with make_client(args) as client:
            if client is not None:  # workers import while the graph is built
                # an optimisation only: a worker lost meanwhile (restarted by its nanny) is
                # the run's business, not the warm-up's
                with contextlib.suppress(OSError):
                    engine.warm_up(client, processor)
            plan = engine.build_plan(
                datasets,
                processor,
                step_size=args.step_size,
                max_events=args.max_events,
                split_every=args.split_every,
                skip_bad_files=args.skip_bad_files,
                client=client,
            )
            checkpoint = None
            if args.checkpoint_groups > 0:
                checkpoint = Checkpoint.open(
                    partial_folder(out),
                    plan,
                    resume=args.resume,
                    max_groups=args.checkpoint_groups,
                )
                plan = checkpoint.apply(plan)
                if args.resume:
                    s = checkpoint.summary()
                    print(
                        f"resuming from {checkpoint.folder}: {s['chunks_reused']} of "
                        f"{s['chunks_total']} chunks done by earlier attempts"
                    )
            try:
                check_free_space(out, estimate_output_bytes(plan, checkpoint))
            except OutputError:
                if checkpoint is not None and not args.resume:
                    checkpoint.finish()  # nothing computed: leave nothing behind
                raise
            n_chunks = sum(len(s) for p in plan.datasets.values() for s in p.steps.values())
            print(
                f"graph: {n_chunks} chunks, {len(plan.graph.layers)} layers, "
                f"built in {plan.build_seconds:.2f} s"
            )
            for s in plan.skipped_files:
                print(f"skipped {s['file']} ({s['dataset']}): {s['reason']}", file=sys.stderr)
            limits = [] if client is None else memory_limits(client)
            try:
                result = engine.execute(
                    plan,
                    client,
                    progress=not args.no_progress,
                    performance_report=args.performance_report,
                )
            except Exception as err:
                failed = _failed_chunk(err, plan, checkpoint, limits)
                if failed is not None:
                    raise failed from err
                if type(err).__name__ not in ("KilledWorker", "CommClosedError"):
                    raise
                raise ClusterError(lost_worker_message(err, limits)) from err
            if checkpoint is not None:
                result.info["resume"] = checkpoint.summary()
            info = result.info
            for c in info["lost_chunks"]:
                print(
                    f"lost {c['events']} events of {c['dataset']}: {c['file']} entries "
                    f"[{c['entry_start']}, {c['entry_stop']}): {c['reason']}",
                    file=sys.stderr,
                )
            unread = [d.n_entries_unread for d in result.datasets.values() if d.n_entries_unread]
            if unread:
                print(
                    f"--max-events: {sum(unread)} entries of {len(unread)} dataset(s) left "
                    "unread; generator sums and lumi sections restricted to the processed ones",
                    file=sys.stderr,
                )
            print(
                f"processed {info['events']} events in {info['compute_seconds']:.2f} s "
                f"({info['events_per_second'] or 0:.0f} events/s)"
            )
            # Written while the local cluster shuts down (about a second of waiting on its
            # processes), not after.
            written = writer.submit(_write_output, out, args, plan, result, t0)
        try:
            written.result()
        except OSError as err:  # full disk, quota...: one line naming the output
            raise OutputError(
                f"{out}: {err.strerror or err}" if str(out) not in str(err) else str(err)
            ) from None
    if checkpoint is not None:
        checkpoint.finish()
    print(f"wrote {out}")
    return out


class ChunkFailedError(RuntimeError):
    """A chunk made the run fail; the message names it, and how many runs it has failed."""


def _failed_chunk(
    err: BaseException, plan: engine.Plan, checkpoint: Any, limits: list[int]
) -> Exception | None:
    """The error of a run that failed on one chunk, naming its file and entry range and, with
    a checkpoint, how many runs failed on it (counted in the partial results' manifest).
    None if the error cannot be tied to a chunk."""
    from wremnants_dask.inputs.reader import PART_ATTR, ChunkReadError

    part = None
    if isinstance(err, ChunkReadError):
        part = (err.path, err.start, err.stop)
    elif getattr(err, PART_ATTR, None) is not None:
        part = tuple(getattr(err, PART_ATTR))
    elif type(err).__name__ == "KilledWorker" and checkpoint is not None:
        found = checkpoint.chunk_of_key(plan, getattr(err, "task", None))
        part = found[1] if found else None
    if part is None:
        return None
    dataset = next(
        (n for n, p in plan.datasets.items() if tuple(part) in {tuple(x) for x in p.parts}), "?"
    )
    runs = 1
    if checkpoint is not None:
        runs = checkpoint.record_failure(dataset, part, one_line(err))
    if isinstance(err, ChunkReadError) and runs == 1:
        return None  # its own message already names the chunk
    again = f" (failed in {runs} runs; see --list-missing)" if runs > 1 else ""
    where = f"dataset {dataset!r}: {part[0]} entries [{part[1]}, {part[2]}){again}"
    if type(err).__name__ == "KilledWorker":
        return ClusterError(f"{where}: {lost_worker_message(err, limits)}")
    msg = f"{where}: {one_line(err)}"
    if isinstance(err, ChunkReadError):
        return ChunkReadError(err.path, err.start, err.stop, err.branch, f"{err.reason}{again}")
    return ChunkFailedError(msg)


def print_missing(output: Path) -> None:
    """``--list-missing``: the unprocessed chunks of the interrupted run writing ``output``."""
    folder = partial_folder(output)
    if not folder.exists():
        if output.exists():
            print(f"{output}: complete (no partial results left)")
            return
        raise ResumeError(f"{output}: no run in progress or interrupted ({folder} does not exist)")
    report = missing_chunks(folder)
    for name, d in report["datasets"].items():
        print(f"{name}: {len(d['chunks_missing'])} of {d['chunks_total']} chunks missing")
        for path, start, stop in d["chunks_missing"]:
            print(f"  {path} [{start}, {stop})")
    for f in report["failures"]:
        print(
            f"failed in {f['runs']} run(s): {f['dataset']}: {f['file']} "
            f"[{f['entry_start']}, {f['entry_stop']}): {f['error']}"
        )


def _write_output(
    out: Path, args: argparse.Namespace, plan: engine.Plan, result: engine.RunResult, t0: float
) -> Path:
    input_files = [f for p in plan.datasets.values() for f in p.files]
    meta = make_metadata(
        vars(args),
        input_files=input_files,
        stage="histmaker",
        analysis=args.analysis,
        # what the fit setup needs, carried forward: it never imports the processors
        analysis_metadata=plan.processor.analysis_metadata(),
        run=result.info,
        skipped_files=plan.skipped_files,
        total_seconds=time.perf_counter() - t0,
    )
    return histio.write_run(out, result, meta)
