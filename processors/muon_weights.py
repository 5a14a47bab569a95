"""Muon efficiency scale factors and prefiring as nominal event weights plus variation tensors.

Inputs are the flattened selected muons (eta, pt) with the per-event counts, so one code path
serves the single-muon W selection and the two-muon Z selections. All tensors are *relative*
to the nominal weight (variation / nominal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wremnants_dask.corrections.payload import CorrectionsPayload
from wremnants_dask.processors.tensors import bin_index, product_per_event, scatter_slots


@dataclass
class MuonSFWeights:
    """Nominal SF weight per event; stat variations kept per muon, expanded on request."""

    nominal: np.ndarray  # (n,) product over muons and steps
    stat_per_muon: np.ndarray | None  # (n_mu, n_steps, n_eig, 2) relative [down, up]
    slot: np.ndarray | None  # (n_mu,) eta bin of each muon
    counts: np.ndarray  # (n,) muons per event
    n_eta: int
    syst: np.ndarray | None  # (n, n_steps, 2) [down, up], correlated over muons

    def stat_full(self, events: slice = slice(None)) -> np.ndarray:
        """(n, n_steps, n_eta, n_eig, 2): each muon varies only its own eta bin's entries."""
        counts = self.counts[events]
        offsets = np.concatenate([[0], np.cumsum(self.counts)])
        start = offsets[events.start or 0]
        stop = start + int(counts.sum())
        full = scatter_slots(
            self.stat_per_muon[start:stop], self.slot[start:stop], counts, self.n_eta
        )  # (n, n_eta, n_steps, n_eig, 2)
        return np.moveaxis(full, 1, 2)

    def stat_diagonal(self, events: slice = slice(None)) -> np.ndarray:
        """(n, n_steps, n_eig, 2) for one muon per event: the variation of its own eta bin.

        The histogram filled with this carries nuisance (step, eta bin i, eig) in its eta bin i
        only; everywhere else that nuisance equals the nominal (see ``expand_eff_stat``).
        """
        if np.any(self.counts > 1):
            raise ValueError("diagonal efficiency-stat tensor needs at most one muon per event")
        counts = self.counts[events]
        offsets = np.concatenate([[0], np.cumsum(self.counts)])
        start = offsets[events.start or 0]
        stop = start + int(counts.sum())
        out = np.ones((counts.size,) + self.stat_per_muon.shape[1:])
        out[counts == 1] = self.stat_per_muon[start:stop]
        return out


def muon_sf_weights(
    payload: CorrectionsPayload,
    eta: np.ndarray,
    pt: np.ndarray,
    counts: np.ndarray,
    *,
    steps_mask: dict[str, np.ndarray] | None = None,
    fail: dict[str, np.ndarray] | None = None,
    variations: bool = True,
) -> MuonSFWeights:
    """Scale factors of the selected muons: nominal per event and stat/syst tensors.

    ``steps_mask[step]`` (per muon, bool) restricts a step to some muons, e.g. the trigger
    scale factor only for the muon that fired the trigger; default all muons, all steps.
    Muons with ``fail[step]`` True (failing isolation, or not firing the trigger) get the
    inefficiency factor (1 - e_mc SF) / (1 - e_mc) of that step instead of its SF, with the
    same (now anti-correlated) variations.
    """
    eta = np.asarray(eta, dtype=np.float64)
    pt = np.asarray(pt, dtype=np.float64)
    n_mu = eta.size
    steps_mask = steps_mask or {}
    fails = {k: np.asarray(v, dtype=bool) for k, v in (fail or {}).items() if np.any(v)}
    e_mc = {k: payload.mc_efficiency(k, eta, pt) for k in fails}

    def factor(step: str, sf: np.ndarray) -> np.ndarray:
        if step not in fails:
            return sf
        e = e_mc[step]
        with np.errstate(divide="ignore", invalid="ignore"):
            anti = np.where(e < 1.0, (1.0 - e * sf) / (1.0 - e), 1.0)
        return np.where(fails[step], anti, sf)

    steps = payload.sf_steps  # reco too when the payload carries it
    sf = {step: payload.muon_sf_lookup(step, eta, pt) for step in steps}
    nom = np.ones((n_mu, len(steps)))
    for i, step in enumerate(steps):
        use = steps_mask.get(step, np.ones(n_mu, dtype=bool))
        nom[:, i] = np.where(use, factor(step, sf[step]()), 1.0)
    nominal = product_per_event(nom.prod(axis=1), counts)
    eta_edges = payload.sf_stat_slots()  # one stat nuisance per measured eta bin
    n_eta = eta_edges.size - 1
    if not variations:
        return MuonSFWeights(nominal, None, None, np.asarray(counts), n_eta, None)

    n_eig = payload.n_eigen
    # relative weight per muon: (n_mu, n_steps, n_eig, 2)
    rel_stat = np.ones((n_mu, len(steps), n_eig, 2))
    rel_syst = np.ones((n_mu, len(steps), 2))
    for i, step in enumerate(steps):
        use = steps_mask.get(step, np.ones(n_mu, dtype=bool))
        with np.errstate(divide="ignore", invalid="ignore"):
            base = np.where(use & (nom[:, i] != 0), nom[:, i], 1.0)
            for j, var in enumerate(("syst_down", "syst_up")):
                val = factor(step, sf[step](var))
                rel_syst[:, i, j] = np.where(use, val / base, 1.0)
            for k in range(n_eig):
                for j, var in enumerate(("stat_down", "stat_up")):
                    val = factor(step, sf[step](var, k))
                    rel_stat[:, i, k, j] = np.where(use, val / base, 1.0)
    slot = np.clip(bin_index(eta, eta_edges), 0, n_eta - 1)  # SFs clamp in eta too
    syst = product_per_event(rel_syst, counts)
    return MuonSFWeights(nominal, rel_stat, slot, np.asarray(counts), n_eta, syst)


def prefiring_weights(
    payload: CorrectionsPayload, eta: np.ndarray, pt: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Muon non-prefiring weight prod(1 - p) and its (n, 2) [down, up] ratios.

    As for L1PreFiringWeight_Up/Dn, the weight "up" is the one with the lower prefiring
    probability (payload variation "down"), the weight "down" the higher one.
    """
    nom = product_per_event(1.0 - payload.prefiring_prob(eta, pt, "nominal"), counts)
    var = np.stack(
        [
            product_per_event(1.0 - payload.prefiring_prob(eta, pt, v), counts)
            for v in ("up", "down")
        ],
        axis=-1,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(nom[:, None] > 0, var / nom[:, None], 1.0)
    return nom, rel
