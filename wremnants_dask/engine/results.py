"""What a run returns: per dataset its histograms (``hist.Hist``) and bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import hist

from wremnants_dask.engine.cutflow import CutFlow
from wremnants_dask.engine.plan import DatasetPlan
from wremnants_dask.engine.processor import ChunkResult
from wremnants_dask.inputs.lumi import processed_lumi
from wremnants_dask.inputs.normalization import corrected_for_lost

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


def dataset_result(dplan: DatasetPlan, res: ChunkResult, lumi: bool) -> DatasetResult:
    lumi_pb, lumi_error = None, None
    if lumi and dplan.dataset.is_data and getattr(dplan.dataset, "lumi_csv", None):
        lumi_pb, lumi_error = processed_lumi(dplan.dataset, dplan.files)
    lost = sorted(res.lost, key=lambda c: (c["file"], c["entry_start"]))
    gen_sums, correction = dplan.gen_sums, []
    if lost and gen_sums is not None:  # normalise to the events actually processed
        gen_sums, correction = corrected_for_lost(
            dplan.file_gen_sums, dplan.file_entries, lost, dplan.dataset.treename
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
    )
