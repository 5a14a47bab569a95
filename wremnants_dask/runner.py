"""The processing engine: datasets + a Processor -> one small dask graph -> histograms.

Per dataset the graph has three layers whatever the processor does:

1. a ``dak.from_map`` input layer (one partition per chunk of ``step_size`` entries) whose
   :class:`ChunkReader` reads only the branches the processor touches with uproot, from open
   trees cached per worker process (a NanoAOD file is not re-opened for every chunk). The
   branches are found once per dataset by running the processor on an awkward typetracer (no
   data) built from the first file's branch types.
2. one blockwise ``dak.map_partitions`` layer running ``Processor.process`` on a chunk and
   returning a :class:`ChunkResult` (partial histograms, cut flows, event counts); dask fuses it
   with the input layer, so a chunk is one task.
3. a tree reduction with fan-in ``split_every``: at most ``split_every`` partial results are
   alive per reduction task, so memory stays at a few histogram copies per worker.

Before building, each file's tree is opened once (cached) to check it exists, is readable, has
entries and has the needed branches; errors name the file and branch. ``skip_bad_files=True``
drops such files and records why. For simulation the sum of generator weights is read from the
``Runs`` trees (``normalization.read_gen_sums``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import dask
import dask_awkward as dak
import hist
import numpy as np
import uproot
from dask.highlevelgraph import HighLevelGraph
from dask_awkward.lib.io.columnar import ColumnProjectionMixin

from wremnants_dask.cutflow import CutFlow
from wremnants_dask.fast_zlib import use_isal_decompression
from wremnants_dask.processor import (
    ChunkOutput,
    ChunkResult,
    Events,
    Processor,
    ProcessorError,
    event_weight_sums,
)
from wremnants_dask.tensorhist import TensorHist, is_typetracer

__all__ = [
    "BadInputError",
    "DatasetResult",
    "Plan",
    "RunResult",
    "build_plan",
    "execute",
    "run",
    "trace_columns",
    "warm_up",
]

DEFAULT_STEP_SIZE = 200_000
DEFAULT_SPLIT_EVERY = 8


class BadInputError(RuntimeError):
    """An input file cannot be used; the message names the file (and the branch)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


# ----------------------------------------------------------------------------- file checks
@dataclass
class FileInfo:
    """What the engine needs to know about one file, read once when building the graph."""

    path: str
    treename: str
    entries: int
    branches: frozenset[str]
    signatures: dict[str, tuple] = field(default_factory=dict)  # branch -> cheap type key
    _form: Any = None  # awkward form of all branches, computed on first use (see .form)
    gen_sums: Any = None  # normalization.GenSums from the Runs tree, if readable
    runs_error: str | None = None

    @property
    def form(self) -> ak.forms.RecordForm:
        """Awkward form of all branches. Computing it costs ~0.1 ms per branch, so it is done
        only for files whose forms are needed (the traced file, or a signature mismatch)."""
        if self._form is None:
            with uproot.open(self.path) as fh:
                self._form = _tree_form(fh[self.treename])
        return self._form


def _branch_signature(branch: Any) -> tuple:
    """What decides a flat branch's interpretation (leaf types, counters, streamer class).

    Equal signatures mean equal awkward forms; reading it costs ~1/30 of the interpretation.
    """
    leaves = branch.member("fLeaves")
    return (
        branch.classname,
        tuple(
            (
                leaf.classname,
                leaf.member("fTitle"),
                leaf.member("fLen", none_if_missing=True),
                leaf.member("fIsUnsigned", none_if_missing=True),
            )
            for leaf in leaves
        ),
        branch.member("fClassName", none_if_missing=True),
        branch.member("fStreamerType", none_if_missing=True),
    )


def _runs_sums(fh: Any) -> tuple[Any, str | None]:
    """Generator sums from the ``Runs`` tree of an open file (same rules as normalization)."""
    from wremnants_dask import normalization

    if "Runs" not in fh:
        return None, "no 'Runs' tree: cannot read the generator sums (needed for simulation)"
    try:
        tree = fh["Runs"]
        keys = set(tree.keys())
        chosen = {}
        for key, names in normalization._BRANCHES.items():
            name = next((n for n in names if n in keys), None)
            if name is None:
                return None, f"Runs tree has none of the branches {list(names)}"
            chosen[key] = name
        arrs = tree.arrays(list(chosen.values()), library="np")
    except Exception as err:
        return None, f"cannot read the Runs tree ({type(err).__name__}: {err})"
    return normalization.GenSums(
        sumw=float(np.sum(arrs[chosen["sumw"]], dtype=np.float64)),
        sumw2=float(np.sum(arrs[chosen["sumw2"]], dtype=np.float64)),
        count=int(np.sum(arrs[chosen["count"]], dtype=np.int64)),
    ), None


_FILE_CACHE: dict[tuple[str, str, float, int], FileInfo] = {}


def inspect_file(path: str, treename: str, *, want_form: bool = False) -> FileInfo:
    """Open ``path`` once, check the tree, and return its entries and branch names (cached).

    ``want_form``: also compute the awkward form of all branches while the file is open
    (needed for the file a dataset is traced on; other files only get cheap signatures), and
    keep the tree in this process's open-tree cache for the processor and sync execution.
    """
    try:
        st = os.stat(path)
    except OSError as err:
        raise BadInputError(path, f"cannot access file ({err.strerror or err})") from None
    key = (os.path.abspath(path), treename, st.st_mtime, st.st_size)
    info = _FILE_CACHE.get(key)
    if info is not None:
        if want_form and info._form is None:
            info._form = _tree_form(open_tree(info.path, treename))
        return info
    if st.st_size == 0:
        raise BadInputError(path, "file is empty (0 bytes)")
    keep_open = False
    try:
        fh = uproot.open(path, array_cache=None)
    except Exception as err:  # uproot raises many types for corrupt input
        raise BadInputError(
            path, f"not a readable ROOT file ({type(err).__name__}: {err})"
        ) from None
    try:
        try:
            tree = fh[treename]
        except Exception as err:
            raise BadInputError(
                path, f"no readable tree {treename!r} ({type(err).__name__}: {err})"
            ) from None
        if not hasattr(tree, "num_entries") or not hasattr(tree, "branches"):
            raise BadInputError(path, f"{treename!r} is a {type(tree).__name__}, not a TTree")
        entries = int(tree.num_entries)
        top = tree.branches
        branches = frozenset(b.name for b in top)
        signatures = {b.name: _branch_signature(b) for b in top}
        info = FileInfo(os.path.abspath(path), treename, entries, branches, signatures)
        if want_form:
            info._form = _tree_form(tree)
            _remember_tree(info.path, treename, tree)
            keep_open = True
        info.gen_sums, info.runs_error = _runs_sums(fh)
    finally:
        if not keep_open:
            fh.close()
    _FILE_CACHE[key] = info
    return info


def _tree_form(tree: Any) -> ak.forms.RecordForm:
    """Awkward form of all flat branches (as uproot.dask would read them)."""
    fields, contents = [], []
    for name in tree.keys(recursive=False):
        try:
            form = tree[name].interpretation.awkward_form(tree.file)
        except Exception:  # branches uproot cannot interpret are simply not readable
            continue
        fields.append(name)
        contents.append(form)
    return ak.forms.RecordForm(contents, fields)


# ----------------------------------------------------------------------------- input layer
# Every process that reads chunks imports this module (workers unpickle ChunkReader from it).
ZLIB_LIBRARY = use_isal_decompression()

_OPEN_TREES: OrderedDict[tuple[str, str, int, int], Any] = OrderedDict()
_OPEN_LOCK = threading.Lock()
# Open trees kept per process. Opening a NanoAOD tree parses the metadata of all its ~1500
# branches (~0.4 s); with the cache a worker pays that once per file, not once per chunk.
_OPEN_MAX = 16


def open_tree(path: str, treename: str) -> Any:
    """The tree ``treename`` of ``path``, opened once per process (keyed by path and mtime)."""
    st = os.stat(path)
    key = (path, treename, st.st_mtime_ns, st.st_size)
    with _OPEN_LOCK:
        tree = _OPEN_TREES.get(key)
        if tree is not None:
            _OPEN_TREES.move_to_end(key)
            return tree
    # array_cache=None: chunks are read once; caching their baskets would only hold memory.
    tree = uproot.open(path, array_cache=None)[treename]
    _remember_tree(path, treename, tree, st)
    return tree


def _remember_tree(path: str, treename: str, tree: Any, st: os.stat_result | None = None) -> None:
    st = st or os.stat(path)
    with _OPEN_LOCK:
        _OPEN_TREES[(path, treename, st.st_mtime_ns, st.st_size)] = tree
        while len(_OPEN_TREES) > _OPEN_MAX:  # dropped, not closed: a thread may still read it
            _OPEN_TREES.popitem(last=False)


class ChunkReader(ColumnProjectionMixin):
    """Picklable ``dak.from_map`` function: reads one ``(path, start, stop)`` entry range.

    It reads exactly ``columns`` with uproot from a per-process cache of open trees, which is
    what makes it cheaper than ``uproot.dask`` (that re-opens the file for every chunk).
    Column projection (``project_columns``) keeps dask-awkward's optimiser usable on it.
    """

    def __init__(self, treename: str, columns: Sequence[str], base_form: ak.forms.RecordForm):
        self.treename = treename
        self.columns = list(columns)
        self.base_form = base_form

    @property
    def form(self) -> ak.forms.Form:
        return _sub_form(self.base_form, self.columns)

    @property
    def common_keys(self) -> frozenset[str]:
        """The branches every chunk reads (same name as in ``uproot.dask``'s input layer)."""
        return frozenset(self.columns)

    @property
    def behavior(self) -> dict | None:
        return None

    @property
    def attrs(self) -> dict | None:
        return None

    def project_columns(self, columns: frozenset[str]) -> ChunkReader:
        keep = [c for c in self.columns if c in columns] or self.columns[:1]
        return ChunkReader(self.treename, keep, self.base_form)

    def __call__(self, part: tuple[str, int, int]) -> ak.Array:
        path, start, stop = part
        tree = open_tree(path, self.treename)
        return tree.arrays(self.columns, entry_start=start, entry_stop=stop, library="ak")


# ----------------------------------------------------------------------------- tracing
class ChunkTask:
    """The per-chunk function of the blockwise layer: run the processor on one chunk."""

    def __init__(self, processor: Processor, dataset: Any, hists: dict[str, TensorHist]) -> None:
        self.processor = processor
        self.dataset = dataset
        self.hists = hists

    def __call__(self, array: ak.Array) -> ChunkResult:
        tracing = is_typetracer(array)
        events = Events(array, tracing=tracing)
        out = ChunkOutput(
            self.dataset, {k: h.empty_like() for k, h in self.hists.items()}, tracing=tracing
        )
        self.processor.process(events, out)
        sumw, sumw2 = event_weight_sums(events, self.dataset)
        n = 0 if tracing else len(array)
        return ChunkResult(out.hists, out.cutflows, n, sumw or 0.0, sumw2 or 0.0)


def trace_columns(task: Callable[[ak.Array], Any], form: ak.forms.RecordForm) -> set[str]:
    """Branches whose data ``task`` touches, found by running it on a typetracer (no data)."""
    keyed = ak.forms.RecordForm(
        [_key_form(c, f) for f, c in zip(form.fields, form.contents)], form.fields
    )
    layout, report = ak.typetracer.typetracer_with_report(keyed)
    task(ak.Array(layout))
    return {k.rsplit("#", 1)[0] for k in report.data_touched}


def _key_form(form: ak.forms.Form, field_name: str) -> ak.forms.Form:
    counter = iter(range(1_000_000))

    def rekey(f: ak.forms.Form) -> ak.forms.Form:
        key = f"{field_name}#{next(counter)}"
        if isinstance(f, ak.forms.NumpyForm):
            return f.copy(form_key=key)
        if isinstance(f, (ak.forms.ListOffsetForm, ak.forms.ListForm, ak.forms.RegularForm)):
            return f.copy(content=rekey(f.content), form_key=key)
        if isinstance(f, ak.forms.RecordForm):
            return f.copy(contents=[rekey(c) for c in f.contents], form_key=key)
        if isinstance(
            f,
            (
                ak.forms.IndexedOptionForm,
                ak.forms.IndexedForm,
                ak.forms.ByteMaskedForm,
                ak.forms.BitMaskedForm,
                ak.forms.UnmaskedForm,
            ),
        ):
            return f.copy(content=rekey(f.content), form_key=key)
        raise TypeError(f"branch {field_name!r}: unsupported awkward form {type(f).__name__}")

    return rekey(form)


# ----------------------------------------------------------------------------- the plan
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
    # Estimated cost of the dataset's largest chunk (see _chunk_cost): the order in which a
    # distributed run starts datasets, largest chunks first, so that none ends a run alone.
    chunk_cost: float = 0.0


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


# Files opened concurrently when building the graph: overlaps the latency of remote storage
# (xrootd, network file systems); local parsing is bound by the GIL and gains little.
_INSPECT_THREADS = 8


# With a distributed client and more than this many files, the files other than the traced
# one are inspected on the workers: parsing ROOT metadata is CPU-bound Python that threads in
# one process do not parallelise, and on a cluster the workers are many and near the files.
_REMOTE_INSPECT_MIN = 16


def _inspect_remote(path: str, treename: str) -> FileInfo | tuple[str, str]:
    """``inspect_file`` on a worker: the info (no open tree, no form), or (path, reason)."""
    try:
        return inspect_file(path, treename)
    except BadInputError as err:
        return (err.path, err.reason)


def _inspect_all(
    paths: Sequence[Any], treename: str, client: Any = None
) -> list[FileInfo | BadInputError]:
    """``inspect_file`` for every path (on the client's workers, or a thread pool, for many
    files), errors as values."""

    unique = list(dict.fromkeys(str(p) for p in paths))  # a file listed twice is opened once

    def one(path: str) -> FileInfo | BadInputError:
        try:  # the first file is the one the processor is traced on: it needs the form
            return inspect_file(path, treename, want_form=path == unique[0])
        except BadInputError as err:
            return err

    if client is not None and len(unique) > _REMOTE_INSPECT_MIN:
        found = {unique[0]: one(unique[0])}
        futures = client.map(_inspect_remote, unique[1:], treename=treename, pure=False)
        for path, got in zip(unique[1:], client.gather(futures)):
            found[path] = BadInputError(*got) if isinstance(got, tuple) else got
    elif len(unique) < 4:
        found = dict(zip(unique, map(one, unique)))
    else:
        with ThreadPoolExecutor(min(_INSPECT_THREADS, len(unique))) as pool:
            found = dict(zip(unique, pool.map(one, unique)))
    return [found[str(p)] for p in paths]


def _check_files(
    dataset: Any, skip_bad_files: bool, client: Any = None
) -> tuple[list[FileInfo], list[dict[str, str]], Any]:
    """Open every file of ``dataset``; return the good ones, the skipped ones and Runs sums."""
    good, skipped, sums = [], [], None
    found_all = _inspect_all(dataset.files, dataset.treename, client)
    for path, found in zip(dataset.files, found_all):
        try:
            if isinstance(found, BadInputError):
                raise found
            info = found
            if info.entries == 0:
                raise BadInputError(str(path), f"tree {dataset.treename!r} has 0 entries")
            if not dataset.is_data:
                if info.gen_sums is None:
                    raise BadInputError(str(path), str(info.runs_error))
                s = info.gen_sums
                sums = s if sums is None else sums + s
        except BadInputError as err:
            if not skip_bad_files:
                raise BadInputError(err.path, f"{err.reason} (dataset {dataset.name!r})") from None
            skipped.append({"dataset": dataset.name, "file": err.path, "reason": err.reason})
            continue
        good.append(info)
    return good, skipped, sums


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
    workers (see ``_inspect_all``). The graph does not depend on it."""
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
        good, skipped, sums = _check_files(dataset, skip_bad_files, client)
        if not good:
            if skip_bad_files:
                whole_skipped.extend(skipped)
                continue
            raise BadInputError(str(list(dataset.files)), f"dataset {dataset.name!r} has no files")
        hists = processor.declared(dataset)
        task = ChunkTask(processor, dataset, hists)
        try:
            columns = trace_columns(task, good[0].form)
        except Exception as err:
            raise ProcessorError(
                f"{type(processor).__name__} failed while tracing its columns on dataset "
                f"{dataset.name!r} (file {good[0].path}): {type(err).__name__}: {err}. "
                "process() must be vectorised awkward code without branches on data values."
            ) from err
        if not columns:  # nothing read: still need one branch for the chunk lengths
            columns = {min(good[0].branches, key=len)}
        # Every file must have every needed branch.
        usable = []
        for info in good:
            missing = sorted(columns - info.branches)
            reason = (
                f"tree {dataset.treename!r} lacks needed branch(es) {missing}" if missing else None
            )
            if reason is None:
                reason = _type_mismatch(info, good[0], columns)
            if reason:
                if not skip_bad_files:
                    raise BadInputError(info.path, f"{reason} (dataset {dataset.name!r})")
                skipped.append({"dataset": dataset.name, "file": info.path, "reason": reason})
                continue
            usable.append(info)
        steps, n_entries = _steps(usable, step_size, max_events)
        if not steps:
            raise BadInputError(
                str(dataset.files[:1]), f"dataset {dataset.name!r}: no entries to process"
            )
        cols = sorted(columns)
        parts = [(p, a, b) for p, s in steps.items() for a, b in s]
        chunk_cost = _chunk_cost(good[0], dataset.treename, cols, max(b - a for _, a, b in parts))
        token = dask.base.tokenize(
            dataset.name, dataset.treename, parts, cols, type(processor).__name__, id(processor)
        )
        divisions = tuple(np.cumsum([0] + [b - a for _, a, b in parts]).tolist())
        events = dak.from_map(
            ChunkReader(dataset.treename, cols, _sub_form(good[0].form, cols)),
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
        hlg, root = _tree_reduce(mapped, split_every, f"reduce-{_safe(dataset.name)}-{token}")
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
            chunk_cost=chunk_cost,
        )
    if not plans:
        raise BadInputError("(all inputs)", "no dataset has a usable file")
    graph = HighLevelGraph.merge(*graphs)
    return Plan(
        graph, plans, processor, step_size, split_every, time.perf_counter() - t0, whole_skipped
    )


_META = ak.Array(ak.Array([0.0]).layout.to_typetracer(forget_length=True))

# Per-event processing cost, in compressed bytes read: fitted on the default W-mass job, where
# a chunk takes about 2.3 us per event plus 22 ms per compressed MB (data chunks with 42 bytes
# per event take 0.5 s, W chunks with 380 bytes per event 2 s).
_COST_BYTES_PER_EVENT = 100.0


def _chunk_cost(info: FileInfo, treename: str, columns: list[str], entries: int) -> float:
    """Estimated cost of a chunk of ``entries`` events: compressed bytes of the needed columns
    (decompression dominates) plus a per-event processing cost. An ordering hint only."""
    try:
        tree = open_tree(info.path, treename)
        zipped = sum(tree[c].compressed_bytes for c in columns)
    except Exception:  # a hint: never fail a plan over it
        return float(entries)
    return entries * (zipped / max(info.entries, 1) + _COST_BYTES_PER_EVENT)


def _type_mismatch(info: FileInfo, first: FileInfo, columns: set[str]) -> str | None:
    """Reason why ``info`` cannot share one input layer with ``first`` (branch types differ)."""
    for c in sorted(columns):
        if info.signatures.get(c) == first.signatures.get(c):
            continue
        a, b = info.form.content(c), first.form.content(c)
        if a != b:
            return f"branch {c!r} has type {a.type} but {b.type} in {first.path}"
    return None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)


def _sub_form(form: ak.forms.RecordForm, cols: list[str]) -> ak.forms.RecordForm:
    return ak.forms.RecordForm([form.content(c) for c in cols], cols)


def _steps(
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


def merge_results(*results: ChunkResult) -> ChunkResult:
    """Sum partial results into a new one (inputs are left untouched, as dask expects)."""
    out = results[0].copy()
    for r in results[1:]:
        out += r
    return out


def _tree_reduce(mapped: dak.Array, split_every: int, name: str) -> tuple[HighLevelGraph, tuple]:
    """Add a tree reduction layer over the partitions of ``mapped``; return graph and root key."""
    keys = list(mapped.__dask_keys__())
    layer: dict = {}
    level = 0
    while True:
        groups = [keys[i : i + split_every] for i in range(0, len(keys), split_every)]
        new_keys = []
        for i, g in enumerate(groups):
            k = (name, level, i)
            layer[k] = (merge_results, *g)
            new_keys.append(k)
        keys = new_keys
        level += 1
        if len(keys) == 1:
            break
    hlg = HighLevelGraph.from_collections(name, layer, dependencies=[mapped])
    return hlg, keys[0]


# ----------------------------------------------------------------------------- execution
def _load_on_worker(modules: Sequence[str]) -> None:
    import importlib

    from wremnants_dask import tensorhist

    for m in modules:
        importlib.import_module(m)
    tensorhist.warm_kernels()


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
    modules = ["wremnants_dask.runner"]
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


@dataclass
class DatasetResult:
    """Histograms and bookkeeping of one dataset after the run."""

    dataset: Any
    hists: dict[str, hist.Hist]
    cutflows: dict[str, CutFlow]
    n_events: int
    sumw_processed: float
    sumw2_processed: float
    columns: list[str]
    files: list[str]
    n_entries_planned: int
    gen_sums: Any = None
    lumi_pb: float | None = None
    lumi_error: str | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        """JSON-able summary (everything but the histograms)."""
        ds = self.dataset
        gs = self.gen_sums
        return {
            "name": ds.name,
            "group": ds.group,
            "is_data": bool(ds.is_data),
            "xsec_pb": ds.xsec_pb,
            "era": ds.era,
            "treename": ds.treename,
            "n_events": self.n_events,
            "sumw_processed": self.sumw_processed,
            "sumw2_processed": self.sumw2_processed,
            "gen_sumw": None if gs is None else gs.sumw,
            "gen_sumw2": None if gs is None else gs.sumw2,
            "gen_count": None if gs is None else gs.count,
            "lumi_pb": self.lumi_pb,
            "lumi_error": self.lumi_error,
            "columns": self.columns,
            "files": self.files,
            "skipped_files": self.skipped,
            "cutflows": {k: c.to_dict() for k, c in self.cutflows.items()},
        }


@dataclass
class RunResult:
    """Per-dataset results plus run information (timings, skipped files, options)."""

    datasets: dict[str, DatasetResult]
    info: dict[str, Any]

    def __getitem__(self, name: str) -> DatasetResult:
        return self.datasets[name]


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
    graph = optimize_graph(plan.graph, plan.keys)
    names = list(plan.datasets)
    if client is None:
        ctx = contextlib.nullcontext()
        if progress:
            from dask.diagnostics import ProgressBar

            ctx = ProgressBar()
        with ctx:
            results = dask.get(graph, plan.keys)
        out = {n: _dataset_result(plan.datasets[n], r, lumi) for n, r in zip(names, results)}
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
        out[name] = _dataset_result(plan.datasets[name], res, lumi)
    return out


def _dataset_result(dplan: DatasetPlan, res: ChunkResult, lumi: bool) -> DatasetResult:
    lumi_pb, lumi_error = None, None
    if lumi and dplan.dataset.is_data and getattr(dplan.dataset, "lumi_csv", None):
        lumi_pb, lumi_error = _data_lumi(dplan)
    return DatasetResult(
        dataset=dplan.dataset,
        hists={k: h.to_hist() for k, h in res.hists.items()},
        cutflows=res.cutflows,
        n_events=res.n_events,
        sumw_processed=res.sumw,
        sumw2_processed=res.sumw2,
        columns=dplan.columns,
        files=dplan.files,
        n_entries_planned=dplan.n_entries,
        gen_sums=dplan.gen_sums,
        lumi_pb=lumi_pb,
        lumi_error=lumi_error,
        skipped=dplan.skipped,
    )


def _data_lumi(dplan: DatasetPlan) -> tuple[float | None, str | None]:
    from wremnants_dask import lumi

    ds = dplan.dataset
    if dataclasses.is_dataclass(ds) and list(ds.files) != dplan.files:
        ds = dataclasses.replace(ds, files=tuple(dplan.files))
    try:
        return float(lumi.dataset_lumi(ds)), None
    except Exception as err:  # recorded in the output; the histograms are still valid
        return None, f"{type(err).__name__}: {err}"


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
