"""Cut flows: events and sum of weights passing each successive selection step.

Every analysis needs them to debug selections and to check efficiencies against expectations.
A ``CutFlow`` is filled per chunk and merged by the engine's reduction (counts add up).
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np

from wremnants_dask.engine.tensorhist import is_typetracer


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, ak.Array):
        x = ak.to_numpy(x)
    return np.asarray(x)


class CutFlow:
    """Ordered steps with the number of events, sum of weights and sum of squared weights.

    ``cut(name, mask)`` ANDs ``mask`` into the running selection and returns it, so the counts
    of a step are for events passing it and all earlier steps.
    """

    def __init__(self, name: str = "main", *, tracing: bool = False) -> None:
        self.name = name
        self.tracing = tracing
        self.steps: list[str] = []
        self.counts: list[int] = []
        self.sumw: list[float] = []
        self.sumw2: list[float] = []
        self._mask: Any = None
        self._weight: Any = None
        self._weight64: Any = None

    def start(self, n_or_mask: Any, weight: Any = None, name: str = "all") -> Any:
        """First step: all events (pass an all-true mask of the chunk length), with weights."""
        self._weight = weight
        self._weight64: Any = None
        self._mask = None
        return self.cut(name, n_or_mask)

    @property
    def mask(self) -> Any:
        """The running selection (AND of all steps so far)."""
        return self._mask

    def cut(self, name: str, mask: Any) -> Any:
        """Apply ``mask`` on top of the previous steps; record the passing events; return the AND."""
        mask = mask if self._mask is None else (self._mask & mask)
        self._mask = mask
        self.steps.append(name)
        if self.tracing or is_typetracer(mask):
            for a in (mask, self._weight):
                if is_typetracer(a):
                    ak.typetracer.touch_data(a)
            self.counts.append(0)
            self.sumw.append(0.0)
            self.sumw2.append(0.0)
            return mask
        m = _as_numpy(mask).astype(bool, copy=False)
        count = int(np.count_nonzero(m))
        self.counts.append(count)
        if self._weight is None:
            self.sumw.append(float(count))
            self.sumw2.append(float(count))
        else:
            if self._weight64 is None:  # converted once per cut flow, not per step
                self._weight64 = _as_numpy(self._weight).astype(np.float64, copy=False)
            w64 = self._weight64
            # = w64[m]; all kept (the first step): no copy; else rows + take (engine.select.Rows)
            w = w64 if count == len(w64) else w64.take(np.flatnonzero(m))
            self.sumw.append(float(w.sum()))
            self.sumw2.append(float((w * w).sum()))
        return mask

    def copy(self) -> CutFlow:
        out = CutFlow(self.name)
        out.steps, out.counts = list(self.steps), list(self.counts)
        out.sumw, out.sumw2 = list(self.sumw), list(self.sumw2)
        return out

    def __iadd__(self, other: CutFlow) -> CutFlow:
        if other.steps != self.steps:
            raise ValueError(
                f"cut flow {self.name!r}: steps differ between chunks ({self.steps} vs {other.steps})"
            )
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.sumw = [a + b for a, b in zip(self.sumw, other.sumw)]
        self.sumw2 = [a + b for a, b in zip(self.sumw2, other.sumw2)]
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "steps": self.steps,
            "counts": self.counts,
            "sumw": self.sumw,
            "sumw2": self.sumw2,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CutFlow:
        out = cls(d["name"])
        out.steps, out.counts = list(d["steps"]), [int(c) for c in d["counts"]]
        out.sumw, out.sumw2 = [float(x) for x in d["sumw"]], [float(x) for x in d["sumw2"]]
        return out

    def __repr__(self) -> str:
        rows = ", ".join(f"{s}={c}" for s, c in zip(self.steps, self.counts))
        return f"CutFlow({self.name!r}: {rows})"
