"""Processors for the resume tests (``-a resume_processors:Class``; workers import this module
from PYTHONPATH): the muon-kinematics analysis, slowed down so that a run can be interrupted
half-way, or failing on one event."""

from __future__ import annotations

import os
import time

import awkward as ak
import numpy as np

from wremnants_dask.processors.muon_kinematics import MuonKinematicsProcessor


class SlowMuonKinematics(MuonKinematicsProcessor):
    """Sleeps ``RESUME_TEST_SLEEP`` seconds per chunk (0 by default) and counts its chunks."""

    calls = 0

    def process(self, events, out):
        if not events.tracing:
            type(self).calls += 1
            time.sleep(float(os.environ.get("RESUME_TEST_SLEEP", "0")))
        super().process(events, out)


class FailingMuonKinematics(MuonKinematicsProcessor):
    """Raises on the chunk holding the event with the smallest MET_pt below 5 GeV, a data
    value (so the test does not hard-code which chunk): ``RESUME_TEST_FAIL_BELOW``."""

    def process(self, events, out):
        met = events.branch("MET_pt")
        if not events.tracing:
            limit = float(os.environ.get("RESUME_TEST_FAIL_BELOW", "-1"))
            if np.any(ak.to_numpy(met) < limit):
                raise ValueError(f"MET_pt below {limit} GeV")
        super().process(events, out)
