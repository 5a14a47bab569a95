"""MC normalisation: cross section x luminosity / sum of generator weights.

The sum of weights must come from the ``Runs`` tree (written before any skim or selection),
never from the events that happen to be in the file, or a skimmed sample would be normalised to
its selected events. NanoAOD up to v6 names the branches with a trailing underscore
(``genEventSumw_``); later versions and the synthetic generator drop it; both are read (the
names per era come from configs/nanoaod_eras.yaml). A simulation file without a ``Runs`` tree
(e.g. the 2015 CMS Open Data NanoAOD) falls back to summing genWeight over its Events tree,
which is right only for a file that was not skimmed; ``GenSums.source`` records which way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "GEN_SUM_BRANCHES",
    "GenSums",
    "UNREAD",
    "NormalizationError",
    "corrected_for_lost",
    "dataset_gen_sums",
    "info_scale",
    "mc_scale",
    "read_gen_sums",
    "scale_factor",
    "sums_from_events",
    "sums_from_runs_tree",
]

#: ``GenSums.source`` of sums read from the Events tree because a file has no Runs sums.
EVENTS_SOURCE = "Events genWeight (no Runs tree)"

# (canonical name, accepted spellings in order of preference)
GEN_SUM_BRANCHES = {
    "sumw": ("genEventSumw", "genEventSumw_"),
    "sumw2": ("genEventSumw2", "genEventSumw2_"),
    "count": ("genEventCount", "genEventCount_"),
}


#: ``kind`` of an entry range left unread on purpose (``--max-events``), see corrected_for_lost
UNREAD = "unread"


class NormalizationError(ValueError):
    """The generator sums cannot be read, or the normalisation is undefined."""


@dataclass(frozen=True)
class GenSums:
    """Sum of genWeight, of genWeight^2 and the number of generated events over some files."""

    sumw: float
    sumw2: float
    count: int
    n_files: int = 1
    # where the sums come from: "Runs tree (<sumw branch>)" or EVENTS_SOURCE; "; "-joined when
    # files of a dataset differ
    source: str = "Runs tree"

    def __add__(self, other: GenSums) -> GenSums:
        sources = dict.fromkeys([*self.source.split("; "), *other.source.split("; ")])
        return GenSums(
            self.sumw + other.sumw,
            self.sumw2 + other.sumw2,
            self.count + other.count,
            self.n_files + other.n_files,
            "; ".join(sources),
        )

    @property
    def effective_entries(self) -> float:
        """(sum w)^2 / sum w^2: the statistical power of the weighted sample."""
        return self.sumw**2 / self.sumw2 if self.sumw2 > 0 else 0.0


def sums_from_runs_tree(
    tree: Any, where: str, branches: Mapping[str, Sequence[str]] | None = None
) -> GenSums:
    """Generator sums of one open ``Runs`` tree; ``branches``: candidate names of sumw, sumw2 and
    count (default ``GEN_SUM_BRANCHES``, both spellings); ``where`` names the tree in errors.
    Shared by :func:`read_gen_sums` and the engine's file inspection."""
    branches = branches or GEN_SUM_BRANCHES
    available = set(tree.keys())
    chosen = {}
    for key in ("sumw", "sumw2", "count"):
        names = tuple(branches.get(key) or GEN_SUM_BRANCHES[key])
        name = next((n for n in names if n in available), None)
        if name is None:
            raise NormalizationError(
                f"{where} has none of the branches {list(names)} (is this a data file?)"
            )
        chosen[key] = name
    arrays = tree.arrays(list(chosen.values()), library="np")
    vals = {k: arrays[n] for k, n in chosen.items()}
    return GenSums(
        sumw=float(np.sum(vals["sumw"], dtype=np.float64)),
        sumw2=float(np.sum(vals["sumw2"], dtype=np.float64)),
        count=int(np.sum(vals["count"], dtype=np.int64)),
        n_files=1,
        source=f"Runs tree ({chosen['sumw']})",
    )


def sums_from_events(tree: Any, where: str) -> GenSums:
    """Generator sums of a simulation file without Runs sums: genWeight summed over its Events
    tree ``tree`` (count = entries). Right only if the file holds every generated event."""
    if "genWeight" not in tree.keys():
        raise NormalizationError(f"{where} has no genWeight branch to sum")
    w = np.asarray(tree["genWeight"].array(library="np"), dtype=np.float64)
    return GenSums(
        sumw=float(w.sum()),
        sumw2=float((w * w).sum()),
        count=int(w.size),
        n_files=1,
        source=EVENTS_SOURCE,
    )


def _read_one(path: str | os.PathLike, treename: str) -> GenSums:
    import uproot

    try:
        fh = uproot.open(path)
    except (OSError, ValueError) as err:
        raise NormalizationError(f"cannot open {path}: {err}") from None
    with fh:
        if treename not in fh:
            raise NormalizationError(
                f"{path} has no {treename!r} tree: cannot read the generator sums "
                "(simulation files need it; data files have no generator sums)"
            )
        return sums_from_runs_tree(fh[treename], f"{path}:{treename}")


def read_gen_sums(files: Iterable[str | os.PathLike], treename: str = "Runs") -> GenSums:
    """Sum genEventSumw, genEventSumw2 and genEventCount over all Runs entries of all files."""
    files = list(files)
    if not files:
        raise NormalizationError("no files given to read the generator sums from")
    total = _read_one(files[0], treename)
    for f in files[1:]:
        total = total + _read_one(f, treename)
    return total


def scale_factor(xsec_pb: float, lumi_pb: float, sumw: float) -> float:
    """Per-event weight factor xsec * lumi / sum(genWeight) that normalises MC to data."""
    if not np.isfinite(sumw) or sumw <= 0:
        raise NormalizationError(f"sum of generator weights must be positive, got {sumw}")
    if xsec_pb is None or not np.isfinite(xsec_pb) or xsec_pb <= 0:
        raise NormalizationError(f"cross section must be positive, got {xsec_pb}")
    if not np.isfinite(lumi_pb) or lumi_pb < 0:
        raise NormalizationError(f"luminosity must be non-negative, got {lumi_pb}")
    return float(xsec_pb) * float(lumi_pb) / float(sumw)


def info_scale(info: Mapping[str, Any], lumi_pb: float) -> float:
    """``scale_factor`` of a simulated dataset from its histogram-file info (``xsec_pb``;
    ``gen_sumw``, else ``sumw_processed`` for inputs without generator sums)."""
    sumw = info.get("gen_sumw") or info.get("sumw_processed")
    if not sumw or not info.get("xsec_pb"):
        raise NormalizationError("lacks xsec_pb or a sum of generator weights")
    return scale_factor(info["xsec_pb"], lumi_pb, sumw)


def dataset_gen_sums(dataset: Any) -> GenSums | None:
    """Generator sums of a :class:`~wremnants_dask.datasets.Dataset`; ``None`` for data."""
    if dataset.is_data:
        return None
    try:
        return read_gen_sums(dataset.files)
    except NormalizationError as err:
        raise NormalizationError(f"dataset {dataset.name!r}: {err}") from None


def mc_scale(dataset: Any, lumi_pb: float, sums: GenSums | None = None) -> float:
    """Scale factor of a dataset: 1 for data, xsec * lumi / sum(genWeight) for simulation."""
    if dataset.is_data:
        return 1.0
    if dataset.xsec_pb is None:
        raise NormalizationError(f"simulation dataset {dataset.name!r} has no cross section")
    sums = sums if sums is not None else dataset_gen_sums(dataset)
    try:
        return scale_factor(dataset.xsec_pb, lumi_pb, sums.sumw)
    except NormalizationError as err:
        raise NormalizationError(f"dataset {dataset.name!r}: {err}") from None


def corrected_for_lost(
    file_sums: Mapping[str, GenSums],
    file_entries: Mapping[str, int],
    lost: Sequence[Mapping[str, Any]],
    treename: str = "Events",
) -> tuple[GenSums, list[dict[str, Any]]]:
    """Generator sums of the events that were actually processed, when chunks were lost at
    read time (``--skip-bad-files``): returns the corrected dataset sums and one record per
    file that lost chunks (how its sums were scaled).

    Why: the normalisation weight is xsec * lumi / sum(genWeight) where the sum must run over
    the *same* generated events whose selected part fills the histograms. A lost chunk removes
    its events from the histograms; keeping its generator weights in the denominator would
    scale the sample down by the lost fraction, silently. So each file's Runs sums are scaled
    by the fraction of that file's genWeight sum that was processed::

        sumw_used = sumw_Runs * (1 - sum_lost(w) / sum_file(w))

    (sumw2 likewise with w^2, the count with entries). For a file that was not skimmed
    (sum_file(w) equals the Runs sum) this is exactly the sum of genWeight over the processed
    events; for a skimmed file it is the unbiased estimate of the generated weight behind the
    processed events, assuming the skim efficiency does not depend on the entry number. Using
    weights rather than the entry fraction follows the random excess of negative weights in
    the lost chunk, so a sample with negative weights stays exact. If genWeight itself cannot
    be read in a lost range (its basket is the corrupt one), that file falls back to the
    fraction of entries, an estimate with the same expectation, and the record says so.

    A chunk with ``"kind": UNREAD`` was not read on purpose (beyond ``--max-events``): the
    same correction applies (the sums must match the events processed), the record counts it
    as ``events_unread`` instead of ``events_lost``."""
    by_file: dict[str, list[tuple[int, int]]] = {}
    n_unread: dict[str, int] = {}
    for c in lost:
        a, b = int(c["entry_start"]), int(c["entry_stop"])
        by_file.setdefault(str(c["file"]), []).append((a, b))
        if c.get("kind") == UNREAD:
            n_unread[str(c["file"])] = n_unread.get(str(c["file"]), 0) + b - a
    records: list[dict[str, Any]] = []
    total: GenSums | None = None
    for path, sums in file_sums.items():
        ranges = by_file.get(str(path))
        if ranges:
            sums, rec = _scale_file(path, sums, int(file_entries[path]), ranges, treename)
            unread = n_unread.get(str(path), 0)
            rec["events_lost"] -= unread
            rec["events_unread"] = unread
            records.append(rec)
        total = sums if total is None else total + sums
    if total is None:
        raise NormalizationError("no generator sums to correct")
    return total, records


def _scale_file(
    path: str, sums: GenSums, entries: int, ranges: list[tuple[int, int]], treename: str
) -> tuple[GenSums, dict[str, Any]]:
    """One file's sums scaled to its processed events (see :func:`corrected_for_lost`)."""
    n_lost = sum(b - a for a, b in ranges)
    f_entries = n_lost / entries if entries > 0 else 1.0
    f_w = f_w2 = f_entries
    method, why = "file not processed", None
    if n_lost < entries:  # else nothing of the file was processed: no need to read it
        f_w, f_w2, method, why = _weight_fractions(path, treename, ranges, f_entries)
    scaled = GenSums(
        sumw=sums.sumw * (1.0 - f_w),
        sumw2=sums.sumw2 * (1.0 - f_w2),
        count=round(sums.count * (1.0 - f_entries)),
        n_files=sums.n_files,
        source=sums.source,
    )
    record = {
        "file": str(path),
        "events_lost": n_lost,
        "entries": entries,
        "method": method,
        "fraction_sumw_lost": f_w,
        "gen_sumw_file": sums.sumw,
        "gen_sumw_used": scaled.sumw,
    }
    if why:
        record["fallback_reason"] = why
    return scaled, record


def _weight_fractions(
    path: str, treename: str, ranges: list[tuple[int, int]], f_entries: float
) -> tuple[float, float, str, str | None]:
    """Lost fractions of sum(w) and sum(w^2) of one file, or the entry fraction and why."""
    f_w = f_w2 = f_entries
    method = "entry fraction"
    why = None
    try:
        import uproot

        with uproot.open(path) as fh:
            w = np.asarray(fh[treename]["genWeight"].array(library="np"), dtype=np.float64)
        lost_mask = np.zeros(w.size, dtype=bool)
        for a, b in ranges:
            lost_mask[a:b] = True
        sw, sw2 = float(w.sum()), float((w * w).sum())
        if sw > 0 and sw2 > 0:
            f_w = float(w[lost_mask].sum()) / sw
            f_w2 = float((w[lost_mask] ** 2).sum()) / sw2
            method = "genWeight fraction"
        else:
            why = f"sum of genWeight in the file is {sw}"
    except Exception as err:  # the genWeight basket is the corrupt one, or the file is gone
        why = f"genWeight unreadable ({type(err).__name__}: {' '.join(str(err).split())})"
    return f_w, f_w2, method, why
