"""HDF5 output of a run: per dataset its histograms and bookkeeping, plus run provenance.

Layout (format ``wremnants_dask.histio/2``)::

    /                      attrs: format, metadata (JSON, provenance.make_metadata)
    /datasets/<name>/      attrs: info (JSON: group, is_data, xsec_pb, era, lumi_pb, sums
                                  of weights, event counts, files, skipped files, cut flows)
    /datasets/<name>/hists/<hist>/   datasets: values [, variances] (flow bins included)
                                     attrs: axes (JSON list of UHI axes), storage, name, label

Axes are stored as JSON (the UHI axis dicts of ``histograms.axes``) so a histogram comes back as
a ``hist.Hist`` with the same axes, labels and storage; histograms are read lazily one at a time.
Files are written atomically. Version 1 (private axis dicts) is still read.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import hist
import numpy as np

from wremnants_dask.histograms.axes import axes_to_json, axis_from_histio_v1, axis_from_uhi
from wremnants_dask.utils.atomic import atomic_write_bytes
from wremnants_dask.utils.provenance import dumps

FORMAT = "wremnants_dask.histio/2"
#: Formats the reader accepts -> how their axes are read (version 1: private axis dicts).
_AXIS_READERS = {FORMAT: axis_from_uhi, "wremnants_dask.histio/1": axis_from_histio_v1}

__all__ = ["FORMAT", "HistFile", "write_hists", "write_run"]


# ----------------------------------------------------------------------------- writing
def _storage_name(h: hist.Hist) -> str:
    st = h.storage_type
    if st is hist.storage.Weight:
        return "weight"
    if st is hist.storage.Double:
        return "double"
    if st is hist.storage.Int64:
        return "int64"
    raise ValueError(f"histogram {h.name!r}: unsupported storage {st.__name__}")


def _write_hist(group: h5py.Group, name: str, h: hist.Hist, compression: str | None) -> None:
    g = group.create_group(name)
    storage = _storage_name(h)
    view = h.view(flow=True)
    kw = {"compression": compression} if compression else {}
    if storage == "weight":
        g.create_dataset("values", data=np.ascontiguousarray(view.value), **kw)
        g.create_dataset("variances", data=np.ascontiguousarray(view.variance), **kw)
    else:
        g.create_dataset("values", data=np.ascontiguousarray(view), **kw)
    g.attrs["axes"] = axes_to_json(h.axes)
    g.attrs["storage"] = storage
    g.attrs["name"] = h.name or name
    g.attrs["label"] = h.label or ""


def write_hists(
    path: str | os.PathLike,
    datasets: Mapping[str, tuple[Mapping[str, hist.Hist], Mapping[str, Any]]],
    metadata: Mapping[str, Any],
    *,
    compression: str | None = "lzf",
) -> Path:
    """Write ``{dataset: (hists, info)}`` and the run ``metadata`` to ``path`` atomically.

    The HDF5 file is built in memory and written with one plain write: HDF5 writing directly
    onto a disk that fills up segfaulted at interpreter exit (issue 17: rc 139 after "No space
    left on device"), where a plain write fails with an ``OSError`` naming the path."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["metadata"] = dumps(dict(metadata))
        top = f.create_group("datasets")
        for dname, (hists, info) in datasets.items():
            g = top.create_group(dname)
            g.attrs["info"] = dumps(dict(info))
            hg = g.create_group("hists")
            for hname, h in hists.items():
                _write_hist(hg, hname, h, compression)
    atomic_write_bytes(path, buf.getbuffer(), suffix=".hdf5.tmp")
    return Path(path)


def write_run(path: str | os.PathLike, result: Any, metadata: Mapping[str, Any], **kw: Any) -> Path:
    """Write a ``engine.RunResult`` with the run ``metadata`` (its ``info`` is added)."""
    meta = dict(metadata)
    meta.setdefault("run", result.info)
    payload = {name: (r.hists, r.info()) for name, r in result.datasets.items()}
    return write_hists(path, payload, meta, **kw)


# ----------------------------------------------------------------------------- reading
class HistFile:
    """Lazy reader: ``.datasets``, ``.metadata``, ``.info(ds)``, ``.names(ds)``, ``.get(ds, name)``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as err:
            raise OSError(f"{self.path}: cannot open as HDF5 ({err})") from None
        fmt = self._f.attrs.get("format")
        if fmt not in _AXIS_READERS:
            self._f.close()
            raise ValueError(
                f"{self.path}: not a histogram file of format {FORMAT} (found {fmt!r})"
            )
        self.format: str = fmt
        self._axis_from_dict = _AXIS_READERS[fmt]

    def __enter__(self) -> HistFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    @property
    def metadata(self) -> dict[str, Any]:
        return json.loads(self._f.attrs["metadata"])

    @property
    def datasets(self) -> list[str]:
        return list(self._f["datasets"].keys())

    def _group(self, dataset: str) -> h5py.Group:
        try:
            return self._f["datasets"][dataset]
        except KeyError:
            raise KeyError(f"{self.path}: no dataset {dataset!r}; found {self.datasets}") from None

    def info(self, dataset: str) -> dict[str, Any]:
        """Bookkeeping of a dataset: sums of weights, events, xsec, lumi, files, cut flows."""
        return json.loads(self._group(dataset).attrs["info"])

    def names(self, dataset: str) -> list[str]:
        return list(self._group(dataset)["hists"].keys())

    def get(self, dataset: str, name: str) -> hist.Hist:
        """Read one histogram as a ``hist.Hist`` (only this one is loaded)."""
        hists = self._group(dataset)["hists"]
        if name not in hists:
            raise KeyError(
                f"{self.path}: dataset {dataset!r} has no histogram {name!r}; found {list(hists)}"
            )
        g = hists[name]
        axes = [self._axis_from_dict(d) for d in json.loads(g.attrs["axes"])]
        storage = {
            "weight": hist.storage.Weight(),
            "double": hist.storage.Double(),
            "int64": hist.storage.Int64(),
        }[g.attrs["storage"]]
        h = hist.Hist(*axes, storage=storage, name=g.attrs["name"], label=g.attrs["label"] or None)
        view = h.view(flow=True)
        if g.attrs["storage"] == "weight":
            view.value[...] = g["values"][...]
            view.variance[...] = g["variances"][...]
        else:
            view[...] = g["values"][...]
        return h

    def items(self, dataset: str) -> Iterator[tuple[str, hist.Hist]]:
        for name in self.names(dataset):
            yield name, self.get(dataset, name)
