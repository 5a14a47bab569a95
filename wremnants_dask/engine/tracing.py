"""The per-chunk task and column tracing: which branches a processor reads is found once per
dataset by running it on an awkward typetracer (no data), so only those are ever read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import awkward as ak

from wremnants_dask.engine.processor import (
    ChunkOutput,
    ChunkResult,
    Events,
    Processor,
    event_weight_sums,
)
from wremnants_dask.engine.tensorhist import TensorHist, is_typetracer
from wremnants_dask.inputs.reader import LOST_ATTR, PART_ATTR

__all__ = ["ChunkTask", "trace_columns"]


class ChunkTask:
    """The per-chunk function of the blockwise layer: run the processor on one chunk."""

    def __init__(self, processor: Processor, dataset: Any, hists: dict[str, TensorHist]) -> None:
        self.processor = processor
        self.dataset = dataset
        self.hists = hists

    def __call__(self, array: ak.Array) -> ChunkResult:
        tracing = is_typetracer(array)
        lost = None if tracing else array.attrs.get(LOST_ATTR)
        if lost:  # the reader skipped this chunk (--skip-bad-files): nothing to process
            return ChunkResult({k: h.empty_like() for k, h in self.hists.items()}, lost=lost)
        events = Events(array, tracing=tracing)
        out = ChunkOutput(
            self.dataset, {k: h.empty_like() for k, h in self.hists.items()}, tracing=tracing
        )
        try:
            self.processor.process(events, out)
        except Exception as err:
            # which chunk: raised on a worker, it reaches the client with its attributes
            part = None if tracing else array.attrs.get(PART_ATTR)
            if part is not None and not hasattr(err, PART_ATTR):
                setattr(err, PART_ATTR, tuple(part))
            raise
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
