"""Generator-level particle table: fixed slots per event, compacted into NanoAOD GenPart.

Process generators append particles slot by slot (one array entry per event); a slot may be
invalid for some events (e.g. tau decay products when the boson decayed to muons). At the end
the table is compacted row-wise and mother indices are remapped to the compacted positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import kinematics as kin

# NanoAOD GenPart_statusFlags bits.
IS_PROMPT = 1 << 0
IS_DECAYED_LEPTON_HADRON = 1 << 1
IS_TAU_DECAY_PRODUCT = 1 << 2
IS_PROMPT_TAU_DECAY_PRODUCT = 1 << 3
IS_DIRECT_TAU_DECAY_PRODUCT = 1 << 4
IS_DIRECT_PROMPT_TAU_DECAY_PRODUCT = 1 << 5
IS_DIRECT_HADRON_DECAY_PRODUCT = 1 << 6
IS_HARD_PROCESS = 1 << 7
FROM_HARD_PROCESS = 1 << 8
IS_HARD_PROCESS_TAU_DECAY_PRODUCT = 1 << 9
IS_DIRECT_HARD_PROCESS_TAU_DECAY_PRODUCT = 1 << 10
FROM_HARD_PROCESS_BEFORE_FSR = 1 << 11
IS_FIRST_COPY = 1 << 12
IS_LAST_COPY = 1 << 13
IS_LAST_COPY_BEFORE_FSR = 1 << 14

HARD = (
    IS_PROMPT
    | IS_HARD_PROCESS
    | FROM_HARD_PROCESS
    | FROM_HARD_PROCESS_BEFORE_FSR
    | IS_FIRST_COPY
    | IS_LAST_COPY
    | IS_LAST_COPY_BEFORE_FSR
)
INCOMING = IS_HARD_PROCESS | FROM_HARD_PROCESS | FROM_HARD_PROCESS_BEFORE_FSR | IS_FIRST_COPY
TAU_PRODUCT = (
    IS_TAU_DECAY_PRODUCT
    | IS_PROMPT_TAU_DECAY_PRODUCT
    | IS_DIRECT_TAU_DECAY_PRODUCT
    | IS_DIRECT_PROMPT_TAU_DECAY_PRODUCT
    | IS_HARD_PROCESS_TAU_DECAY_PRODUCT
    | IS_DIRECT_HARD_PROCESS_TAU_DECAY_PRODUCT
    | FROM_HARD_PROCESS
    | IS_FIRST_COPY
    | IS_LAST_COPY
)
HADRON_PRODUCT = IS_DIRECT_HADRON_DECAY_PRODUCT | IS_FIRST_COPY | IS_LAST_COPY


@dataclass
class ParticleTable:
    """Slot-wise builder; every column is a list of per-event arrays."""

    n: int
    cols: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, v: kin.Vec, mass, pdg, status, flags, mother, valid=True, flav=0, dxy=0.0,
            cone=0.0) -> int:  # fmt: skip
        """Append one slot; scalars broadcast to all events. Returns the slot index."""
        pt, eta, phi, _ = kin.to_ptetaphim(v)
        n = self.n
        vals = {
            "pt": pt,
            "eta": eta,
            "phi": phi,
            "mass": mass,
            "pdgId": pdg,
            "status": status,
            "statusFlags": flags,
            "mother": mother,
            "valid": valid,
            "flav": flav,
            "dxy_scale": dxy,
            "cone": cone,
            "px": v[0],
            "py": v[1],
        }
        for k, x in vals.items():
            self.cols.setdefault(k, []).append(np.broadcast_to(np.asarray(x), (n,)))
        return len(self.cols["pt"]) - 1

    def finish(self) -> GenTable:
        a = {k: np.stack(v, axis=1) for k, v in self.cols.items()}
        return GenTable(**a)


@dataclass
class GenTable:
    """Padded (n_events, n_slots) arrays of the generator particles."""

    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    mass: np.ndarray
    pdgId: np.ndarray
    status: np.ndarray
    statusFlags: np.ndarray
    mother: np.ndarray
    valid: np.ndarray
    flav: np.ndarray
    dxy_scale: np.ndarray
    cone: np.ndarray
    px: np.ndarray
    py: np.ndarray

    def compact_index(self) -> np.ndarray:
        """Position of each slot in the compacted GenPart collection (-1 if invalid)."""
        idx = np.cumsum(self.valid, axis=1) - 1
        return np.where(self.valid, idx, -1)

    def final_state_sum(self, abs_pdgs: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Vector sum (px, py) of valid status-1 particles with |pdgId| in abs_pdgs."""
        sel = self.valid & (self.status == 1) & np.isin(np.abs(self.pdgId), abs_pdgs)
        return (self.px * sel).sum(axis=1), (self.py * sel).sum(axis=1)

    def muon_slots(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, k) slot indices of the status-1 muons (first k in slot order) and their mask."""
        sel = self.valid & (self.status == 1) & (np.abs(self.pdgId) == 13)
        order = np.argsort(~sel, axis=1, kind="stable")[:, :k]
        if order.shape[1] < k:
            pad = np.zeros((order.shape[0], k - order.shape[1]), dtype=order.dtype)
            order = np.concatenate([order, pad], axis=1)
            sel = np.concatenate([sel, np.zeros_like(pad, dtype=bool)], axis=1)
        return order, np.take_along_axis(sel, order, axis=1)
