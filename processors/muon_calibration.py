"""Applying a measured muon momentum calibration (corrections/momentum_calibration.py).

- Data: pT / (1 + delta(eta)), the measured scale of data relative to simulation.
- Simulation: smeared to the data resolution, pT (1 + sqrt(k^2 - 1) sigma_rel(eta, pT) N),
  k(|eta|) the measured resolution ratio (k <= 1: no smearing, data cannot be made worse than
  it is), sigma_rel the simulation's relative resolution (the payload's muon_resolution) and N a
  standard normal drawn from a counter-based generator keyed by (event number, muon index):
  the same muon gets the same smearing whatever the chunking, the executor or the run.
- Nuisances (simulation): the calibration's statistical eigen-variations (scale part with
  ``muon_scale.scale_weight``, resolution part as a reweighting of the Gaussian response) and
  the closure uncertainty (a scale shift per |eta| region), as per-muon weights.
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np

from wremnants_dask.corrections.momentum_calibration import MomentumCalibration
from wremnants_dask.processors.muon_scale import resolution_weight, scale_weight

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
#: Stream key of the smearing (changes every draw if changed: a new "seed").
SMEAR_KEY = 0x5EED_CA1B


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 (wrapping arithmetic): a well-mixed hash."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def event_normals(event: np.ndarray, index: np.ndarray, key: int = SMEAR_KEY) -> np.ndarray:
    """Standard normals, one per (event number, muon index), by Box-Muller on two hashed
    uniforms: deterministic per muon and independent between muons."""
    e = np.asarray(event).astype(np.uint64)
    i = np.asarray(index).astype(np.uint64)
    with np.errstate(over="ignore"):
        base = _splitmix64(e ^ _splitmix64(np.uint64(key) + i))
        h1 = _splitmix64(base)
        h2 = _splitmix64(base + np.uint64(1))
    # 53-bit uniforms in (0, 1]
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53
    u2 = (h2 >> np.uint64(11)).astype(np.float64) / 2.0**53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def smear_factor(
    calib: MomentumCalibration, payload: Any, eta: np.ndarray, pt: np.ndarray, normal: np.ndarray
) -> np.ndarray:
    """1 + sqrt(max(k^2 - 1, 0)) sigma_rel N: the factor bringing simulation to the data
    resolution (independent Gaussians add in quadrature)."""
    k = calib.resolution_ratio(eta)
    extra = np.sqrt(np.clip(k * k - 1.0, 0.0, None))
    return 1.0 + extra * payload.resolution(eta, pt) * normal


def calibrated_pt(
    calib: MomentumCalibration, payload: Any, cols: dict[str, Any], is_data: bool
) -> ak.Array:
    """Muon pT with the calibration applied (data: scale; simulation: resolution)."""
    from wremnants_dask.processors.common import np1

    pt = cols["Muon_pt"]
    counts = np1(ak.num(pt, axis=1))
    flat = np1(ak.flatten(pt, axis=1)).astype(np.float64)
    eta = np1(ak.flatten(cols["Muon_eta"], axis=1)).astype(np.float64)
    if is_data:
        flat = flat / (1.0 + calib.scale(eta))
    else:
        if "event" not in cols:
            raise KeyError("the momentum calibration smears simulation by event number: no 'event'")
        event = np.repeat(np1(cols["event"]).astype(np.uint64), counts)
        index = np.arange(flat.size) - np.repeat(np.cumsum(counts) - counts, counts)
        flat = flat * smear_factor(calib, payload, eta, flat, event_normals(event, index))
    return ak.unflatten(flat, counts)


def nuisance_weights(
    calib: MomentumCalibration,
    payload: Any,
    eta: np.ndarray,
    pt: np.ndarray,
    gen_pt: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-muon weights of the calibration nuisances for simulation (pT already smeared):
    statistical ``(n, n_eigen, 2)`` and closure ``(n, n_regions, 2)``, [down, up] last."""
    k = calib.resolution_ratio(eta)
    sigma = payload.resolution(eta, np.nan_to_num(gen_pt, nan=1.0)) * gen_pt * np.maximum(k, 1.0)
    ds = calib.scale_eigen(eta)  # (n, E)
    dk = calib.resolution_eigen(eta)
    kk = np.maximum(k, 1.0)[:, None]
    stat = np.stack(
        [
            scale_weight(pt[:, None], gen_pt[:, None], sigma[:, None], sign * ds)
            * resolution_weight(
                pt[:, None], gen_pt[:, None], sigma[:, None], np.maximum(kk + sign * dk, 1.0) / kk
            )
            for sign in (-1.0, 1.0)
        ],
        axis=-1,
    )
    edges = calib.closure_regions()
    region = np.clip(np.searchsorted(edges, np.abs(eta), side="right") - 1, 0, edges.size - 2)
    size = calib.closure(eta)
    closure = np.ones((eta.size, edges.size - 1, 2))
    for j, sign in enumerate((-1.0, 1.0)):
        closure[np.arange(eta.size), region, j] = scale_weight(pt, gen_pt, sigma, sign * size)
    return stat, closure


#: Variation suffixes of the calibration nuisances (entries of configs/fit_mw.yaml).
STAT_SUFFIX, CLOSURE_SUFFIX = "muonCalibStat", "muonCalibClosure"


def declare(base: str, axes: list[Any], calib: MomentumCalibration) -> dict[str, Any]:
    """The ``<base>_muonCalibStat`` (calibStatEig x downUpVar) and ``<base>_muonCalibClosure``
    (calibClosureRegion x downUpVar) histograms of simulation."""
    from wremnants_dask.engine.tensorhist import TensorHist, tensor_axis
    from wremnants_dask.processors.common import down_up_axis

    n_reg = calib.closure_regions().size - 1
    out = {}
    for suffix, taxis in (
        (STAT_SUFFIX, tensor_axis("calibStatEig", calib.n_eigen)),
        (CLOSURE_SUFFIX, tensor_axis("calibClosureRegion", n_reg)),
    ):
        name = f"{base}_{suffix}"
        out[name] = TensorHist(axes, (taxis, down_up_axis()), storage="double", name=name)
    return out


def tensors(
    calib: MomentumCalibration,
    payload: Any,
    eta: np.ndarray,
    pt: np.ndarray,
    gen_pt: np.ndarray,
) -> dict[str, Any]:
    """suffix -> lazy tensor (slice -> array) of one-muon events, for ``common.fill_all``."""
    stat, closure = nuisance_weights(calib, payload, eta, pt, gen_pt)
    return {
        STAT_SUFFIX: lambda s, a=stat: a[s],
        CLOSURE_SUFFIX: lambda s, a=closure: a[s],
    }
