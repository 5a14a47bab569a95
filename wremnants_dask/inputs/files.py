"""Input files: one inspection per file (entries, branches, types, generator sums) and a
per-process cache of open trees.

Opening a NanoAOD tree parses the metadata of all its branches, so both the plan (which checks
every file before building the graph) and the workers (which read chunks) keep what they opened.
Errors name the file (and the branch): :class:`BadInputError`.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import uproot

from wremnants_dask.inputs.normalization import (
    GenSums,
    NormalizationError,
    sums_from_events,
    sums_from_runs_tree,
)

__all__ = [
    "BadInputError",
    "FileInfo",
    "inspect_file",
    "is_url",
    "open_file",
    "open_tree",
    "tree_form",
]


def is_url(path: str | os.PathLike) -> bool:
    """A remote input (``root://``, ``https://``...): opened by uproot's handlers, never
    ``os.stat``-ed or made absolute. ``file://`` URLs are local files."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def open_file(path: str, **options: Any) -> Any:
    """``uproot.open`` with the handler for the path: http(s) URLs use uproot's own HTTP source
    (Python's standard library; the default fsspec one needs aiohttp), other URLs (root://)
    uproot's defaults, local files the memory map."""
    if str(path).startswith(("http://", "https://")):
        options.setdefault("handler", uproot.source.http.HTTPSource)
    return uproot.open(path, **options)


def _identity(path: str) -> tuple[str, float | int, int]:
    """Cache key of a file: local files by absolute path, mtime and size (a rewritten file is
    a new file); URLs by their text (a remote stat would cost a round trip per chunk)."""
    if is_url(path):
        return (path, 0, 0)
    st = os.stat(path)
    return (os.path.abspath(path), st.st_mtime_ns, st.st_size)


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
    gen_sums: GenSums | None = None  # from the Runs tree, if readable
    runs_error: str | None = None

    @property
    def form(self) -> ak.forms.RecordForm:
        """Awkward form of all branches. Computing it costs ~0.1 ms per branch, so it is done
        only for files whose forms are needed (the traced file, or a signature mismatch)."""
        if self._form is None:
            with open_file(self.path) as fh:
                self._form = tree_form(fh[self.treename])
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


RunsBranches = tuple[tuple[str, tuple[str, ...]], ...]  # (("sumw", names), ...), hashable


def _runs_sums(
    fh: Any, treename: str = "Events", branches: RunsBranches | None = None
) -> tuple[GenSums | None, str | None]:
    """Generator sums of an open file, or why they cannot be read.

    From the ``Runs`` tree (``branches``: candidate names per sum, from the era table); a file
    with no Runs tree, or one without the sums, gets genWeight summed over its ``treename`` tree
    (``GenSums.source`` says so). Data files have neither; their error is never raised.
    """
    names = dict(branches) if branches else None
    runs_problem = "no 'Runs' tree"
    if "Runs" in fh:
        try:
            return sums_from_runs_tree(fh["Runs"], "Runs tree", names), None
        except NormalizationError as err:
            runs_problem = str(err)
        except Exception as err:
            return None, f"cannot read the Runs tree ({type(err).__name__}: {err})"
    try:
        return sums_from_events(fh[treename], f"tree {treename!r}"), None
    except NormalizationError as err:
        return None, f"{runs_problem} and {err}: cannot get the generator sums"
    except Exception as err:
        return None, f"{runs_problem}; cannot sum genWeight ({type(err).__name__}: {err})"


# Inspections kept per process. An entry of a NanoAOD file holds the type signatures of its
# ~1500 branches, about 1 MB: unbounded, a long-lived worker or notebook grew by that much per
# distinct file ever inspected (issue 17, measured: 23 MB for 24 files). Least recently used
# entries are dropped beyond this many.
_FILE_CACHE_MAX = 256
_FILE_CACHE: OrderedDict[tuple[Any, ...], FileInfo] = OrderedDict()


def inspect_file(
    path: str, treename: str, *, want_form: bool = False, runs_branches: RunsBranches | None = None
) -> FileInfo:
    """Open ``path`` once, check the tree, and return its entries and branch names (cached).

    ``want_form``: also compute the awkward form of all branches while the file is open
    (needed for the file a dataset is traced on; other files only get cheap signatures), and
    keep the tree in this process's open-tree cache for the processor and sync execution.
    ``runs_branches``: the era's names of the Runs sums (see ``_runs_sums``).
    """
    path = str(path)
    try:
        ident = _identity(path)
    except OSError as err:
        raise BadInputError(path, f"cannot access file ({err.strerror or err})") from None
    key = (ident[0], treename, ident[1], ident[2], runs_branches)
    info = _FILE_CACHE.get(key)
    if info is not None:
        _FILE_CACHE.move_to_end(key)
        if want_form and info._form is None:
            info._form = tree_form(open_tree(info.path, treename))
        return info
    if not is_url(path) and ident[2] == 0:
        raise BadInputError(path, "file is empty (0 bytes)")
    keep_open = False
    try:
        fh = open_file(path, array_cache=None)
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
        info = FileInfo(ident[0], treename, entries, branches, signatures)
        if want_form:
            info._form = tree_form(tree)
            remember_tree(info.path, treename, tree)
            keep_open = True
        info.gen_sums, info.runs_error = _runs_sums(fh, treename, runs_branches)
    finally:
        if not keep_open:
            fh.close()
    _FILE_CACHE[key] = info
    while len(_FILE_CACHE) > _FILE_CACHE_MAX:
        _FILE_CACHE.popitem(last=False)
    return info


def tree_form(tree: Any) -> ak.forms.RecordForm:
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


_OPEN_TREES: OrderedDict[tuple[str, str, float | int, int], Any] = OrderedDict()
_OPEN_LOCK = threading.Lock()
# Open trees kept per process. Opening a NanoAOD tree parses the metadata of all its ~1500
# branches (~0.4 s); with the cache a worker pays that once per file, not once per chunk.
_OPEN_MAX = 16


def open_tree(path: str, treename: str) -> Any:
    """The tree ``treename`` of ``path``, opened once per process (keyed by absolute path and
    mtime, or by URL)."""
    ident = _identity(path)
    key = (ident[0], treename, ident[1], ident[2])
    with _OPEN_LOCK:
        tree = _OPEN_TREES.get(key)
        if tree is not None:
            _OPEN_TREES.move_to_end(key)
            return tree
    # array_cache=None: chunks are read once; caching their baskets would only hold memory.
    tree = open_file(path, array_cache=None)[treename]
    remember_tree(path, treename, tree, ident)
    return tree


def remember_tree(
    path: str, treename: str, tree: Any, ident: tuple[str, float | int, int] | None = None
) -> None:
    ident = ident or _identity(path)
    with _OPEN_LOCK:
        _OPEN_TREES[(ident[0], treename, ident[1], ident[2])] = tree
        while len(_OPEN_TREES) > _OPEN_MAX:  # dropped, not closed: a thread may still read it
            _OPEN_TREES.popitem(last=False)
