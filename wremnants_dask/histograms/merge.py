"""Merge histogram files of disjoint datasets of one analysis into one file.

Why: runs over configurations that share most of their samples (the W-mass bias scan: one
simulation, new pseudo-data per point) fill the shared samples once and only the new ones per
configuration. Each dataset's histograms and bookkeeping are filled independently of the other
datasets, so the merged file holds, per dataset, exactly what one histmaker run over all of them
writes (HDF5 groups copied byte for byte), and ``setup_fit`` builds the same fit input from it.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import h5py

from wremnants_dask.histograms.histio import FORMAT, HistFile
from wremnants_dask.utils.atomic import atomic_write_bytes
from wremnants_dask.utils.provenance import dumps, make_metadata

__all__ = ["MergeError", "merge_hist_files"]

#: Metadata keys that must agree between the merged files (what the fit setup reads).
_SHARED_KEYS = ("analysis", "analysis_metadata")


class MergeError(ValueError):
    """The files cannot be merged; the message names the file and the key or dataset."""


def merge_hist_files(paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Write the datasets of ``paths`` (histmaker outputs of one analysis, no dataset in two
    files) into ``out`` atomically. The top metadata keeps the shared analysis keys and the
    inputs' metadata under ``inputs``."""
    if not paths:
        raise MergeError("merge: no input files")
    metas, owner = [], {}
    for p in paths:
        with HistFile(p) as hf:
            if hf.format != FORMAT:
                raise MergeError(f"{p}: format {hf.format!r}; merge writes {FORMAT} only")
            metas.append(hf.metadata)
            for ds in hf.datasets:
                if ds in owner:
                    raise MergeError(f"{p}: dataset {ds!r} is also in {owner[ds]}")
                owner[ds] = p
    first = metas[0]
    for p, m in zip(paths[1:], metas[1:]):
        for key in _SHARED_KEYS:
            if json.dumps(m.get(key), sort_keys=True) != json.dumps(first.get(key), sort_keys=True):
                raise MergeError(f"{p}: metadata {key!r} differs from {paths[0]}'s")
    meta = make_metadata(
        input_files=[str(p) for p in paths],
        inputs_metadata=metas,
        stage="merge",
        **{k: first[k] for k in _SHARED_KEYS if k in first},
    )
    buf = io.BytesIO()
    with h5py.File(buf, "w") as dst:
        dst.attrs["format"] = FORMAT
        dst.attrs["metadata"] = dumps(meta)
        top = dst.create_group("datasets")
        for p in paths:
            with h5py.File(p, "r") as src:
                for ds in src["datasets"]:
                    src.copy(src["datasets"][ds], top, name=ds)
    atomic_write_bytes(out, buf.getbuffer(), suffix=".hdf5.tmp")
    return Path(out)
