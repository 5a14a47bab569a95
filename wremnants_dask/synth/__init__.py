"""Synthetic CMS NanoAOD generator (W/Z/top/diboson/QCD simulation and pseudo-data).

Public API (contract in docs/DESIGN.md, "Synthetic generator"):
``SynthParams``, ``generate_sample``, ``generate_pseudodata``, ``PseudoDataInfo``,
``PROCESSES`` / ``GROUPS`` (the one table of processes and groups), ``breit_wigner_weight``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .params import ETA_EDGES, PILEUP_EDGES, PT_EDGES, STEPS, SynthParams
from .processes import DATA_GROUP, GROUPS, PROCESSES, PROMPT_GROUPS, QCD_GROUP, ProcessInfo

GENERATOR_VERSION = "1.0"

#: The generator itself loads on first use (~1 s of imports), so that the process table
#: (``synth.processes``, read by the dataset configs and the fit setup) stays cheap to import.
_LAZY = {
    "sample_bw": "kinematics",
    "PseudoDataInfo": "sample",
    "generate_pseudodata": "sample",
    "generate_sample": "sample",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DATA_GROUP",
    "ETA_EDGES",
    "GENERATOR_VERSION",
    "GROUPS",
    "PILEUP_EDGES",
    "PROCESSES",
    "PROMPT_GROUPS",
    "QCD_GROUP",
    "PT_EDGES",
    "STEPS",
    "ProcessInfo",
    "PseudoDataInfo",
    "SynthParams",
    "generate_pseudodata",
    "generate_sample",
    "sample_bw",
]
