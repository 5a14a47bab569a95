"""How the plots read a histogram axis: the one place that knows axis types.

Every plot takes ``hist.Hist`` objects (rebuilt from the HDF5 files by their own readers), and
asks this module for the bin edges, the label and the tick labels of an axis, so a change in how
axes are serialised touches only the readers and, at most, ``axis_info``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AxisInfo:
    """What a plot needs of one axis."""

    name: str
    label: str
    edges: np.ndarray
    #: tick labels of categorical (and boolean) axes, drawn as unit-width bins; None otherwise
    categories: list[str] | None = None


def axis_info(ax: Any) -> AxisInfo:
    """Edges, label and (for categories) tick labels of a ``hist`` axis."""
    label = str(getattr(ax, "label", "") or ax.name)
    if ax.traits.continuous or type(ax).__name__ == "Integer":
        return AxisInfo(ax.name, label, np.asarray(ax.edges, dtype=float))
    cats = [str(c) for c in ax]
    if type(ax).__name__ == "Boolean":
        cats = ["False", "True"]
    return AxisInfo(ax.name, label, np.arange(len(cats) + 1, dtype=float) - 0.5, cats)
