"""Binned corrections as dense tables: one bin lookup per muon serves every variation.

A scale-factor correction holds, under categories (variation, eigen), one constant per
(eta, pt) bin, all on the same grid. Evaluating it with correctionlib once per variation looks
the same muons up 1 + 2 + 2 x n_eigen times per step; that was a fifth of the W-mass
processor's time. Here the grid is looked up once and each variation is a gather from its
table. The lookup follows correctionlib's binning exactly (upper bound over the edges; with
``flow: clamp`` values below or above the grid, the last edge and NaN go to the first or last
bin). Corrections of any other form (formulas, differing grids, other flow modes) are not
tabled; callers then use correctionlib.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class BinnedTable:
    """The constant leaves of one correction on one shared (multi)binning with clamp flow."""

    def __init__(self, name: str, inputs: list[str], edges: list[np.ndarray], tree: Any):
        self.name = name
        self.inputs = inputs  # the binned inputs, in the order of ``edges``
        self.edges = edges
        self.shape = tuple(len(e) - 1 for e in edges)
        # nested {"input": name, "content": {key: subtree}, "default": subtree or None}, with
        # leaves the flat (C-order over ``inputs``) value arrays
        self._tree = tree

    def bin_index(self, *values: np.ndarray) -> np.ndarray:
        """Flat bin of each entry (the binned inputs in the order of ``self.inputs``)."""
        flat = np.zeros(np.shape(values[0]), dtype=np.int64)
        for x, e, size in zip(values, self.edges, self.shape):
            i = np.searchsorted(e, np.asarray(x, dtype=np.float64), side="right") - 1
            np.clip(i, 0, size - 1, out=i)  # clamp; NaN sorts last and lands in the last bin
            flat = flat * size + i
        return flat

    def values(self, flat_bins: np.ndarray, **categories: Any) -> np.ndarray:
        """The correction at ``flat_bins`` for the given category inputs (as in correctionlib)."""
        node = self._tree
        while isinstance(node, dict):
            name = node["input"]
            if name not in categories:
                raise KeyError(f"correction {self.name!r}: category input {name!r} not given")
            key = categories[name]
            sub = node["content"].get(key, node["default"])
            if sub is None:
                raise KeyError(f"correction {self.name!r}: no entry {key!r} for input {name!r}")
            node = sub
        return node[flat_bins]


def _edges_of(node: dict) -> list[list[float]] | None:
    edges = node["edges"] if node["nodetype"] == "multibinning" else [node["edges"]]
    if not all(isinstance(e, list) for e in edges):  # uniform binning: keep correctionlib
        return None
    return edges


def _inputs_of(node: dict) -> list[str]:
    return list(node["inputs"]) if node["nodetype"] == "multibinning" else [node["input"]]


def build_table(correction: dict) -> BinnedTable | None:
    """A ``BinnedTable`` of a correction's JSON, or None when it is not of that form."""
    grid: dict[str, Any] = {}

    def walk(node: Any) -> Any:
        if not isinstance(node, dict):
            return None
        kind = node.get("nodetype")
        if kind == "category":
            content = {}
            for item in node["content"]:
                sub = walk(item["value"])
                if sub is None:
                    raise _NotTable
                content[item["key"]] = sub
            default = node.get("default")
            return {
                "input": node["input"],
                "content": content,
                "default": None if default is None else _need(walk(default)),
            }
        if kind in ("binning", "multibinning"):
            edges = _edges_of(node)
            values = node["content"]
            if (
                edges is None
                or node.get("flow") != "clamp"
                or not all(isinstance(v, int | float) for v in values)
            ):
                raise _NotTable
            key = (tuple(_inputs_of(node)), tuple(tuple(e) for e in edges))
            if grid.setdefault("key", key) != key:  # every leaf on the same grid
                raise _NotTable
            return np.asarray(values, dtype=np.float64)
        raise _NotTable

    try:
        tree = walk(correction["data"])
    except _NotTable:
        return None
    if tree is None or "key" not in grid:
        return None
    inputs, edges = grid["key"]
    return BinnedTable(
        correction["name"], list(inputs), [np.asarray(e, dtype=np.float64) for e in edges], tree
    )


class _NotTable(Exception):
    pass


def _need(sub: Any) -> Any:
    if sub is None:
        raise _NotTable
    return sub
