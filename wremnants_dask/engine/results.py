"""What a run returns: per dataset its histograms (``hist.Hist``) and bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import hist

from wremnants_dask.engine.cutflow import CutFlow
from wremnants_dask.engine.plan import DatasetPlan
from wremnants_dask.engine.processor import ChunkResult
from wremnants_dask.inputs.lumi import lumi_of_processed
from wremnants_dask.inputs.normalization import UNREAD, corrected_for_lost

__all__ = ["DatasetResult", "RunResult", "dataset_result"]


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
    metadata: dict[str, Any] = field(default_factory=dict)  # Processor.dataset_metadata
    # chunks skipped at read time (--skip-bad-files): file, entry range, branch, reason
    lost: list[dict] = field(default_factory=list)
    # files whose generator sums were scaled to the processed events because chunks were lost
    # (``inputs.normalization.corrected_for_lost``); gen_sums is then the corrected sum
    gen_sums_correction: list[dict] = field(default_factory=list)
    # entries of the run's files left unread on purpose (--max-events)
    n_entries_unread: int = 0
    # data: complete and partially processed lumi sections (``inputs.lumi.lumi_of_processed``)
    lumi_sections: dict[str, Any] = field(default_factory=dict)

    @property
    def n_events_lost(self) -> int:
        return sum(c["events"] for c in self.lost)

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
            "gen_sums_source": None if gs is None else gs.source,
            "gen_sums_lost_correction": self.gen_sums_correction,
            "processor_metadata": self.metadata,
            "lumi_pb": self.lumi_pb,
            "lumi_error": self.lumi_error,
            "lumi_sections": self.lumi_sections,
            "n_entries_unread": self.n_entries_unread,
            "columns": self.columns,
            "files": self.files,
            "skipped_files": self.skipped,
            "lost_chunks": self.lost,
            "n_events_lost": self.n_events_lost,
            "cutflows": {k: c.to_dict() for k, c in self.cutflows.items()},
        }


@dataclass
class RunResult:
    """Per-dataset results plus run information (timings, skipped files, options)."""

    datasets: dict[str, DatasetResult]
    info: dict[str, Any]

    def __getitem__(self, name: str) -> DatasetResult:
        return self.datasets[name]


def unread_ranges(steps: dict[str, list[list[int]]], entries: dict[str, int]) -> list[dict]:
    """Entry ranges of the run's files outside every planned chunk (``--max-events``), as
    chunk records of kind ``UNREAD`` for ``corrected_for_lost``."""
    out = []
    for path, n in entries.items():
        pos = 0
        for a, b in sorted((int(a), int(b)) for a, b in steps.get(path, ())):
            if a > pos:
                out.append({"file": path, "entry_start": pos, "entry_stop": a, "kind": UNREAD})
            pos = max(pos, b)
        if pos < n:
            out.append({"file": path, "entry_start": pos, "entry_stop": int(n), "kind": UNREAD})
    return out


def processed_ranges(
    steps: dict[str, list[list[int]]], lost: list[dict]
) -> dict[str, list[tuple[int, int]]]:
    """Per file the planned chunks minus those lost at read time (lost chunks are whole
    chunks of the plan, so removing them by equality is exact)."""
    gone = {(str(c["file"]), int(c["entry_start"]), int(c["entry_stop"])) for c in lost}
    return {
        p: [(int(a), int(b)) for a, b in s if (p, int(a), int(b)) not in gone]
        for p, s in steps.items()
    }


def dataset_result(dplan: DatasetPlan, res: ChunkResult, lumi: bool) -> DatasetResult:
    lumi_pb, lumi_error, sections = None, None, {}
    lost = sorted(res.lost, key=lambda c: (c["file"], c["entry_start"]))
    entries = dplan.file_entries or {p: max(b for _, b in s) for p, s in dplan.steps.items()}
    unread = unread_ranges(dplan.steps, entries)
    if lumi and dplan.dataset.is_data and getattr(dplan.dataset, "lumi_csv", None):
        # the lumi sections actually processed, whole (see lumi_of_processed)
        # files skipped whole hold no processed event: their sections are at most partial
        skipped = [str(s["file"]) for s in dplan.skipped if s.get("file")]
        acc = lumi_of_processed(
            dplan.dataset, processed_ranges(dplan.steps, lost), entries, skipped=skipped
        )
        lumi_pb, lumi_error, sections = (
            acc.lumi_pb,
            acc.error,
            acc.record() if acc.error is None else {},
        )
    gen_sums, correction = dplan.gen_sums, []
    if (lost or unread) and gen_sums is not None:  # normalise to the events actually processed
        gen_sums, correction = corrected_for_lost(
            dplan.file_gen_sums, dplan.file_entries, lost + unread, dplan.dataset.treename
        )
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
        gen_sums=gen_sums,
        lumi_pb=lumi_pb,
        lumi_error=lumi_error,
        skipped=dplan.skipped,
        lost=lost,
        metadata=dplan.metadata,
        gen_sums_correction=correction,
        n_entries_unread=sum(c["entry_stop"] - c["entry_start"] for c in unread),
        lumi_sections=sections,
    )
