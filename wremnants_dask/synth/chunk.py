"""A block of events in NanoAOD layout: flat scalar branches plus jagged collections.

A collection is stored as (counts, {field: flat values}); the field "" stands for a collection
whose branch is the collection name itself (``LHEPdfWeight`` with counter ``nLHEPdfWeight``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def offsets_of(counts: np.ndarray) -> np.ndarray:
    off = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    return off


def gather_jagged(counts: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New counts and the flat positions of the entries of events ``index`` (in that order)."""
    off = offsets_of(counts)
    new_counts = counts[index]
    total = int(new_counts.sum())
    starts = off[index]
    new_off = offsets_of(new_counts)
    flat = np.arange(total, dtype=np.int64) + np.repeat(starts - new_off[:-1], new_counts)
    return new_counts, flat


def padded_to_jagged(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row-major flat values of a padded (n, k) array where mask is True."""
    return values[mask]


@dataclass
class EventChunk:
    n: int
    scalars: dict[str, np.ndarray] = field(default_factory=dict)
    collections: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = field(default_factory=dict)

    def add_collection(self, name: str, counts: np.ndarray, fields: dict[str, np.ndarray]) -> None:
        counts = np.asarray(counts, dtype=np.uint32)
        total = int(counts.sum())
        for k, v in fields.items():
            if v.shape != (total,):
                raise ValueError(f"collection {name}: field {k!r} has {v.shape}, expected {total}")
        self.collections[name] = (counts, fields)

    def take(self, index: np.ndarray) -> EventChunk:
        """The events at ``index`` (a permutation or subset), in that order."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        out = EventChunk(int(index.size), {k: v[index] for k, v in self.scalars.items()})
        for name, (counts, fields) in self.collections.items():
            new_counts, flat = gather_jagged(counts, index)
            out.collections[name] = (new_counts, {k: v[flat] for k, v in fields.items()})
        return out

    @staticmethod
    def concat(chunks: list[EventChunk]) -> EventChunk:
        """Concatenate chunks with identical branch sets."""
        first = chunks[0]
        out = EventChunk(sum(c.n for c in chunks))
        for k in first.scalars:
            out.scalars[k] = np.concatenate([c.scalars[k] for c in chunks])
        for name, (_, fields) in first.collections.items():
            counts = np.concatenate([c.collections[name][0] for c in chunks])
            out.collections[name] = (
                counts,
                {f: np.concatenate([c.collections[name][1][f] for c in chunks]) for f in fields},
            )
        return out

    def branch_names(self) -> list[str]:
        names = list(self.scalars)
        for name, (_, fields) in self.collections.items():
            names.append("n" + name)
            names += [name if f == "" else f"{name}_{f}" for f in fields]
        return names
