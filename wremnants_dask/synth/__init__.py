"""Synthetic CMS NanoAOD generator (W/Z/top/diboson/QCD simulation and pseudo-data).

Public API (contract in docs/DESIGN.md, "Synthetic generator"):
``SynthParams``, ``generate_sample``, ``generate_pseudodata``, ``PseudoDataInfo``,
``PROCESSES`` / ``GROUPS``, ``breit_wigner_weight``.
"""

from __future__ import annotations

from .kinematics import sample_bw
from .params import ETA_EDGES, PILEUP_EDGES, PT_EDGES, STEPS, SynthParams
from .processes import GROUPS, PROCESSES, ProcessInfo
from .sample import PseudoDataInfo, generate_pseudodata, generate_sample

GENERATOR_VERSION = "1.0"

__all__ = [
    "ETA_EDGES",
    "GENERATOR_VERSION",
    "GROUPS",
    "PILEUP_EDGES",
    "PROCESSES",
    "PT_EDGES",
    "STEPS",
    "ProcessInfo",
    "PseudoDataInfo",
    "SynthParams",
    "generate_pseudodata",
    "generate_sample",
    "sample_bw",
]
