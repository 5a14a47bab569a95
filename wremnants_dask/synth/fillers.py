"""Filler branches (Jet_, Electron_, Tau_, HLT_ ...) so files look like full NanoAOD.

They carry no physics the analysis uses: they exist so that reading only the needed columns
matters in benchmarks. Names and types come from a real NanoAOD file (filler_schema.py); values
are cheap random numbers with plausible ranges, floats with NanoAOD-like reduced mantissa
precision so they compress like real files.
"""

from __future__ import annotations

import zlib

import numpy as np

from .chunk import EventChunk
from .filler_schema import COLLECTIONS, FLAGS, SCALARS

_DTYPES = {"f": np.float32, "i": np.int32, "B": np.uint8, "?": np.bool_, "I": np.uint32,
           "l": np.int64, "L": np.uint64, "b": np.int8}  # fmt: skip
_FIXED = {"PSWeight": 4, "LHEPart": 4, "LHEReweightingWeight": 0}
_MEAN = {"Jet": 4.0, "Electron": 0.4, "Tau": 1.5, "Photon": 0.8, "FatJet": 0.4, "SV": 1.2,
         "IsoTrack": 0.6, "SubJet": 0.8, "CorrT1METJet": 3.0, "GenJet": 5.0, "GenJetAK8": 1.0,
         "SubGenJetAK8": 1.0, "GenVisTau": 0.2, "GenDressedLepton": 1.0,
         "SoftActivityJet": 6.0, "OtherPV": 3.0, "FsrPhoton": 0.1}  # fmt: skip
_FLAG_RATES = np.array([0.0, 0.0005, 0.002, 0.01, 0.03, 0.1, 0.3, 0.6])
#: Trigger/flag bits kept: uproot declares a tree in O(n_branches^2), so the ~1000 HLT/L1 bits
#: of real NanoAOD are thinned to keep ~1000 branches in all (still wide enough that reading
#: only the needed columns matters).
N_FLAGS = 480
_FLAGS = (
    tuple(f for f in FLAGS if f[0].startswith("Flag_"))
    + tuple(f for f in FLAGS if not f[0].startswith("Flag_"))[
        : N_FLAGS - sum(f[0].startswith("Flag_") for f in FLAGS)
    ]
)


def _truncate(x: np.ndarray) -> np.ndarray:
    """Keep 10 mantissa bits of a float32 array (as NanoAOD does for most floats)."""
    return (x.view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)


def _values(rng: np.random.Generator, name: str, code: str, size: int) -> np.ndarray:
    dt = _DTYPES[code]
    if code == "f":
        low = name.lower()
        if low.endswith("pt") or low == "pt":
            v = 15.0 + rng.exponential(25.0, size)
        elif low.endswith("eta"):
            v = rng.uniform(-4.7, 4.7, size)
        elif low.endswith("phi"):
            v = rng.uniform(-np.pi, np.pi, size)
        elif low.endswith("mass"):
            v = rng.exponential(8.0, size)
        else:
            v = rng.random(size, dtype=np.float32)
        return _truncate(np.asarray(v, dtype=np.float32))
    if code == "?":
        return rng.random(size, dtype=np.float32) < 0.5
    if name.endswith("Idx") or name.endswith("IdxMother"):
        return rng.integers(-1, 6, size).astype(dt)
    if name == "charge":
        return (2 * rng.integers(0, 2, size) - 1).astype(dt)
    if name.endswith("genPartFlav"):
        return np.zeros(size, dt)
    return rng.integers(0, 8, size).astype(dt)


def add_fillers(chunk: EventChunk, rng: np.random.Generator, is_data: bool) -> None:
    """Add ~900 filler branches to ``chunk`` (data: only branches real data have)."""
    n = chunk.n
    npv = chunk.scalars.get("PV_npvsGood", np.full(n, 20)).astype(np.float64)
    for coll, fields in COLLECTIONS.items():
        fields = [f for f in fields if f[2] or not is_data]
        if not fields:
            continue
        if coll in _FIXED:
            counts = np.full(n, _FIXED[coll], dtype=np.uint32)
        else:
            mean = _MEAN.get(coll, 1.0) * (1.0 + npv / 40.0 if coll == "Jet" else 1.0)
            counts = rng.poisson(mean, n).astype(np.uint32)
        total = int(counts.sum())
        values = {f: _values(rng, f, c, total) for f, c, _ in fields}
        if coll not in chunk.collections:  # IsoTrack is physics (detector.py): drawn, not kept
            chunk.add_collection(coll, counts, values)
    for name, code, in_data in SCALARS:
        if in_data or not is_data:
            chunk.scalars[name] = _values(rng, name, code, n)
    protos = [rng.random(n, dtype=np.float32) < r for r in _FLAG_RATES]
    always = rng.random(n, dtype=np.float32) < 0.999
    for name, in_data in _FLAGS:
        if not in_data and is_data:
            continue
        if name.startswith("Flag_") or name.endswith("_step") or "Trigger" in name:
            chunk.scalars[name] = always
        else:
            chunk.scalars[name] = protos[zlib.crc32(name.encode()) % len(protos)]
