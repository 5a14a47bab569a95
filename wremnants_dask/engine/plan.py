"""The plan of a run: datasets + a Processor -> one small dask graph.

Per dataset the graph has three layers whatever the processor does:

1. a ``dak.from_map`` input layer (one partition per chunk of ``step_size`` entries) whose
   :class:`~wremnants_dask.inputs.reader.ChunkReader` reads only the branches the processor
   touches, from open trees cached per worker process. The branches are found once per dataset
   by tracing the processor on the first good file's branch types (``engine.tracing``).
2. one blockwise ``dak.map_partitions`` layer running ``Processor.process`` on a chunk and
   returning a ``ChunkResult`` (partial histograms, cut flows, event counts); dask fuses it with
   the input layer, so a chunk is one task.
3. a tree reduction with fan-in ``split_every``: at most ``split_every`` partial results are
   alive per reduction task, so memory stays at a few histogram copies per worker.

Before building, every file is inspected (``inputs.preprocess``): errors name the file and
branch, and ``skip_bad_files=True`` drops such files and records why.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import dask
import dask_awkward as dak
import numpy as np
from dask.highlevelgraph import HighLevelGraph

from wremnants_dask.engine.processor import ChunkResult, Processor, ProcessorError
from wremnants_dask.engine.tracing import ChunkTask, trace_columns
from wremnants_dask.inputs.files import BadInputError, FileInfo
from wremnants_dask.inputs.preprocess import (
    check_files,
    chunk_cost,
    chunk_steps,
    gen_sums_of,
    type_mismatch,
    warn_sums_from_events,
)
from wremnants_dask.inputs.reader import ChunkReader, sub_form

__all__ = [
    "DEFAULT_SPLIT_EVERY",
    "DEFAULT_STEP_SIZE",
    "DatasetPlan",
    "Plan",
    "build_plan",
    "tree_levels",
]

DEFAULT_STEP_SIZE = 200_000
DEFAULT_SPLIT_EVERY = 8


@dataclass
class DatasetPlan:
    dataset: Any
    files: list[str]
    steps: dict[str, list[list[int]]]
    columns: list[str]
    root_key: tuple
    n_entries: int
    gen_sums: Any = None
    skipped: list[dict[str, str]] = field(default_factory=list)
    # Estimated cost of the dataset's largest chunk (see ``inputs.preprocess.chunk_cost``): the order in which a
    # distributed run starts datasets, largest chunks first, so that none ends a run alone.
    chunk_cost: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)  # Processor.dataset_metadata
    # per file: generator sums and entries (to correct the sums for chunks lost at read time)
    file_gen_sums: dict[str, Any] = field(default_factory=dict)
    file_entries: dict[str, int] = field(default_factory=dict)
    # the reduction layer's name and the chunk keys it reduces (see ``tree_levels``)
    reduce_layer: str = ""
    chunk_keys: list[tuple] = field(default_factory=list)

    @property
    def parts(self) -> list[tuple[str, int, int]]:
        """The chunks, in graph order: (file, entry_start, entry_stop)."""
        return [(p, a, b) for p, s in self.steps.items() for a, b in s]


@dataclass
class Plan:
    """The task graph of a run and what went into it (built by :func:`build_plan`)."""

    graph: HighLevelGraph
    datasets: dict[str, DatasetPlan]
    processor: Processor
    step_size: int
    split_every: int
    build_seconds: float
    skipped_datasets: list[dict[str, str]] = field(default_factory=list)

    @property
    def keys(self) -> list[tuple]:
        return [p.root_key for p in self.datasets.values()]

    @property
    def skipped_files(self) -> list[dict[str, str]]:
        return [*self.skipped_datasets, *(s for p in self.datasets.values() for s in p.skipped)]


def build_plan(
    datasets: Sequence[Any],
    processor: Processor,
    *,
    step_size: int = DEFAULT_STEP_SIZE,
    max_events: int | None = None,
    split_every: int = DEFAULT_SPLIT_EVERY,
    skip_bad_files: bool = False,
    client: Any = None,
) -> Plan:
    """Check the inputs, trace the processor's columns and build the task graph.

    ``client``: a ``distributed.Client``; datasets with many files are then inspected on its
    workers (see ``inputs.preprocess.inspect_all``). The graph does not depend on it."""
    t0 = time.perf_counter()
    if step_size < 1:
        raise ValueError(f"step_size must be positive, got {step_size}")
    if split_every < 2:
        raise ValueError(f"split_every must be at least 2, got {split_every}")
    graphs: list[HighLevelGraph] = []
    plans: dict[str, DatasetPlan] = {}
    whole_skipped: list[dict[str, str]] = []
    for dataset in datasets:
        if dataset.name in plans:
            raise ValueError(f"dataset {dataset.name!r} given twice")
        good, skipped = check_files(dataset, skip_bad_files, client)
        if not good:
            if skip_bad_files:
                whole_skipped.extend(skipped)
                continue
            raise BadInputError(str(list(dataset.files)), f"dataset {dataset.name!r} has no files")
        hists = processor.declared(dataset)
        task = ChunkTask(processor, dataset, hists)
        ref, columns, trace_errors = _trace_first_usable(task, good, dataset, processor)
        # Every file must have every needed branch, with the traced file's types.
        usable = []
        for info in good:
            missing = sorted(columns - info.branches)
            reason = (
                f"tree {dataset.treename!r} lacks needed branch(es) {missing}" if missing else None
            )
            if reason is None:
                reason = type_mismatch(info, ref, columns) or trace_errors.get(info.path)
            if reason:
                if not skip_bad_files:
                    raise BadInputError(info.path, f"{reason} (dataset {dataset.name!r})")
                skipped.append({"dataset": dataset.name, "file": info.path, "reason": reason})
                continue
            usable.append(info)
        # The sums of the files actually processed: a file dropped above takes its sums along.
        sums = None if dataset.is_data else gen_sums_of(usable)
        if not dataset.is_data:
            warn_sums_from_events(dataset, usable)
        steps, n_entries = chunk_steps(usable, step_size, max_events)
        if not steps:
            raise BadInputError(
                str(dataset.files[:1]), f"dataset {dataset.name!r}: no entries to process"
            )
        cols = sorted(columns)
        parts = [(p, a, b) for p, s in steps.items() for a, b in s]
        cost = chunk_cost(ref, dataset.treename, cols, max(b - a for _, a, b in parts))
        token = dask.base.tokenize(
            dataset.name, dataset.treename, parts, cols, type(processor).__name__, id(processor)
        )
        divisions = tuple(np.cumsum([0] + [b - a for _, a, b in parts]).tolist())
        events = dak.from_map(
            ChunkReader(dataset.treename, cols, sub_form(ref.form, cols), skip_bad_files),
            parts,
            label=f"from-uproot-{_safe(dataset.name)}",
            token=token,
            divisions=divisions,
        )
        mapped = dak.map_partitions(
            task,
            events,
            label=f"process-{_safe(dataset.name)}",
            token=token,
            meta=_META,
        )
        reduce_layer = f"reduce-{_safe(dataset.name)}-{token}"
        hlg, root = _tree_reduce(mapped, split_every, reduce_layer)
        graphs.append(hlg)
        plans[dataset.name] = DatasetPlan(
            dataset=dataset,
            files=[p for p in steps],
            steps=steps,
            columns=cols,
            root_key=root,
            n_entries=n_entries,
            gen_sums=sums,
            skipped=skipped,
            chunk_cost=cost,
            metadata=processor.dataset_metadata(dataset),
            file_gen_sums={i.path: i.gen_sums for i in usable if i.gen_sums is not None},
            file_entries={i.path: i.entries for i in usable},
            reduce_layer=reduce_layer,
            chunk_keys=list(mapped.__dask_keys__()),
        )
    if not plans:
        raise BadInputError("(all inputs)", "no dataset has a usable file")
    graph = HighLevelGraph.merge(*graphs)
    return Plan(
        graph, plans, processor, step_size, split_every, time.perf_counter() - t0, whole_skipped
    )


def _trace_first_usable(
    task: ChunkTask, good: list[FileInfo], dataset: Any, processor: Processor
) -> tuple[FileInfo, set[str], dict[str, str]]:
    """Trace the processor's columns on the first file (in the dataset's order) on which the
    trace succeeds, i.e. the first that has every branch the processor reads.

    Tracing only on the first file made ``skip_bad_files`` depend on the file order: a file
    lacking a needed branch in first position failed the trace and aborted the run. Files
    before it whose trace failed are returned with the reason; the caller names the missing
    branches (or the type mismatch) once the columns are known. If no file can be traced the
    processor itself is at fault: the error of the first file is raised."""
    errors: dict[str, str] = {}
    first_err: tuple[FileInfo, Exception] | None = None
    for info in good:
        try:
            columns = trace_columns(task, info.form)
        except BadInputError as err:  # the input is at fault (e.g. a missing required branch)
            errors[info.path] = err.reason
            first_err = first_err or (info, err)
            continue
        except Exception as err:
            errors[info.path] = f"processor cannot run on it ({type(err).__name__}: {err})"
            first_err = first_err or (info, err)
            continue
        if not columns:  # nothing read: still need one branch for the chunk lengths
            columns = {min(info.branches, key=len)}
        return info, columns, errors
    assert first_err is not None
    info, err = first_err
    if isinstance(err, BadInputError):
        raise BadInputError(err.path, f"{err.reason} (dataset {dataset.name!r})") from None
    raise ProcessorError(
        f"{type(processor).__name__} failed while tracing its columns on dataset "
        f"{dataset.name!r} (file {info.path}): {type(err).__name__}: {err}. "
        "process() must be vectorised awkward code without branches on data values."
    ) from err


_META = ak.Array(ak.Array([0.0]).layout.to_typetracer(forget_length=True))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)


def merge_results(*results: ChunkResult) -> ChunkResult:
    """Sum partial results into a new one (inputs are left untouched, as dask expects)."""
    out = results[0].copy()
    for r in results[1:]:
        out += r
    return out


def tree_levels(keys: Sequence[Any], split_every: int, name: str) -> list[list[tuple]]:
    """The nodes of the tree reduction over ``keys`` (the chunk results), level by level: each
    node is ``(key, children)``; the last level holds the root alone. Deterministic, so that a
    checkpoint (``engine.checkpoint``) can name nodes across runs and merge in the same order."""
    levels: list[list[tuple]] = []
    keys = list(keys)
    level = 0
    while True:
        groups = [keys[i : i + split_every] for i in range(0, len(keys), split_every)]
        nodes = [((name, level, i), g) for i, g in enumerate(groups)]
        levels.append(nodes)
        keys = [k for k, _ in nodes]
        level += 1
        if len(keys) == 1:
            return levels


def _tree_reduce(mapped: dak.Array, split_every: int, name: str) -> tuple[HighLevelGraph, tuple]:
    """Add a tree reduction layer over the partitions of ``mapped``; return graph and root key."""
    levels = tree_levels(mapped.__dask_keys__(), split_every, name)
    layer = {k: (merge_results, *g) for nodes in levels for k, g in nodes}
    hlg = HighLevelGraph.from_collections(name, layer, dependencies=[mapped])
    return hlg, levels[-1][0][0]
