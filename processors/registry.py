"""Analysis names -> Processor classes, so that the CLI and configs refer to analyses by name.

Classes are imported only when asked for: a broken or missing analysis module does not stop the
others from running.
"""

from __future__ import annotations

import importlib
from typing import Any

from wremnants_dask.engine.processor import Processor

DEFAULT_ANALYSIS = "mw"

ANALYSES: dict[str, str] = {
    "mw": "wremnants_dask.processors.mw:WMassProcessor",
    "mz_dilepton": "wremnants_dask.processors.zdilepton:ZDileptonProcessor",
    "mz_wlike": "wremnants_dask.processors.wlike:ZWlikeProcessor",
    "muon_kinematics": "wremnants_dask.processors.muon_kinematics:MuonKinematicsProcessor",
    "tnp": "wremnants_dask.processors.tnp:TagAndProbeProcessor",
    "mz_mucalib": "wremnants_dask.processors.mucalib:MuonCalibProcessor",
    "mz_recoil": "wremnants_dask.processors.recoil:RecoilProcessor",
    "mz_bosonpt": "wremnants_dask.processors.bosonpt:BosonPtProcessor",
}


def processor_class(name: str) -> type[Processor]:
    """The Processor class registered as ``name`` (or given as ``module:Class``)."""
    target = ANALYSES.get(name, name if ":" in name else None)
    if target is None:
        raise KeyError(f"unknown analysis {name!r}; known: {sorted(ANALYSES)}")
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"analysis {name!r}: cannot import {module_name} ({err})") from err
    try:
        cls = getattr(module, cls_name)
    except AttributeError:
        raise ImportError(f"analysis {name!r}: {module_name} has no class {cls_name}") from None
    if not (isinstance(cls, type) and issubclass(cls, Processor)):
        raise TypeError(f"analysis {name!r}: {target} is not a Processor subclass")
    return cls


def get_processor(name: str = DEFAULT_ANALYSIS, **options: Any) -> Processor:
    """Instantiate the analysis ``name`` with keyword options (e.g. ``systematics=False``)."""
    return processor_class(name)(**options)
