"""The one serialisation of histogram axes: hist's own UHI form (``hist.serialization``).

Histogram files (``histio``), fit inputs (``Channel.axes``) and fit results store every axis as
the UHI axis dictionary, made JSON-able (edges as lists), so one reader rebuilds any of them and
other UHI tools can read them too. Regular axes keep ``lower``/``upper``/``bins`` (boost rebuilds
the same edges bit for bit), flow bins and growth are kept, Integer axes are restored as Integer
(boost-histogram's ``writer_info``), Boolean axes are supported.

Version-1 files used two private dialects; ``axis_from_histio_v1`` and ``axis_from_fitinput_v1``
read them (and nothing writes them any more).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import boost_histogram as bh
import hist
import hist.serialization
import numpy as np

__all__ = [
    "axes_from_json",
    "axes_to_json",
    "axis_edges",
    "axis_from_fitinput_v1",
    "axis_from_histio_v1",
    "axis_from_uhi",
    "axis_label",
    "axis_name",
    "axis_to_uhi",
    "flowless",
    "same_binning",
]

#: Relative and absolute tolerance on edges when two continuous axes must bin alike: a Regular
#: axis and a Variable axis with its edges differ by rounding of linspace (~1e-15 relative).
EDGE_RTOL, EDGE_ATOL = 1e-9, 1e-12


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def axis_to_uhi(ax: Any) -> dict[str, Any]:
    """The UHI dictionary of one axis (JSON-able: plain lists and numbers)."""
    if isinstance(ax, bh.axis.Regular) and ax.transform is not None:
        raise ValueError(f"axis {ax.name!r}: transformed Regular axes are not supported")
    # One axis at a time: the storage serialised alongside has only the axis' own bins.
    return _jsonable(hist.serialization.to_uhi(bh.Histogram(ax))["axes"][0])


def axis_from_uhi(d: Mapping[str, Any]) -> Any:
    """The ``hist`` axis of a UHI axis dictionary (inverse of :func:`axis_to_uhi`)."""
    try:
        h = hist.serialization.from_uhi(
            {"uhi_schema": 1, "axes": [dict(d)], "storage": {"type": "double"}}
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"not a UHI axis ({err!r}): {dict(d)}") from None
    return h.axes[0]


def axes_to_json(axes: Iterable[Any]) -> str:
    """JSON list of the UHI dictionaries of ``axes``."""
    return json.dumps([axis_to_uhi(ax) for ax in axes])


def axes_from_json(text: str) -> list[Any]:
    """Inverse of :func:`axes_to_json`."""
    return [axis_from_uhi(d) for d in json.loads(text)]


def flowless(ax: Any) -> Any:
    """A copy of ``ax`` without flow bins (what a fit channel bins: only the in-range bins)."""
    d = axis_to_uhi(ax)
    if "underflow" in d:
        d.update(underflow=False, overflow=False)
    if "flow" in d:
        d["flow"] = False
    return axis_from_uhi(d)


def same_binning(a: Any, b: Any) -> bool:
    """Whether two axes have the same in-range bins (flow ignored).

    Regular and Variable axes compare by their edges within ``EDGE_RTOL``/``EDGE_ATOL``, so a
    Variable axis may stand for a Regular one; other axes must be of the same kind with the
    same bins or categories."""
    continuous = (bh.axis.Regular, bh.axis.Variable)
    if isinstance(a, continuous) and isinstance(b, continuous):
        return len(a) == len(b) and bool(
            np.allclose(a.edges, b.edges, rtol=EDGE_RTOL, atol=EDGE_ATOL)
        )
    if type(a) is not type(b) or len(a) != len(b):
        return False
    if isinstance(a, (bh.axis.IntCategory, bh.axis.StrCategory)):
        return list(a) == list(b)
    return bool(np.array_equal(a.edges, b.edges))


def axis_name(d: Mapping[str, Any]) -> str:
    """The name of a serialised axis (UHI keeps it in the axis metadata)."""
    return str(d.get("metadata", {}).get("name", ""))


def axis_label(d: Mapping[str, Any]) -> str:
    """The label of a serialised axis, its name when it has none (as ``hist`` shows it)."""
    meta = d.get("metadata", {})
    return str(meta.get("label") or meta.get("name", ""))


def axis_edges(d: Mapping[str, Any]) -> np.ndarray:
    """Edges to draw the in-range bins of a serialised axis: the axis' own edges for Regular
    and Variable axes, unit bins centred on the values for Integer axes and on the bin index
    for categories and Boolean axes."""
    ax = axis_from_uhi(d)
    if isinstance(ax, (bh.axis.IntCategory, bh.axis.StrCategory, bh.axis.Boolean)):
        return np.arange(len(ax) + 1, dtype=float) - 0.5
    edges = np.asarray(ax.edges, dtype=float)
    return edges - 0.5 if isinstance(ax, bh.axis.Integer) else edges


# ----------------------------------------------------------------------------- version 1
def axis_from_histio_v1(d: Mapping[str, Any]) -> Any:
    """An axis of a ``wremnants_dask.histio/1`` file (types ``Regular``, ``Variable``, ...)."""
    kind = d["type"]
    common = {"name": d["name"], "label": d["label"]}
    flow = {k: d[k] for k in ("underflow", "overflow", "growth", "circular") if k in d}
    if kind == "Regular":
        return hist.axis.Regular(d["bins"], d["start"], d["stop"], **flow, **common)
    if kind == "Variable":
        return hist.axis.Variable(d["edges"], **flow, **common)
    if kind == "Integer":
        return hist.axis.Integer(d["start"], d["stop"], **flow, **common)
    if kind in ("IntCategory", "StrCategory"):
        cls = hist.axis.IntCategory if kind == "IntCategory" else hist.axis.StrCategory
        return cls(d["categories"], growth=d["growth"], overflow=d["overflow"], **common)
    if kind == "Boolean":
        return hist.axis.Boolean(**common)
    raise ValueError(f"unknown version-1 axis type {kind!r} in {dict(d)}")


def axis_from_fitinput_v1(d: Mapping[str, Any]) -> Any:
    """An axis of a version-1 fit input or fit result (types ``regular``, ``intcat``, ...;
    no flow bins were kept)."""
    kw = {"name": d["name"], "label": d.get("label", d["name"])}
    kind = d["type"]
    noflow = {"underflow": False, "overflow": False}
    if kind == "strcat":
        return hist.axis.StrCategory(d["categories"], **kw)
    if kind == "intcat":
        return hist.axis.IntCategory(d["categories"], **kw)
    if kind == "integer":
        return hist.axis.Integer(d["start"], d["stop"], **noflow, **kw)
    if kind == "regular":
        return hist.axis.Regular(d["bins"], d["start"], d["stop"], **noflow, **kw)
    if kind == "variable":
        return hist.axis.Variable(d["edges"], **noflow, **kw)
    raise ValueError(f"unknown version-1 fit-input axis type {kind!r} in {dict(d)}")
