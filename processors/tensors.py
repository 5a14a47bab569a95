"""Per-muon weights -> per-event variation tensors, vectorised.

Uncorrelated variations (one nuisance per eta bin and eigenvector, one per momentum-scale eta
slice) only touch the muons in their own slot: the event tensor is 1 everywhere except in the
slots of the event's muons, where it is the product of those muons' relative weights.
"""

from __future__ import annotations

import numpy as np


def local_index(counts: np.ndarray) -> np.ndarray:
    """Position of each flattened object inside its event (0, 1, ... per event)."""
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    return np.arange(int(counts.sum())) - np.repeat(starts, counts)


def event_index(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.int64)
    return np.repeat(np.arange(counts.size), counts)


def product_per_event(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Product of per-object values (leading axis flattened objects) per event; 1 for none."""
    counts = np.asarray(counts, dtype=np.int64)
    out = np.ones((counts.size,) + np.shape(values)[1:])
    if counts.sum() == 0:
        return out
    np.multiply.at(out, event_index(counts), values)
    return out


def scatter_slots(
    per_object: np.ndarray, slot: np.ndarray, counts: np.ndarray, n_slots: int
) -> np.ndarray:
    """(n_events, n_slots, *per_object.shape[1:]) tensor: 1, times each object's values in its slot.

    ``per_object`` has one row per flattened object; ``slot`` (same length) is its slot index
    (e.g. eta bin); ``counts`` the objects per event. Objects outside [0, n_slots) are ignored.
    """
    counts = np.asarray(counts, dtype=np.int64)
    per_object = np.asarray(per_object, dtype=np.float64)
    slot = np.asarray(slot, dtype=np.int64)
    out = np.ones((counts.size, n_slots) + per_object.shape[1:])
    if per_object.shape[0] == 0:
        return out
    ev = event_index(counts)
    rank = local_index(counts)
    ok = (slot >= 0) & (slot < n_slots)
    # within one rank no event appears twice, so plain fancy-index multiplication is exact
    for r in range(int(counts.max())):
        sel = ok & (rank == r)
        out[ev[sel], slot[sel]] *= per_object[sel]
    return out


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin number of each value (-1 below, len(edges)-1 above the range)."""
    idx = np.searchsorted(np.asarray(edges), np.asarray(values), side="right") - 1
    return np.where(np.asarray(values) >= edges[-1], len(edges) - 1, idx)
