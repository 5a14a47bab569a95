"""Integrated luminosity from brilcalc CSVs and CMS golden JSON masks.

Data are normalised to the luminosity of the (run, lumi section) pairs actually processed and
certified, so the tools here work on deduplicated pairs: a lumi section read twice (several
files, several events) counts once, one outside the golden JSON never counts, and one that the
CSV does not know about is an error by default rather than a silent underestimate.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "LumiError",
    "LumiMask",
    "LumiReport",
    "LumiTable",
    "apply_lumi_mask",
    "certified_lumi",
    "dataset_lumi",
    "integrated_lumi",
    "lumi_report",
    "lumi_of_processed",
    "read_brilcalc_csv",
    "read_golden_json",
    "read_run_lumi_pairs",
    "unique_pairs",
]

Column = Literal["recorded", "delivered"]
OnMissing = Literal["raise", "ignore"]


class LumiError(ValueError):
    """A luminosity input is malformed, or does not cover the lumi sections asked for."""


def _pair_keys(runs: Any, lumis: Any) -> np.ndarray:
    """Pack (run, lumi section) into one sortable uint64 key: run in the high 32 bits."""
    r = np.asarray(runs, dtype=np.uint64).ravel()
    l = np.asarray(lumis, dtype=np.uint64).ravel()
    if r.shape != l.shape:
        raise LumiError(f"run and lumi arrays differ in length: {r.shape[0]} != {l.shape[0]}")
    return (r << np.uint64(32)) | l


def _unpack(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (keys >> np.uint64(32)).astype(np.uint32), (keys & np.uint64(0xFFFFFFFF)).astype(
        np.uint32
    )


def unique_pairs(runs: Any, lumis: Any) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicated, sorted (run, lumi section) pairs from per-event arrays."""
    return _unpack(np.unique(_pair_keys(runs, lumis)))


# ----------------------------------------------------------------------------- brilcalc CSV


@dataclass(frozen=True)
class LumiTable:
    """Per lumi section luminosity (/pb) from a brilcalc ``--byls`` CSV, sorted by (run, ls)."""

    run: np.ndarray
    ls: np.ndarray
    delivered: np.ndarray
    recorded: np.ndarray
    source: str = ""

    @property
    def keys(self) -> np.ndarray:
        return _pair_keys(self.run, self.ls)

    def runs(self) -> set[int]:
        return set(np.unique(self.run).tolist())

    def total(self, column: Column = "recorded") -> float:
        return float(getattr(self, column).sum())


def _int_field(text: str, path: Path, lineno: int, what: str) -> int:
    """First number of 'a:b' (brilcalc writes run:fill and ls:cmsls), as an int."""
    head = text.strip().split(":", 1)[0]
    try:
        return int(head)
    except ValueError:
        raise LumiError(f"{path}:{lineno}: cannot read the {what} from {text!r}") from None


def read_brilcalc_csv(path: str | os.PathLike) -> LumiTable:
    """Parse a brilcalc per-lumisection CSV.

    Lines starting with '#' (header, column names, summary footer) are skipped. The columns are
    found by name from the '#run:fill,ls,...' header when present, else the standard brilcalc
    order is assumed. ``ls`` may be 'ls' or 'ls:cmsls'; the first number is used, as brilcalc
    writes the same number twice whenever CMS recorded. Duplicate (run, ls) rows are an error.
    """
    path = Path(path)
    if not path.is_file():
        raise LumiError(f"brilcalc CSV not found: {path}")
    cols = {"run": 0, "ls": 1, "delivered": 5, "recorded": 6}
    runs: list[int] = []
    lss: list[int] = []
    delivered: list[float] = []
    recorded: list[float] = []
    with path.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip():
                continue
            if row[0].lstrip().startswith("#"):
                names = [c.strip().lstrip("#").strip() for c in row]
                if names and names[0].startswith("run"):
                    cols = _columns_from_header(names, path, lineno)
                continue
            try:
                runs.append(_int_field(row[cols["run"]], path, lineno, "run"))
                lss.append(_int_field(row[cols["ls"]], path, lineno, "lumi section"))
                delivered.append(float(row[cols["delivered"]]))
                recorded.append(float(row[cols["recorded"]]))
            except (IndexError, ValueError) as err:
                raise LumiError(f"{path}:{lineno}: malformed brilcalc row {row!r}: {err}") from None
    if not runs:
        raise LumiError(f"brilcalc CSV {path} has no lumi section rows")
    run_a = np.asarray(runs, dtype=np.uint32)
    ls_a = np.asarray(lss, dtype=np.uint32)
    order = np.argsort(_pair_keys(run_a, ls_a), kind="stable")
    table = LumiTable(
        run=run_a[order],
        ls=ls_a[order],
        delivered=np.asarray(delivered, dtype=np.float64)[order],
        recorded=np.asarray(recorded, dtype=np.float64)[order],
        source=str(path),
    )
    keys = table.keys
    dup = np.flatnonzero(keys[1:] == keys[:-1])
    if dup.size:
        r, l = int(table.run[dup[0]]), int(table.ls[dup[0]])
        raise LumiError(f"brilcalc CSV {path} lists run {r} lumi section {l} more than once")
    return table


def _columns_from_header(names: list[str], path: Path, lineno: int) -> dict[str, int]:
    def find(prefix: str) -> int:
        for i, n in enumerate(names):
            if n.split("(")[0].split(":")[0].strip().lower() == prefix:
                return i
        raise LumiError(f"{path}:{lineno}: header has no '{prefix}' column: {names}")

    return {k: find(k) for k in ("run", "ls", "delivered", "recorded")}


# ----------------------------------------------------------------------------- golden JSON


class LumiMask:
    """A golden JSON: for each run the certified, inclusive [first_ls, last_ls] ranges.

    Calling it on per-event run and luminosityBlock arrays (numpy, awkward or dask-awkward)
    returns a boolean mask, vectorised with one binary search over the sorted range starts.
    """

    def __init__(self, ranges: Mapping[int | str, Sequence[Sequence[int]]], source: str = ""):
        self.source = source
        where = f" in {source}" if source else ""
        starts: list[int] = []
        ends: list[int] = []
        self.ranges: dict[int, list[tuple[int, int]]] = {}
        for run_key, run_ranges in ranges.items():
            try:
                run = int(run_key)
                pairs = sorted((int(a), int(b)) for a, b in run_ranges)
            except (TypeError, ValueError):
                raise LumiError(
                    f"golden JSON{where}: run {run_key!r} must map to [[first, last], ...]"
                ) from None
            for (a, b), nxt in zip(pairs, [*pairs[1:], None]):
                if a > b or a < 0:
                    raise LumiError(f"golden JSON{where}: run {run}: bad range [{a}, {b}]")
                if nxt is not None and nxt[0] <= b:
                    raise LumiError(f"golden JSON{where}: run {run}: overlapping ranges")
            self.ranges[run] = pairs
            starts += [(run << 32) | a for a, _ in pairs]
            ends += [(run << 32) | b for _, b in pairs]
        order = np.argsort(np.asarray(starts, dtype=np.uint64), kind="stable")
        self._starts = np.asarray(starts, dtype=np.uint64)[order]
        self._ends = np.asarray(ends, dtype=np.uint64)[order]

    @property
    def runs(self) -> set[int]:
        return set(self.ranges)

    def contains(self, runs: Any, lumis: Any) -> np.ndarray:
        """Boolean numpy mask: is each (run, lumi section) pair certified?"""
        keys = _pair_keys(runs, lumis)
        if self._starts.size == 0:
            return np.zeros(keys.shape, dtype=bool)
        idx = np.searchsorted(self._starts, keys, side="right") - 1
        ok = idx >= 0
        return ok & (keys <= self._ends[np.where(ok, idx, 0)])

    def __call__(self, runs: Any, lumis: Any) -> Any:
        return apply_lumi_mask(self, runs, lumis)

    def __repr__(self) -> str:
        n = sum(len(v) for v in self.ranges.values())
        return f"LumiMask({len(self.ranges)} runs, {n} ranges, source={self.source!r})"


def read_golden_json(path: str | os.PathLike) -> LumiMask:
    """Parse a CMS golden JSON file (run -> list of [first_ls, last_ls])."""
    path = Path(path)
    if not path.is_file():
        raise LumiError(f"golden JSON not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise LumiError(f"golden JSON {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise LumiError(f"golden JSON {path} must be an object run -> [[first, last], ...]")
    return LumiMask(data, source=str(path))


def apply_lumi_mask(mask: LumiMask, runs: Any, lumis: Any) -> Any:
    """Certified-event mask for numpy, awkward or dask-awkward run/luminosityBlock arrays.

    Returns the same flavour as the input: numpy in, numpy out; awkward in, awkward out;
    dask-awkward in, a lazy dask-awkward boolean array (one task per partition).
    """
    try:
        import dask_awkward as dak
    except ImportError:  # pragma: no cover - dask-awkward is a dependency
        dak = None
    if dak is not None and isinstance(runs, dak.Array):
        return dak.map_partitions(_apply_awkward, runs, lumis, mask=mask, label="lumimask")
    import awkward as ak

    if isinstance(runs, ak.Array):
        return _apply_awkward(runs, lumis, mask=mask)
    return mask.contains(runs, lumis)


def _apply_awkward(runs: Any, lumis: Any, *, mask: LumiMask) -> Any:
    import awkward as ak

    typetracer = ak.backend(runs) == "typetracer"
    r = ak.to_numpy(ak.typetracer.length_zero_if_typetracer(runs))
    l = ak.to_numpy(ak.typetracer.length_zero_if_typetracer(lumis))
    out = ak.Array(mask.contains(r, l))
    if typetracer:
        out = ak.Array(out.layout.to_typetracer(forget_length=True))
    return out


# ----------------------------------------------------------------------------- integration


@dataclass(frozen=True)
class LumiReport:
    """Integrated luminosity of processed pairs, with what was excluded or not found."""

    lumi_pb: float
    n_pairs: int  # distinct processed (run, ls) pairs
    n_certified: int  # of which inside the golden JSON (all of them without a mask)
    n_counted: int  # of which found in the CSV and summed
    missing_runs: tuple[int, ...] = ()  # certified runs absent from the CSV
    missing_pairs: tuple[tuple[int, int], ...] = field(default=(), repr=False)
    column: str = "recorded"

    @property
    def complete(self) -> bool:
        return not self.missing_pairs


def lumi_report(
    runs: Any,
    lumis: Any,
    table: LumiTable,
    mask: LumiMask | None = None,
    *,
    column: Column = "recorded",
) -> LumiReport:
    """Luminosity of the distinct (run, ls) pairs given, within ``mask``, summed from ``table``."""
    keys = np.unique(_pair_keys(runs, lumis))
    n_pairs = int(keys.size)
    if mask is not None:
        r, l = _unpack(keys)
        keys = keys[mask.contains(r, l)]
    table_keys = table.keys
    pos = np.searchsorted(table_keys, keys)
    found = pos < table_keys.size
    found[found] = table_keys[pos[found]] == keys[found]
    values = getattr(table, column)
    missing_r, missing_l = _unpack(keys[~found])
    known_runs = np.unique(table.run)
    return LumiReport(
        lumi_pb=float(values[pos[found]].sum()),
        n_pairs=n_pairs,
        n_certified=int(keys.size),
        n_counted=int(found.sum()),
        missing_runs=tuple(int(x) for x in np.setdiff1d(np.unique(missing_r), known_runs)),
        missing_pairs=tuple(zip(missing_r.tolist(), missing_l.tolist())),
        column=column,
    )


def integrated_lumi(
    runs: Any,
    lumis: Any,
    table: LumiTable | str | os.PathLike,
    mask: LumiMask | str | os.PathLike | None = None,
    *,
    column: Column = "recorded",
    on_missing: OnMissing = "raise",
) -> float:
    """Integrated luminosity (/pb) of the processed, certified (run, ls) pairs.

    ``runs``/``lumis`` are per-event (or per-pair) arrays; duplicates count once. Pairs outside
    ``mask`` are excluded. A certified pair that the CSV lacks raises :class:`LumiError`
    naming the CSV and the runs (absent runs first), unless ``on_missing="ignore"``.
    """
    table = table if isinstance(table, LumiTable) else read_brilcalc_csv(table)
    if mask is not None and not isinstance(mask, LumiMask):
        mask = read_golden_json(mask)
    report = lumi_report(runs, lumis, table, mask, column=column)
    if on_missing == "raise" and not report.complete:
        raise LumiError(_missing_message(report, table))
    return report.lumi_pb


def _missing_message(report: LumiReport, table: LumiTable) -> str:
    src = table.source or "the brilcalc table"
    parts = []
    if report.missing_runs:
        runs = ", ".join(map(str, report.missing_runs[:10]))
        more = " ..." if len(report.missing_runs) > 10 else ""
        parts.append(f"run(s) {runs}{more} absent from {src}")
    absent = set(report.missing_runs)
    partial: dict[int, list[int]] = {}
    for r, l in report.missing_pairs:
        if r not in absent:
            partial.setdefault(r, []).append(l)
    for r, ls in list(partial.items())[:5]:
        parts.append(f"run {r}: {len(ls)} lumi section(s) absent from {src} (e.g. ls {ls[0]})")
    return (
        f"cannot compute the luminosity: {len(report.missing_pairs)} certified (run, ls) pair(s) "
        "have no luminosity: " + "; ".join(parts)
    )


def certified_lumi(
    table: LumiTable | str | os.PathLike,
    mask: LumiMask | str | os.PathLike | None,
    *,
    column: Column = "recorded",
) -> float:
    """Total luminosity (/pb) of the CSV rows inside the golden JSON (all rows without one)."""
    table = table if isinstance(table, LumiTable) else read_brilcalc_csv(table)
    values = getattr(table, column)
    if mask is None:
        return float(values.sum())
    if not isinstance(mask, LumiMask):
        mask = read_golden_json(mask)
    return float(values[mask.contains(table.run, table.ls)].sum())


# ----------------------------------------------------------------------------- data files


def read_run_lumi_pairs(
    files: Iterable[str | os.PathLike], treename: str = "Events", step_size: str = "50 MB"
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (run, luminosityBlock) pairs present in the given NanoAOD files."""
    import uproot

    from wremnants_dask.inputs.files import open_file

    keys: list[np.ndarray] = []
    for f in files:
        try:  # open_file: URLs through uproot's handlers (never ``path:tree`` string parsing)
            tree = open_file(str(f))[treename]
        except (OSError, KeyError, uproot.KeyInFileError) as err:
            raise LumiError(f"cannot open tree {treename!r} in {f}: {err}") from None
        missing = {"run", "luminosityBlock"} - set(tree.keys())
        if missing:
            raise LumiError(f"{f}:{treename} lacks branch(es) {sorted(missing)}")
        for chunk in tree.iterate(["run", "luminosityBlock"], library="np", step_size=step_size):
            keys.append(np.unique(_pair_keys(chunk["run"], chunk["luminosityBlock"])))
    if not keys:
        return np.zeros(0, np.uint32), np.zeros(0, np.uint32)
    return _unpack(np.unique(np.concatenate(keys)))


def dataset_lumi(
    dataset: Any, *, column: Column = "recorded", on_missing: OnMissing = "raise"
) -> float:
    """Integrated luminosity (/pb) of a data :class:`~wremnants_dask.datasets.Dataset`.

    Reads the distinct (run, ls) pairs from its files, keeps those in its golden JSON and sums
    its brilcalc CSV over them.
    """
    if not getattr(dataset, "is_data", False):
        raise LumiError(f"dataset {dataset.name!r} is simulation; luminosity is a data property")
    if not dataset.lumi_csv:
        raise LumiError(f"data dataset {dataset.name!r} has no lumi_csv")
    runs, lumis = read_run_lumi_pairs(dataset.files, dataset.treename)
    return integrated_lumi(
        runs, lumis, dataset.lumi_csv, dataset.golden_json, column=column, on_missing=on_missing
    )


@dataclass(frozen=True)
class ProcessedLumi:
    """Luminosity of the lumi sections a run processed completely, with what was left out."""

    lumi_pb: float | None
    error: str | None = None
    n_sections: int = 0  # distinct (run, ls) pairs processed completely (before the mask)
    # (run, ls) pairs of which some entries were processed and others not (lost chunk, or
    # beyond --max-events): left out of the luminosity; their processed events are counted
    partial_sections: tuple[tuple[int, int], ...] = ()
    events_in_partial: int = 0
    # files skipped whole whose lumi sections were read back (all taken as unprocessed)
    skipped_files: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        """JSON-able summary for the output metadata."""
        return {
            "n_complete_sections": self.n_sections,
            "n_partial_sections": len(self.partial_sections),
            "partial_sections": [list(p) for p in self.partial_sections[:100]],
            "events_in_partial_sections": self.events_in_partial,
            "skipped_files_read_back": list(self.skipped_files),
        }


def _read_pairs(tree: Any, ranges: Sequence[tuple[int, int]], where: str) -> np.ndarray:
    """Per-entry (run, ls) keys of the entries in ``ranges`` of an open Events tree; adjacent
    ranges are read in one go, and one by one again if that fails, to name the bad one."""
    ranges = sorted((a, b) for a, b in ranges if b > a)
    merged: list[list[int]] = []
    for a, b in ranges:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    out = [np.zeros(0, np.uint64)]
    for a, b in merged:
        try:
            out.append(_read_range(tree, a, b, where))
        except LumiError:
            out.extend(_read_range(tree, c, d, where) for c, d in ranges if a <= c and d <= b)
    return np.concatenate(out)


def _read_range(tree: Any, a: int, b: int, where: str) -> np.ndarray:
    try:
        arr = tree.arrays(["run", "luminosityBlock"], entry_start=a, entry_stop=b, library="np")
    except Exception as err:  # a damaged run/luminosityBlock basket
        raise LumiError(
            f"cannot read run/luminosityBlock of {where} entries [{a}, {b}): "
            f"{type(err).__name__}: {' '.join(str(err).split())}"
        ) from None
    return _pair_keys(arr["run"], arr["luminosityBlock"])


def _complement(ranges: Sequence[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    out, pos = [], 0
    for a, b in sorted(ranges):
        if a > pos:
            out.append((pos, a))
        pos = max(pos, b)
    if pos < n:
        out.append((pos, n))
    return out


def _skipped_file_pairs(path: str, tree_name: str) -> np.ndarray:
    """(run, ls) keys of every entry of a file skipped whole; LumiError naming it if unread."""
    import uproot

    from wremnants_dask.inputs.files import open_file

    why = "it was skipped and its lumi sections cannot be read, so the sections it shares "
    why += "with processed files are unknown"
    try:
        tree = open_file(path)[tree_name]
        n = int(tree.num_entries)
    except Exception as err:  # not ROOT, no such tree, gone: any reason is the same answer
        raise LumiError(f"{path}: {why} ({type(err).__name__}: {err})") from None
    if n == 0:
        return np.zeros(0, np.uint64)
    if not {"run", "luminosityBlock"} <= set(tree.keys()):
        raise LumiError(f"{path}: {why} (no run/luminosityBlock branches)")
    try:
        return _read_pairs(tree, [(0, n)], f"{path}:{tree_name}")
    except (LumiError, uproot.KeyInFileError) as err:
        raise LumiError(f"{path}: {why} ({err})") from None


def lumi_of_processed(
    dataset: Any,
    processed: Mapping[str, Sequence[tuple[int, int]]],
    entries: Mapping[str, int],
    *,
    skipped: Sequence[str] = (),
    column: Column = "recorded",
) -> ProcessedLumi:
    """Certified luminosity of the lumi sections whose events were *all* processed.

    ``processed``: per file the entry ranges whose events reached the histograms (the planned
    chunks minus those lost at read time); ``entries``: the entry count of every file of the
    run, including files of which nothing was read (beyond ``--max-events``).

    Why whole lumi sections: the luminosity is known per lumi section only; the events of a
    section whose chunks were partly lost, or cut by ``--max-events``, correspond to an unknown
    part of its recorded luminosity. Counting such a section as fully recorded over-counts the
    luminosity and pulls data below the simulation, silently; it is the physicist's convention
    (as for jobs that did not finish their lumi sections) to leave a partially processed section
    out of the luminosity, and the report names it. Its processed events stay in the histograms
    (they cannot be taken out after the fill), so the data yield is biased up by at most
    ``events_in_partial`` / processed events, which the output records: a handful of lumi
    sections at chunk boundaries out of thousands in a real run.

    ``skipped``: the dataset's files skipped whole (``--skip-bad-files``: a missing branch, a
    type mismatch...). None of their events were processed, so every section they hold is at
    most partial: their run/luminosityBlock are read back like an unprocessed range. A
    skipped file whose sections cannot be read (not a ROOT file, no Events tree, damaged
    run/luminosityBlock) makes the luminosity unknown: a section it shares with a processed
    file would be counted whole, so no luminosity is given, with that file named.

    Never raises: a failure (unreadable run/luminosityBlock in an unprocessed range, a
    certified section absent from the CSV) gives ``lumi_pb=None`` and the reason.
    """
    tree_name = dataset.treename
    try:
        import uproot

        from wremnants_dask.inputs.files import open_file

        done: list[np.ndarray] = [np.zeros(0, np.uint64)]
        undone: list[np.ndarray] = [np.zeros(0, np.uint64)]
        for path, n in entries.items():
            ranges = [(int(a), int(b)) for a, b in processed.get(path, ())]
            rest = _complement(ranges, int(n))
            try:
                tree = open_file(str(path))[tree_name]
            except (OSError, KeyError, uproot.KeyInFileError) as err:
                raise LumiError(f"cannot open tree {tree_name!r} in {path}: {err}") from None
            where = f"{path}:{tree_name}"
            done.append(_read_pairs(tree, ranges, where))
            undone.append(np.unique(_read_pairs(tree, rest, where)))
        for path in skipped:
            undone.append(np.unique(_skipped_file_pairs(str(path), tree_name)))
        done_keys = np.concatenate(done)
        partial = np.intersect1d(np.unique(done_keys), np.concatenate(undone))
        complete = np.setdiff1d(np.unique(done_keys), partial)
        r, l = _unpack(complete)
        value = integrated_lumi(
            r, l, dataset.lumi_csv, dataset.golden_json, column=column, on_missing="raise"
        )
        pr, pl = _unpack(partial)
        return ProcessedLumi(
            lumi_pb=float(value),
            n_sections=int(complete.size),
            partial_sections=tuple(zip(pr.tolist(), pl.tolist())),
            events_in_partial=int(np.isin(done_keys, partial).sum()),
            skipped_files=tuple(str(p) for p in skipped),
        )
    except Exception as err:  # recorded in the output; the histograms are still valid
        return ProcessedLumi(None, f"{type(err).__name__}: {err}")
