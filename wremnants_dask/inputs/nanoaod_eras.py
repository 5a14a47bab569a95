"""Which branch of a NanoAOD file holds each input, per era (configs/nanoaod_eras.yaml).

CMS NanoAOD renamed and added branches between versions (v4 to v15) and eras (2015 to Run 3):
trigger paths, ID flags, the MET flavour, prefiring weights, the ``Runs`` sums. The table maps
each input (named as in NanoAODv6) to candidates per era; this module loads it, resolves the
candidates against a file's branch list and evaluates the chosen ones on a chunk. The analyses
keep reading ``cols["Muon_looseId"]`` whatever the file calls it; the file checks read the
``Runs`` sums under the era's names. ``WREMNANTS_ERAS`` (a path) replaces the packaged table.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wremnants_dask.inputs.files import BadInputError

DEFAULT_TABLE = "nanoaod_eras.yaml"
#: Keys of an era entry that are not inputs.
META_KEYS = frozenset({"note"})

# A candidate: a branch name, or ("all" | "any", (candidates...)).
Expr = str | tuple[str, tuple["Expr", ...]]


#: Runs-tree sums (GenSums field -> table key) and the names used where the table has none.
RUNS_KEYS = {"sumw": "runs_sumw", "sumw2": "runs_sumw2", "count": "runs_count"}


class EraTableError(ValueError):
    """The era table is malformed, or lacks an era; the message names the table file."""


class MissingInputError(BadInputError):
    """A required input has no branch in a file; the one-line message says what to configure."""


# ------------------------------------------------------------------------------ candidates
def _parse(raw: Any, where: str) -> Expr:
    if isinstance(raw, str) and raw:
        return raw
    if isinstance(raw, Mapping) and len(raw) == 1:
        ((op, args),) = raw.items()
        if op in ("all", "any") and isinstance(args, list) and args:
            return (op, tuple(_parse(a, f"{where}.{op}") for a in args))
    raise EraTableError(
        f"{where}: a candidate is a branch name or {{all: [...]}} / {{any: [...]}}, got {raw!r}"
    )


def leaves(expr: Expr) -> list[str]:
    """The branches a candidate reads, in order, without repeats."""
    if isinstance(expr, str):
        return [expr]
    out: list[str] = []
    for sub in expr[1]:
        out += [b for b in leaves(sub) if b not in out]
    return out


def describe(expr: Expr) -> str:
    """Readable form of a candidate: ``Muon_isPFcand & (Muon_isGlobal | Muon_isTracker)``."""
    if isinstance(expr, str):
        return expr
    op, args = expr
    sep = " & " if op == "all" else " | "
    parts = [describe(a) if isinstance(a, str) else f"({describe(a)})" for a in args]
    return sep.join(parts)


def evaluate(expr: Expr, get: Callable[[str], Any]) -> Any:
    """The candidate's value on a chunk: the branch, or the AND/OR of its parts."""
    if isinstance(expr, str):
        return get(expr)
    op, args = expr
    value = evaluate(args[0], get)
    for sub in args[1:]:
        other = evaluate(sub, get)
        value = (value & other) if op == "all" else (value | other)
    return value


# ------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Resolution:
    """The chosen candidate of each input of one dataset (absent optional inputs left out)."""

    era: str
    exprs: Mapping[str, Expr]
    notes: tuple[str, ...] = ()

    def has(self, name: str) -> bool:
        return name in self.exprs

    def branch_of(self, name: str) -> str | None:
        """The single branch an input is read from (None if absent or an expression)."""
        expr = self.exprs.get(name)
        return expr if isinstance(expr, str) else None

    def mapping(self) -> dict[str, str]:
        """Input -> readable candidate, for printing and provenance."""
        return {k: describe(v) for k, v in self.exprs.items()}


@dataclass(frozen=True)
class EraTable:
    """Per-era candidates (defaults merged in) of every input, loaded from a YAML table."""

    path: str
    eras: Mapping[str, Mapping[str, tuple[Expr, ...]]]
    notes: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, tuple[Expr, ...]] = field(default_factory=dict)

    def runs_branches(self, era: str | None) -> dict[str, tuple[str, ...]]:
        """Candidate names of the ``Runs`` sums (sumw, sumw2, count) for ``era``; an era the
        table does not list (e.g. a processor that never asks for one) gets the defaults."""
        entry = self.eras.get(str(era), self.defaults)
        out = {}
        for key, table_key in RUNS_KEYS.items():
            names = entry.get(table_key, ())
            if not all(isinstance(n, str) for n in names):
                raise EraTableError(f"{self.path}: {table_key} must list branch names")
            out[key] = tuple(names)  # type: ignore[arg-type]
        return out

    def candidates(self, era: str, name: str) -> tuple[Expr, ...]:
        """Candidates of input ``name`` in ``era`` (empty if the table does not know it)."""
        return self.entry(era).get(name, ())

    def entry(self, era: str) -> Mapping[str, tuple[Expr, ...]]:
        got = self.eras.get(str(era))
        if got is None:
            raise EraTableError(
                f"era {era!r} is not in the NanoAOD era table {self.path} (known: "
                f"{', '.join(sorted(self.eras))}): add an entry under 'eras'"
            )
        return got

    def resolve(
        self,
        era: str,
        branches: Iterable[str],
        required: Sequence[str],
        optional: Sequence[str] = (),
        *,
        file: str = "?",
    ) -> Resolution:
        """Pick, for each input, the first candidate whose branches all exist in ``branches``.

        A required input without one raises :class:`MissingInputError` (one line: the branch,
        the file, the table key to set); an optional one is left out of the resolution.
        """
        entry = self.entry(era)
        names = frozenset(branches)
        exprs: dict[str, Expr] = {}
        missing: list[str] = []
        notes: list[str] = []
        for name in dict.fromkeys([*required, *optional]):
            cands = entry.get(name, (name,))
            chosen = next((c for c in cands if all(b in names for b in leaves(c))), None)
            if chosen is None:
                if name in required:
                    missing.append(name)
                continue
            exprs[name] = chosen
            # noted when it differs from the default (NanoAODv6, 2018) way of reading it
            usual = self.defaults.get(name, (name,))[0]
            if chosen != usual:
                notes.append(f"{name} read as {describe(chosen)}")
        if missing:
            tried = "; ".join(
                f"{m} (tried {', '.join(describe(c) for c in entry.get(m, (m,)))})" for m in missing
            )
            raise MissingInputError(
                file,
                f"no branch for required input {tried} in era {era!r}: set "
                f"eras.{era!r}.{missing[0]} in {self.path} to the branch this file uses",
            )
        return Resolution(str(era), exprs, tuple(notes))


def _load(path: str) -> EraTable:
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as err:
        raise EraTableError(f"cannot read the NanoAOD era table {path}: {err}") from err
    if not isinstance(raw, Mapping) or not isinstance(raw.get("eras"), Mapping):
        raise EraTableError(f"{path}: needs a mapping 'eras' (and optionally 'defaults')")
    unknown = set(raw) - {"defaults", "eras"}
    if unknown:
        raise EraTableError(f"{path}: unknown top-level key(s) {sorted(unknown)}")

    def entry(section: Any, where: str) -> tuple[dict[str, tuple[Expr, ...]], str | None]:
        if section is None:
            return {}, None
        if not isinstance(section, Mapping):
            raise EraTableError(f"{where}: must be a mapping, got {type(section).__name__}")
        out: dict[str, tuple[Expr, ...]] = {}
        note = section.get("note")
        if note is not None and not isinstance(note, str):
            raise EraTableError(f"{where}.note: must be a string")
        for key, value in section.items():
            if key in META_KEYS:
                continue
            if not isinstance(value, list) or not value:
                raise EraTableError(f"{where}.{key}: must be a non-empty list of candidates")
            out[str(key)] = tuple(_parse(v, f"{where}.{key}") for v in value)
        return out, note

    defaults, _ = entry(raw.get("defaults"), f"{path}: defaults")
    eras: dict[str, dict[str, tuple[Expr, ...]]] = {}
    notes: dict[str, str] = {}
    for era, section in raw["eras"].items():
        if not isinstance(era, str):
            raise EraTableError(f"{path}: era {era!r} must be a string (quote it)")
        own, note = entry(section, f"{path}: eras.{era}")
        eras[era] = {**defaults, **own}
        if note:
            notes[era] = note
    return EraTable(path, eras, notes, defaults)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float) -> EraTable:
    return _load(path)


def default_table_path() -> str:
    """``$WREMNANTS_ERAS`` if set, else the packaged table (configs/nanoaod_eras.yaml)."""
    env = os.environ.get("WREMNANTS_ERAS")
    if env:
        return str(Path(env).expanduser().resolve())
    return str(importlib.resources.files("wremnants_dask.configs").joinpath(DEFAULT_TABLE))


def load_table(path: str | os.PathLike | None = None) -> EraTable:
    """The era table at ``path`` (default: see ``default_table_path``), parsed once per version."""
    p = str(Path(path).expanduser().resolve()) if path else default_table_path()
    try:
        mtime = os.stat(p).st_mtime
    except OSError as err:
        raise EraTableError(f"cannot read the NanoAOD era table {p}: {err}") from err
    return _load_cached(p, mtime)
