"""Resumable runs: partial results of a run saved per group of chunks, and reused after an
interrupt.

A run with a checkpoint folder (the histmaker uses ``OUT.partial/`` beside its output) saves the
merged result of each *group* of chunks atomically as soon as it is complete: a group is a node
of the plan's tree reduction (``plan.tree_levels``) at the lowest level that has at most
``max_groups`` nodes per dataset. The rest of the tree merges the groups exactly as an
uninterrupted run does, so a resumed run merges the same numbers in the same order and its
histograms are bit-identical.

``manifest.json`` records what the groups are made of: the code (a hash of the package's and the
processor module's sources), the run options, and per dataset its definition, the chunks of
every group with the size and modification time of their files. A run resumes only if all of it
matches; otherwise it is refused with one line saying what differs. Chunks that made a run fail
are counted in the manifest, so that one that keeps failing is reported with its file and
entry range, and ``missing_chunks`` lists what is still to do (``--list-missing``).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import pickle
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from wremnants_dask.engine.plan import Plan, merge_results, tree_levels
from wremnants_dask.engine.processor import ChunkResult
from wremnants_dask.utils.atomic import atomic_path, atomic_write_text, remove_stale_temporaries

__all__ = [
    "DEFAULT_MAX_GROUPS",
    "MANIFEST",
    "Checkpoint",
    "ResumeError",
    "missing_chunks",
    "partial_folder",
    "read_manifest",
]

#: Most saved groups per dataset: bounds the disk space (one histogram set per group) and the
#: number of files, at the price of losing up to one group's work per dataset on an interrupt.
DEFAULT_MAX_GROUPS = 16
MANIFEST = "manifest.json"
_FORMAT = 1


class ResumeError(RuntimeError):
    """A checkpoint folder cannot be used to resume this run (one line saying why)."""


def partial_folder(output: str | os.PathLike) -> Path:
    """Where the partial results of the run writing ``output`` live: ``OUTPUT.partial``."""
    out = Path(output)
    return out.with_name(out.name + ".partial")


# ------------------------------------------------------------------------- worker tasks
def save_group(path: str, *results: ChunkResult) -> ChunkResult:
    """Merge a group's results (as the plain tree does) and save the merge atomically."""
    merged = merge_results(*results)
    # Renamed into place once written: a killed process never leaves a partial group. No
    # fsync: it cost ~40% of a small run's compute time (8 groups of ~48 MB), and what it
    # protects against, a machine crash, leaves at worst an unreadable group that fails the
    # resume loudly (pickle stops on a truncated or zeroed file).
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(merged, f, protocol=pickle.HIGHEST_PROTOCOL)
    return merged


def load_group(path: str) -> ChunkResult:
    """A group saved by an earlier run."""
    with open(path, "rb") as f:
        return pickle.load(f)


# ------------------------------------------------------------------------- fingerprints
def code_fingerprint(processor: Any) -> str:
    """Hash of the sources the results depend on: the package's modules, the analyses and
    corrections installed beside it, the packaged configs, and the processor's own module
    (which may live outside them, ``-a module:Class``)."""
    import importlib

    files: list[Path] = []
    for pkg in ("wremnants_dask", "wremnants_dask.processors", "wremnants_dask.corrections"):
        for folder in getattr(importlib.import_module(pkg), "__path__", []):
            sub = "*.py" if pkg != "wremnants_dask" else "**/*.py"
            files.extend(Path(folder).glob(sub))
    with contextlib.suppress(ImportError):
        for folder in importlib.import_module("wremnants_dask.configs").__path__:
            files.extend(Path(folder).glob("*.yaml"))
    with contextlib.suppress(TypeError):
        extra = inspect.getsourcefile(type(processor))
        if extra:
            files.append(Path(extra))
    h = hashlib.sha256()
    for f in sorted({f.resolve() for f in files}):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _file_stamp(path: str) -> list:
    """Size and modification time of a local file; remote URLs by name only."""
    if "://" in path and not path.startswith("file://"):
        return [path]
    try:
        st = os.stat(path)
    except OSError:
        return [path, None, None]
    return [path, st.st_size, st.st_mtime_ns]


def _options(plan: Plan) -> dict[str, Any]:
    p = plan.processor
    return {
        "processor": f"{type(p).__module__}:{type(p).__qualname__}",
        "systematics": getattr(p, "systematics", None),
        "options": repr(sorted(getattr(p, "options", {}).items())),
        "step_size": plan.step_size,
        "split_every": plan.split_every,
        "code": code_fingerprint(p),
    }


def _checkpoint_level(levels: list[list[tuple]], max_groups: int) -> int:
    for i, nodes in enumerate(levels):
        if len(nodes) <= max_groups:
            return i
    return len(levels) - 1


def _chunks_under(levels: list[list[tuple]], level: int, index: int, parts: list) -> list:
    """The chunks (file, start, stop) below node ``index`` of ``level``, in order."""
    pos = {k: i for i, k in enumerate(_chunk_keys(levels))}
    todo = list(levels[level][index][1])
    for lv in range(level - 1, -1, -1):
        children = {k: g for k, g in levels[lv]}
        todo = [c for k in todo for c in children[k]]
    return [list(parts[pos[k]]) for k in todo]


def _chunk_keys(levels: list[list[tuple]]) -> list:
    return [c for _, g in levels[0] for c in g]


# ------------------------------------------------------------------------- the checkpoint
@dataclass
class Checkpoint:
    """The partial results of one run in ``folder``; see the module docstring.

    ``open`` checks (and writes) the manifest, ``apply`` rewrites the plan's reduction so that
    groups are saved, or loaded when an earlier run saved them."""

    folder: Path
    manifest: dict[str, Any]
    resumed: bool = False
    loaded: dict[str, list[int]] = field(default_factory=dict)  # dataset -> groups reused

    @classmethod
    def open(
        cls,
        folder: str | os.PathLike,
        plan: Plan,
        *,
        resume: bool,
        max_groups: int = DEFAULT_MAX_GROUPS,
    ) -> Checkpoint:
        """Start a checkpoint for ``plan`` in ``folder``. ``resume``: reuse the groups an
        earlier run of the same work saved there (refused with :class:`ResumeError` when the
        work differs); else whatever is there is discarded."""
        folder = Path(folder)
        if max_groups < 1:
            raise ValueError(f"max_groups must be positive, got {max_groups}")
        manifest = cls._manifest(plan, max_groups)
        old = None
        if resume:
            if not (folder / MANIFEST).exists():
                raise ResumeError(
                    f"{folder}: nothing to resume (no partial results of an earlier run)"
                )
            old = read_manifest(folder)
            _check_compatible(folder, old, manifest)
            manifest["failures"] = old.get("failures", {})
            manifest["started"] = old.get("started", manifest["started"])
            manifest["attempts"] = old.get("attempts", 1) + 1
        elif folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        cp = cls(folder, manifest, resumed=resume)
        cp._write_manifest()
        return cp

    @staticmethod
    def _manifest(plan: Plan, max_groups: int) -> dict[str, Any]:
        datasets = {}
        for name, dp in plan.datasets.items():
            levels = tree_levels(dp.chunk_keys, plan.split_every, dp.reduce_layer)
            level = _checkpoint_level(levels, max_groups)
            parts = dp.parts
            datasets[name] = {
                "definition": repr(dp.dataset),
                "columns": dp.columns,
                "files": [_file_stamp(f) for f in dp.files],
                "level": level,
                "groups": [
                    _chunks_under(levels, level, i, parts) for i in range(len(levels[level]))
                ],
            }
        return {
            "format": _FORMAT,
            "options": _options(plan),
            "datasets": datasets,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "attempts": 1,
            "failures": {},
        }

    def group_path(self, dataset: str, index: int) -> Path:
        return self.folder / _safe(dataset) / f"group{index:05d}.pkl"

    def apply(self, plan: Plan) -> Plan:
        """``plan`` with its reductions saving every group, and loading those already saved
        (their chunks are then not computed: ``execute`` culls the graph to its roots)."""
        layers = dict(plan.graph.layers)
        for name, dp in plan.datasets.items():
            levels = tree_levels(dp.chunk_keys, plan.split_every, dp.reduce_layer)
            level = self.manifest["datasets"][name]["level"]
            (self.folder / _safe(name)).mkdir(exist_ok=True)
            layer: dict = {}
            done = []
            for i, (key, children) in enumerate(levels[level]):
                path = self.group_path(name, i)
                remove_stale_temporaries(path)  # left by writers killed mid-save
                if self.resumed and path.exists():
                    layer[key] = (load_group, str(path))
                    done.append(i)
                else:
                    layer[key] = (save_group, str(path), *children)
            for nodes in levels[level + 1 :]:
                layer.update({k: (merge_results, *g) for k, g in nodes})
            # below the saved level: only what the groups still to compute need
            needed = {c for k, g in levels[level] if layer[k][0] is save_group for c in g}
            for lv in range(level - 1, -1, -1):
                for k, g in levels[lv]:
                    if k in needed:
                        layer[k] = (merge_results, *g)
                needed = {c for k, g in levels[lv] if k in needed for c in g}
            layers[dp.reduce_layer] = MaterializedLayer(layer)
            self.loaded[name] = done
        graph = HighLevelGraph(layers, dict(plan.graph.dependencies))
        return Plan(
            graph,
            plan.datasets,
            plan.processor,
            plan.step_size,
            plan.split_every,
            plan.build_seconds,
            plan.skipped_datasets,
        )

    def groups_to_save(self, dataset: str) -> int:
        """Groups of ``dataset`` this run computes and saves (after :meth:`apply`)."""
        d = self.manifest["datasets"].get(dataset)
        return 0 if d is None else len(d["groups"]) - len(self.loaded.get(dataset, []))

    def summary(self) -> dict[str, Any]:
        """For the output's provenance: whether and from what the run was resumed."""
        groups = self.manifest["datasets"]
        reused = {n: len(v) for n, v in self.loaded.items() if v}
        chunks = sum(len(groups[n]["groups"][i]) for n, v in self.loaded.items() for i in v)
        total = sum(len(c) for d in groups.values() for c in d["groups"])
        return {
            "resumed": self.resumed,
            "partial_folder": str(self.folder),
            "first_started": self.manifest["started"],
            "attempts": self.manifest["attempts"],
            "groups_reused": reused,
            "chunks_reused": chunks,
            "chunks_total": total,
        }

    def record_failure(self, dataset: str, part: tuple[str, int, int], error: str) -> int:
        """Count a run that failed on this chunk; returns how many runs did."""
        key = f"{part[0]}:{part[1]}-{part[2]}"
        rec = self.manifest["failures"].setdefault(
            key,
            {"dataset": dataset, "file": part[0], "entry_start": part[1], "entry_stop": part[2]},
        )
        rec["runs"] = rec.get("runs", 0) + 1
        rec["error"] = error
        self._write_manifest()
        return rec["runs"]

    def chunk_of_key(self, plan: Plan, key: Any) -> tuple[str, tuple[str, int, int]] | None:
        """The dataset and chunk of a graph key (a chunk task's), if it is one."""
        for name, dp in plan.datasets.items():
            for k, part in zip(dp.chunk_keys, dp.parts):
                if k == key or str(k) == str(key):
                    return name, part
        return None

    def finish(self) -> None:
        """The output is written: the partial results are no longer needed."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def _write_manifest(self) -> None:
        atomic_write_text(self.folder / MANIFEST, json.dumps(self.manifest, indent=1))


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ResumeError(f"{path}: unreadable manifest of partial results ({err})") from None


def _check_compatible(folder: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse to resume work that differs from what the saved groups were made of."""
    what = {
        "code": "the code changed since",
        "processor": "the analysis differs from",
        "systematics": "--no-systematics differs from",
        "options": "the analysis options differ from",
        "step_size": "--step-size differs from",
        "split_every": "--split-every differs from",
    }
    if old.get("format") != _FORMAT:
        raise ResumeError(f"{folder}: partial results of another format, cannot resume")
    for key, text in what.items():
        a, b = old["options"].get(key), new["options"].get(key)
        if a != b:
            raise ResumeError(
                f"{folder}: cannot resume: {text} the interrupted run ({key} {a} -> {b}); "
                "rerun without --resume to start again"
            )
    for name, d in new["datasets"].items():
        o = old["datasets"].get(name)
        if o is None:
            continue  # a dataset the earlier run did not have: computed in full
        for key, text in (
            ("definition", "its definition (files, cross section...)"),
            ("columns", "the branches read"),
            ("files", "its input files (size or modification time)"),
            ("groups", "its chunks (entry ranges)"),
            ("level", "its grouping"),
        ):
            if o[key] != d[key]:
                detail = ""
                if key == "files":
                    changed = [b[0] for a, b in zip(o[key], d[key]) if a != b]
                    detail = f" ({changed[0] if changed else 'the list of files'})"
                raise ResumeError(
                    f"{folder}: cannot resume: dataset {name!r}: {text} changed since the "
                    f"interrupted run{detail}; rerun without --resume to start again"
                )


def missing_chunks(folder: str | os.PathLike) -> dict[str, Any]:
    """What an interrupted run left to do: per dataset the chunks of the groups not saved, and
    the chunks that made runs fail (with how many runs)."""
    folder = Path(folder)
    m = read_manifest(folder)
    out: dict[str, Any] = {"datasets": {}, "failures": list(m.get("failures", {}).values())}
    for name, d in m["datasets"].items():
        missing = [
            chunk
            for i, chunks in enumerate(d["groups"])
            if not (folder / _safe(name) / f"group{i:05d}.pkl").exists()
            for chunk in chunks
        ]
        out["datasets"][name] = {
            "chunks_missing": missing,
            "chunks_total": sum(len(c) for c in d["groups"]),
        }
    return out


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)
