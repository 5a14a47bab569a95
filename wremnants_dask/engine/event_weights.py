"""Event weights: the nominal product of named factors, plus named variations as tensors.

A systematic variation is a tensor of alternative weights per event (e.g. down/up of a scale
factor, 103 PDF replicas, a 2x48 efficiency grid). ``variation(name)`` returns the full event
weight for each tensor cell, ready for ``TensorHist.fill(..., tensor=...)``.
Works on numpy arrays and on awkward arrays, including the typetracer used by the column trace.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import awkward as ak
import numpy as np

from wremnants_dask.engine.tensorhist import is_typetracer


def _np(x: Any) -> Any:
    """numpy for real data (zero-copy for flat awkward arrays); typetracers pass through."""
    if isinstance(x, ak.Array) and not is_typetracer(x):
        return ak.to_numpy(x)
    return x


def as_tensor(x: Any, size: int) -> Any:
    """A jagged branch with ``size`` entries per event (LHEPdfWeight...) as an (n, size) array.

    Uses the flat content directly when every event has exactly ``size`` entries; raises with
    the observed counts otherwise.
    """
    if is_typetracer(x):
        ak.typetracer.touch_data(x)
        return ak.to_regular(x, axis=1)
    if isinstance(x, np.ndarray):
        if x.ndim != 2 or x.shape[1] != size:
            raise ValueError(f"expected shape (n, {size}), got {x.shape}")
        return x
    counts = ak.to_numpy(ak.num(x, axis=1))
    if len(counts) and not (counts == size).all():
        bad = np.unique(counts[counts != size])
        raise ValueError(f"expected {size} entries per event, found events with {bad.tolist()}")
    flat = ak.to_numpy(ak.flatten(x, axis=1))
    return flat.reshape(len(counts), size)


class Weights:
    """Named multiplicative weight factors and named tensor variations."""

    def __init__(self) -> None:
        self._factors: dict[str, Any] = {}
        self._variations: dict[str, tuple[Any, str | None]] = {}
        self._nominal: Any = None

    @property
    def factors(self) -> list[str]:
        return list(self._factors)

    @property
    def variations(self) -> list[str]:
        return list(self._variations)

    def add(self, name: str, weight: Any, up: Any = None, down: Any = None) -> None:
        """Multiply ``weight`` into the nominal; with ``up``/``down`` (values of this factor)
        also register the variation ``name`` as a (n, 2) tensor [down, up]."""
        if name in self._factors:
            raise ValueError(f"weight factor {name!r} added twice")
        self._factors[name] = _np(weight)
        self._nominal = None
        if (up is None) != (down is None):
            raise ValueError(f"weight {name!r}: give both up and down, or neither")
        if up is not None:
            self.add_variation(name, _stack([_np(down), _np(up)]), replaces=name)

    def add_variation(self, name: str, factors: Any, replaces: str | None = None) -> None:
        """Register a tensor variation: full weight = nominal (without ``replaces``) x factors.

        ``factors`` has shape (n, *tensor_shape); with ``replaces=None`` they multiply the
        full nominal (e.g. PDF weights given as ratios to the nominal).
        """
        if name in self._variations:
            raise ValueError(f"variation {name!r} added twice")
        if replaces is not None and replaces not in self._factors:
            raise ValueError(f"variation {name!r} replaces unknown factor {replaces!r}")
        self._variations[name] = (_np(factors), replaces)

    def weight(self, exclude: Iterable[str] = ()) -> Any:
        """Product of all factors except ``exclude`` (ones if there are none left)."""
        exclude = set(exclude)
        unknown = exclude - set(self._factors)
        if unknown:
            raise ValueError(f"unknown weight factors {sorted(unknown)}")
        if not exclude and self._nominal is not None:
            return self._nominal
        if not self._factors:
            raise ValueError("no weight factors added yet")
        out = None
        for name, w in self._factors.items():
            if name in exclude:
                continue
            out = w if out is None else out * w
        if out is None:  # everything excluded
            ref = next(iter(self._factors.values()))
            out = ref * 0 + 1
        if not exclude:
            self._nominal = out
        return out

    def variation_parts(self, name: str) -> tuple[Any, Any]:
        """``(base, factors)`` with ``variation(name) == base[:, None] * factors``.

        For ``fill(..., weight=base[sel], tensor=factors[sel])``: the fill multiplies on the fly,
        so the (n, *tensor_shape) float64 product (824 MB for 1M events x 103 replicas) is
        never built and the factors keep their file dtype (float32).
        """
        if name not in self._variations:
            raise KeyError(f"unknown variation {name!r}; known: {self.variations}")
        factors, replaces = self._variations[name]
        return self.weight(exclude=[replaces] if replaces else ()), factors

    def variation(self, name: str) -> Any:
        """Full event weights for each cell of the variation tensor: shape (n, *tensor_shape)."""
        if name not in self._variations:
            raise KeyError(f"unknown variation {name!r}; known: {self.variations}")
        factors, replaces = self._variations[name]
        base = self.weight(exclude=[replaces] if replaces else ())
        if is_typetracer(factors) or is_typetracer(base):
            for a in (factors, base):
                if is_typetracer(a):
                    ak.typetracer.touch_data(a)
            return factors
        base = np.asarray(base, dtype=np.float64)
        factors = np.asarray(factors)
        return base.reshape(base.shape + (1,) * (factors.ndim - 1)) * factors


def _stack(arrays: list[Any]) -> Any:
    if any(is_typetracer(a) for a in arrays):
        return ak.concatenate([a[:, np.newaxis] for a in arrays], axis=1)
    return np.stack([np.asarray(a, dtype=np.float64) for a in arrays], axis=1)
