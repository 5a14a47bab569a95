"""Theory weight tensors: boson mass/width (running-width) Breit-Wigner reweighting, PDF and QCD-scale weights.

Every function takes flat numpy or awkward arrays for a chunk of events and returns a dense
``(n_events, ...)`` numpy tensor of *relative* weights (variation / nominal), so the processor
multiplies them by the nominal event weight and fills one histogram with tensor axes instead of
re-running the event loop per variation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import awkward as ak
import numpy as np

#: GenPart_statusFlags bit 13 = isLastCopy (NanoAOD convention).
IS_LAST_COPY = 1 << 13
#: Default mass shifts (MeV): -100 ... +100 in 10 MeV steps, 21 entries incl. nominal (index 10).
MASS_SHIFTS_MEV: tuple[int, ...] = tuple(range(-100, 101, 10))
#: Default width variations (GeV), as the CMS W-mass analysis: Gamma_W by its SM-predicted
#: uncertainty (+-0.6 MeV), Gamma_Z by +-0.8 MeV (not the +-42 MeV of the PDG measurement).
#: Processor option ``width_unc_gev`` ({"W": ..., "Z": ...}) overrides them.
WIDTH_SHIFTS_GEV: dict[str, float] = {"W": 0.0006, "Z": 0.0008}
#: QCD scale factors; LHEScaleWeight index = 3 * i(muR) + i(muF) in NanoAOD.
SCALE_FACTORS: tuple[float, ...] = (0.5, 1.0, 2.0)
#: The 7-point set (muR, muF) indices used for the envelope, dropping the (0.5, 2) / (2, 0.5) corners.
SEVEN_POINT: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2))


def last_copy_boson_mass(
    pdg_id: ak.Array, status_flags: ak.Array, mass: ak.Array, pdg_ids: Sequence[int]
) -> np.ndarray:
    """Mass (GeV) of the first last-copy generator boson with |pdgId| in ``pdg_ids``; NaN if none.

    The last copy carries the mass after all radiation and is the one the Breit-Wigner
    reweighting must use (matrix-element mass, not a pre-shower copy).
    """
    sel = ak.zeros_like(pdg_id, dtype=bool)
    for pid in pdg_ids:
        sel = sel | (abs(pdg_id) == abs(int(pid)))
    sel = sel & ((status_flags & IS_LAST_COPY) != 0)
    first = ak.firsts(mass[sel])
    return ak.to_numpy(ak.fill_none(first, np.nan)).astype(np.float64)


def running_width(width0: float, mass0: float, mass: float) -> float:
    """Width at boson mass ``mass`` given ``width0`` at ``mass0``: Gamma(M) = Gamma0 (M/M0)^3.

    The electroweak partial widths scale as G_F M^3, so a sample generated at another mass has
    this width; the mass templates change both (as CMS's MiNNLO mass weights do).
    """
    return float(width0) * (float(mass) / float(mass0)) ** 3


def _lorentz_in_s(mass0: float, width0: float) -> tuple[float, float, float]:
    """(s0, b, c) with (s - M^2)^2 + s^2 Gamma^2/M^2 = c ((s - s0)^2 + b^2).

    Completing the square: c = 1 + g^2, s0 = M^2 / c, b = M^2 g / c with g = Gamma / M; the
    running-width lineshape is a Lorentzian in s centred slightly below M^2.
    """
    g = width0 / mass0
    c = 1.0 + g * g
    return mass0**2 / c, mass0**2 * g / c, c


def bw_norm(mass0: float, width0: float, lo: float | None, hi: float | None) -> float:
    """Integral over m in [lo, hi] of 2m / ((m^2-M^2)^2 + m^4 Gamma^2/M^2), the running-width
    Breit-Wigner in s = m^2 (Gamma(s) = Gamma s / M^2).

    ``lo = None`` starts at m = 0 and ``hi = None`` runs to infinity.
    """
    s0, b, c = _lorentz_in_s(mass0, width0)
    s_lo = 0.0 if lo is None else lo * lo
    s_hi = np.inf if hi is None else hi * hi
    return float((np.arctan((s_hi - s0) / b) - np.arctan((s_lo - s0) / b)) / (b * c))


def bw_density(
    m: np.ndarray, mass0: float, width0: float, lo: float | None = None, hi: float | None = None
) -> np.ndarray:
    """Normalised relativistic running-width Breit-Wigner density in m (GeV^-1) on [lo, hi]:
    p(m) = 2m / ((m^2 - M^2)^2 + m^4 Gamma^2 / M^2) / norm (the s-dependent width of the
    Z/W propagator, Gamma(s) = Gamma s / M^2)."""
    m = np.asarray(m, dtype=np.float64)
    s = m * m
    val = 2.0 * m / ((s - mass0**2) ** 2 + (s * width0 / mass0) ** 2)
    return val / bw_norm(mass0, width0, lo, hi)


def bw_weights(
    m: np.ndarray,
    mass0: float,
    width0: float,
    masses: Sequence[float],
    widths: Sequence[float],
    lo: float | None = None,
    hi: float | None = None,
) -> np.ndarray:
    """Weights p(m; M_i, Gamma_i) / p(m; M0, Gamma0) for each (mass, width) pair -> (n, k).

    Both densities are normalised on the generated window, so the total cross section stays
    fixed and only the lineshape moves (as in a sample generated with the shifted mass).
    Events without a boson (NaN mass) get weight 1.
    """
    m = np.asarray(m, dtype=np.float64)
    nominal = bw_density(m, mass0, width0, lo, hi)
    out = np.empty((m.shape[0], len(masses)), dtype=np.float64)
    for i, (mi, gi) in enumerate(zip(masses, widths)):
        if mi == mass0 and gi == width0:
            out[:, i] = 1.0  # the nominal entry exactly (no rounding in the sum rule)
            continue
        out[:, i] = bw_density(m, mi, gi, lo, hi) / nominal
    out[~np.isfinite(out)] = 1.0
    return out


def mass_weights(
    m: np.ndarray,
    mass0: float,
    width0: float,
    shifts_mev: Sequence[float] = MASS_SHIFTS_MEV,
    lo: float | None = None,
    hi: float | None = None,
) -> np.ndarray:
    """Mass-variation tensor (n, len(shifts_mev)); the entry with shift 0 is exactly 1.

    Each shifted lineshape has the width that goes with its mass, ``running_width``.
    """
    masses = [mass0 + s * 1e-3 for s in shifts_mev]
    widths = [running_width(width0, mass0, mi) for mi in masses]
    return bw_weights(m, mass0, width0, masses, widths, lo, hi)


def width_weights(
    m: np.ndarray,
    mass0: float,
    width0: float,
    delta_gev: float,
    lo: float | None = None,
    hi: float | None = None,
) -> np.ndarray:
    """Width-variation tensor (n, 2): [Gamma - delta, Gamma + delta] (down, up)."""
    if not 0.0 < delta_gev < width0:
        raise ValueError(f"width variation {delta_gev} GeV must be in (0, Gamma = {width0})")
    widths = [width0 - delta_gev, width0 + delta_gev]
    return bw_weights(m, mass0, width0, [mass0, mass0], widths, lo, hi)


def pdf_weights(lhe_pdf: ak.Array, n_expected: int) -> np.ndarray:
    """LHEPdfWeight as a dense (n, n_expected) tensor of w_var / w_nominal (branch dtype).

    Raises a ValueError naming the branch if an event carries a different number of weights:
    a silent truncation would mislabel PDF members.
    """
    counts = ak.to_numpy(ak.num(lhe_pdf, axis=1))
    if counts.size and not np.all(counts == n_expected):
        bad = np.unique(counts[counts != n_expected])
        raise ValueError(
            f"LHEPdfWeight has {bad.tolist()} entries per event, expected {n_expected} "
            "(PDF set with alphaS variations)"
        )
    # Kept in the branch's float32: the fill kernel multiplies by the float64 nominal weight
    # exactly, and a float64 copy would double the memory traffic of the largest tensor.
    flat = ak.to_numpy(ak.flatten(lhe_pdf, axis=1))
    if flat.dtype != np.float32 and flat.dtype != np.float64:
        flat = flat.astype(np.float64)
    return flat.reshape(len(counts), n_expected)


def scale_weights(lhe_scale: ak.Array) -> np.ndarray:
    """LHEScaleWeight as a dense (n, 3, 3) tensor indexed [muR, muF] with factors 0.5, 1, 2.

    NanoAOD stores 9 entries (index 3*iR + iF) or 8 (nominal dropped); the nominal is 1.
    """
    counts = ak.to_numpy(ak.num(lhe_scale, axis=1))
    n = len(counts)
    flat = ak.to_numpy(ak.flatten(lhe_scale, axis=1)).astype(np.float64)
    if n and np.all(counts == 9):
        dense = flat.reshape(n, 9)
    elif n and np.all(counts == 8):
        dense = np.insert(flat.reshape(n, 8), 4, 1.0, axis=1)
    elif n == 0:
        dense = np.ones((0, 9))
    else:
        raise ValueError(
            f"LHEScaleWeight has {np.unique(counts).tolist()} entries per event, expected 9 or 8"
        )
    return dense.reshape(n, 3, 3)


def n_pdf_from_title(title: str) -> int | None:
    """Number of PDF members from a NanoAOD LHEPdfWeight title ('LHA IDs 91400 - 91432')."""
    match = re.search(r"LHA IDs\s+(\d+)\s*-\s*(\d+)", title or "")
    if not match:
        return None
    return int(match.group(2)) - int(match.group(1)) + 1


def first_lhaid_from_title(title: str) -> int | None:
    """First LHA ID of a NanoAOD LHEPdfWeight title ('LHA IDs 91400 - 91432' -> 91400)."""
    match = re.search(r"LHA IDs\s+(\d+)\s*-\s*(\d+)", title or "")
    return int(match.group(1)) if match else None
