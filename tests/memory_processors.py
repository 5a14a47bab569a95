"""A processor with a deliberate leak, for tests/test_reliab_worker_memory.py: it keeps 1 MB
per chunk in a module-level list of the worker process (what a cache keyed by file or chunk
that is never bounded does), so the test can show that it detects such a leak."""

from __future__ import annotations

import numpy as np

from wremnants_dask.processors.muon_kinematics import MuonKinematicsProcessor

KEPT: list[np.ndarray] = []


class LeakyMuonKinematics(MuonKinematicsProcessor):
    def process(self, events, out):
        if not events.tracing:
            KEPT.append(np.ones(125_000))  # 1 MB, touched (resident)
        super().process(events, out)
