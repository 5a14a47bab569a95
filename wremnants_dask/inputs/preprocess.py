"""Preprocessing of a dataset's files before any graph is built: inspect every file (in
threads, or on a cluster's workers), keep the good ones with their generator sums, check branch
types against the traced file, cut the entries into chunks and estimate a chunk's cost.

The engine's plan calls these; they know nothing of processors or histograms.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from wremnants_dask.inputs.files import (
    BadInputError,
    FileInfo,
    RunsBranches,
    inspect_file,
    open_tree,
)
from wremnants_dask.inputs.nanoaod_eras import load_table
from wremnants_dask.inputs.normalization import EVENTS_SOURCE

log = logging.getLogger(__name__)

__all__ = [
    "check_files",
    "chunk_cost",
    "chunk_steps",
    "gen_sums_of",
    "inspect_all",
    "type_mismatch",
    "warn_sums_from_events",
]


# Files opened concurrently when building the graph: overlaps the latency of remote storage
# (xrootd, network file systems); local parsing is bound by the GIL and gains little.
_INSPECT_THREADS = 8


# With a distributed client and more than this many files, the files other than the traced
# one are inspected on the workers: parsing ROOT metadata is CPU-bound Python that threads in
# one process do not parallelise, and on a cluster the workers are many and near the files.
_REMOTE_INSPECT_MIN = 16


def _inspect_remote(
    path: str, treename: str, runs_branches: RunsBranches | None = None
) -> FileInfo | tuple[str, str]:
    """``inspect_file`` on a worker: the info (no open tree, no form), or (path, reason)."""
    try:
        return inspect_file(path, treename, runs_branches=runs_branches)
    except BadInputError as err:
        return (err.path, err.reason)


def inspect_all(
    paths: Sequence[Any],
    treename: str,
    client: Any = None,
    runs_branches: RunsBranches | None = None,
) -> list[FileInfo | BadInputError]:
    """``inspect_file`` for every path (on the client's workers, or a thread pool, for many
    files), errors as values."""

    unique = list(dict.fromkeys(str(p) for p in paths))  # a file listed twice is opened once

    def one(path: str) -> FileInfo | BadInputError:
        try:  # the first file is the one the processor is traced on: it needs the form
            return inspect_file(
                path, treename, want_form=path == unique[0], runs_branches=runs_branches
            )
        except BadInputError as err:
            return err

    if client is not None and len(unique) > _REMOTE_INSPECT_MIN:
        found = {unique[0]: one(unique[0])}
        futures = client.map(
            _inspect_remote,
            unique[1:],
            treename=treename,
            runs_branches=runs_branches,
            pure=False,
        )
        for path, got in zip(unique[1:], client.gather(futures)):
            found[path] = BadInputError(*got) if isinstance(got, tuple) else got
    elif len(unique) < 4:
        found = dict(zip(unique, map(one, unique)))
    else:
        with ThreadPoolExecutor(min(_INSPECT_THREADS, len(unique))) as pool:
            found = dict(zip(unique, pool.map(one, unique)))
    return [found[str(p)] for p in paths]


def check_files(
    dataset: Any, skip_bad_files: bool, client: Any = None
) -> tuple[list[FileInfo], list[dict[str, str]]]:
    """Open every file of ``dataset``; return the good ones and the skipped ones (generator
    sums: from the Runs trees under the era's names, else genWeight over the events, noted).

    The generator sums are not added here: a good file may still be dropped at the branch
    check after tracing, and its sums must go with it (:func:`gen_sums_of` the files kept)."""
    good, skipped = [], []
    runs = None
    if not dataset.is_data:
        names = load_table().runs_branches(getattr(dataset, "era", None))
        runs = tuple(sorted(names.items()))
    found_all = inspect_all(dataset.files, dataset.treename, client, runs)
    for path, found in zip(dataset.files, found_all):
        try:
            if isinstance(found, BadInputError):
                raise found
            info = found
            if info.entries == 0:
                raise BadInputError(str(path), f"tree {dataset.treename!r} has 0 entries")
            if not dataset.is_data and info.gen_sums is None:
                raise BadInputError(str(path), str(info.runs_error))
        except BadInputError as err:
            if not skip_bad_files:
                raise BadInputError(err.path, f"{err.reason} (dataset {dataset.name!r})") from None
            skipped.append({"dataset": dataset.name, "file": err.path, "reason": err.reason})
            continue
        good.append(info)
    return good, skipped


def gen_sums_of(infos: Iterable[FileInfo]) -> Any:
    """Sum of the generator sums of exactly the files that are processed (None for data)."""
    sums = None
    for info in infos:
        if info.gen_sums is not None:
            sums = info.gen_sums if sums is None else sums + info.gen_sums
    return sums


def warn_sums_from_events(dataset: Any, infos: Sequence[FileInfo]) -> None:
    """Say when generator sums come from genWeight over the events, not the Runs trees."""
    from_events = sum(i.gen_sums is not None and i.gen_sums.source == EVENTS_SOURCE for i in infos)
    if from_events:
        log.warning(
            "dataset %s: %d of %d file(s) have no Runs sums: generator sums are genWeight summed "
            "over their events (right only for files that were not skimmed)",
            dataset.name,
            from_events,
            len(infos),
        )


# Per-event processing cost, in compressed bytes read: fitted on the default W-mass job, where
# a chunk takes about 2.3 us per event plus 22 ms per compressed MB (data chunks with 42 bytes
# per event take 0.5 s, W chunks with 380 bytes per event 2 s).
_COST_BYTES_PER_EVENT = 100.0


def chunk_cost(info: FileInfo, treename: str, columns: list[str], entries: int) -> float:
    """Estimated cost of a chunk of ``entries`` events: compressed bytes of the needed columns
    (decompression dominates) plus a per-event processing cost. An ordering hint only."""
    try:
        tree = open_tree(info.path, treename)
        zipped = sum(tree[c].compressed_bytes for c in columns)
    except Exception:  # a hint: never fail a plan over it
        return float(entries)
    return entries * (zipped / max(info.entries, 1) + _COST_BYTES_PER_EVENT)


def type_mismatch(info: FileInfo, first: FileInfo, columns: set[str]) -> str | None:
    """Reason why ``info`` cannot share one input layer with ``first`` (branch types differ)."""
    for c in sorted(columns):
        if info.signatures.get(c) == first.signatures.get(c):
            continue
        a, b = info.form.content(c), first.form.content(c)
        if a != b:
            return f"branch {c!r} has type {a.type} but {b.type} in {first.path}"
    return None


def chunk_steps(
    infos: Iterable[FileInfo], step_size: int, max_events: int | None
) -> tuple[dict[str, list[list[int]]], int]:
    """Entry ranges per file, stopping after ``max_events`` entries in total."""
    steps: dict[str, list[list[int]]] = {}
    total = 0
    for info in infos:
        n = info.entries
        if max_events is not None:
            n = min(n, max_events - total)
        if n <= 0:
            break
        nchunks = max(1, math.ceil(n / step_size))
        # Even chunks (as uproot does): no tiny last chunk.
        edges = [round(i * n / nchunks) for i in range(nchunks + 1)]
        steps.setdefault(info.path, []).extend([[a, b] for a, b in zip(edges[:-1], edges[1:])])
        total += n
    return steps, total
