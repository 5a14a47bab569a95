"""Vectorised four-vector helpers and the spectra the generator samples from.

Four-vectors are tuples of numpy arrays (px, py, pz, E) in GeV. All samplers take a numpy
Generator and return arrays, so one chunk of events is produced without Python loops.
"""

from __future__ import annotations

import numpy as np

MU_MASS = 0.1056584
TAU_MASS = 1.77686
PI_MASS = 0.13957
E_MASS = 0.000511
TOP_MASS = 172.5
B_MASS = 4.8
SQRT_S = 13000.0

Vec = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def from_ptetaphim(pt, eta, phi, m) -> Vec:
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return px, py, pz, np.sqrt(px * px + py * py + pz * pz + m * m)


def from_ptyphim(pt, y, phi, m) -> Vec:
    mt = np.sqrt(m * m + pt * pt)
    return pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y), mt * np.cosh(y)


def to_ptetaphim(v: Vec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    px, py, pz, e = v
    pt = np.hypot(px, py)
    eta = np.arcsinh(np.divide(pz, pt, out=np.sign(pz) * 1e4, where=pt > 0))
    phi = np.arctan2(py, px)
    m = np.sqrt(np.maximum(e * e - px * px - py * py - pz * pz, 0.0))
    return pt, eta, phi, m


def add(a: Vec, b: Vec) -> Vec:
    return tuple(x + y for x, y in zip(a, b))  # type: ignore[return-value]


def sub(a: Vec, b: Vec) -> Vec:
    return tuple(x - y for x, y in zip(a, b))  # type: ignore[return-value]


def boost(v: Vec, parent: Vec) -> Vec:
    """Boost ``v`` from the rest frame of ``parent`` to the frame where parent has momentum."""
    px, py, pz, e = v
    bx, by, bz = parent[0] / parent[3], parent[1] / parent[3], parent[2] / parent[3]
    b2 = np.minimum(bx * bx + by * by + bz * bz, 1.0 - 1e-15)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = bx * px + by * py + bz * pz
    g2 = np.where(b2 > 0, (gamma - 1.0) / np.where(b2 > 0, b2, 1.0), 0.0)
    k = g2 * bp + gamma * e
    return px + k * bx, py + k * by, pz + k * bz, gamma * (e + bp)


def two_body(parent: Vec, mass: np.ndarray, m1, m2, cos_t, phi) -> tuple[Vec, Vec]:
    """Decay ``parent`` (invariant mass ``mass``) to m1 + m2 with daughter-1 direction
    (cos_t, phi) in the parent rest frame (axes parallel to the lab axes)."""
    m1 = np.broadcast_to(m1, mass.shape)
    m2 = np.broadcast_to(m2, mass.shape)
    lam = (mass**2 - (m1 + m2) ** 2) * (mass**2 - (m1 - m2) ** 2)
    p = np.sqrt(np.maximum(lam, 0.0)) / (2.0 * mass)
    sin_t = np.sqrt(np.maximum(1.0 - cos_t * cos_t, 0.0))
    dx, dy, dz = p * sin_t * np.cos(phi), p * sin_t * np.sin(phi), p * cos_t
    d1 = (dx, dy, dz, np.sqrt(p * p + m1 * m1))
    d2 = (-dx, -dy, -dz, np.sqrt(p * p + m2 * m2))
    return boost(d1, parent), boost(d2, parent)


def isotropic(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(-1.0, 1.0, n), rng.uniform(-np.pi, np.pi, n)


def sample_bw(rng: np.random.Generator, n: int, mass: float, width: float, window) -> np.ndarray:
    """Masses from the running-width Breit-Wigner p(m) = 2m / ((m^2-M^2)^2 + m^4 G^2/M^2) on
    [lo, hi] (exact inverse CDF: in s = m^2 it is a Lorentzian centred at M^2/(1+g^2) with
    half-width M^2 g/(1+g^2), g = G/M)."""
    lo, hi = window
    g2 = (width / mass) ** 2
    s0, b = mass**2 / (1.0 + g2), mass**2 * np.sqrt(g2) / (1.0 + g2)
    a_lo, a_hi = np.arctan((lo * lo - s0) / b), np.arctan((hi * hi - s0) / b)
    s = s0 + b * np.tan(rng.uniform(a_lo, a_hi, n))
    return np.sqrt(s)


#: Boson-pT tilt g(qT) = tanh((qT - BOSON_PT_TILT_CENTRE) / BOSON_PT_TILT_WIDTH) (GeV).
BOSON_PT_TILT_CENTRE = 10.0
BOSON_PT_TILT_WIDTH = 10.0


def boson_pt_tilt(qt: np.ndarray, tilt: float) -> np.ndarray:
    """Unnormalised reweighting 1 + tilt * tanh((qT - 10) / 10) of a boson-pT density: the
    data/simulation difference of the qT spectrum (the same function for W and Z)."""
    qt = np.asarray(qt, dtype=np.float64)
    return 1.0 + tilt * np.tanh((qt - BOSON_PT_TILT_CENTRE) / BOSON_PT_TILT_WIDTH)


def _boson_pt_of_u(u: np.ndarray, b: float, power: float) -> np.ndarray:
    """The inverse CDF of p(pT) ~ pT (1 + pT^2/b^2)^-power (u in [0, 1))."""
    return b * np.sqrt((1.0 - u) ** (1.0 / (1.0 - power)) - 1.0)


_TILT_GRID = 200_001


def _tilted_u(v: np.ndarray, b: float, power: float, fmax: float, tilt: float) -> np.ndarray:
    """u in [0, fmax] of the untilted sampler whose tilted CDF is v * total (v in [0, 1]): the
    tilted CDF G(u) = int_0^u (1 + tilt g(pT(u'))) du' on a fine grid in u, inverted linearly
    (G is smooth in u; the grid error is far below any sample's statistical precision)."""
    grid = np.linspace(0.0, fmax, _TILT_GRID)
    f = boson_pt_tilt(_boson_pt_of_u(grid, b, power), tilt)
    g = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(grid))])
    return np.interp(v * g[-1], g, grid)


def sample_boson_pt(
    rng: np.random.Generator, n: int, b: float, power: float, ptmax: float, tilt: float = 0.0
):
    """p(pT) ~ pT (1 + pT^2/b^2)^-power on [0, ptmax]: peak near b/sqrt(2 power - 1).

    ``tilt`` != 0: the density times ``boson_pt_tilt(pT, tilt)`` (normalised on [0, ptmax]),
    drawn from the same uniform numbers (one draw per event either way), so a tilted sample
    of a seed is the untilted one with each boson pT moved monotonically."""
    if not -1.0 < tilt < 1.0:
        raise ValueError(f"boson pT tilt must be in (-1, 1) (a positive density), got {tilt}")
    fmax = 1.0 - (1.0 + ptmax**2 / b**2) ** (1.0 - power)
    u = rng.uniform(0.0, fmax, n)
    if tilt != 0.0:
        u = _tilted_u(u / fmax, b, power, fmax, tilt)
    return _boson_pt_of_u(u, b, power)


def sample_truncnorm(rng: np.random.Generator, n: int, sigma: float, limit: float, mean=0.0):
    """Normal(mean, sigma) truncated to |x - mean| < limit (exact inverse CDF)."""
    from scipy import special  # here, not at import: checking a cached dataset imports synth

    c = special.ndtr(limit / sigma)
    return mean + sigma * special.ndtri(rng.uniform(1.0 - c, c, n))


def sample_quark_frame_cos(rng: np.random.Generator, n: int, frac_plus: np.ndarray | float):
    """cos(theta) from frac_plus * 3/8 (1+c)^2 + (1 - frac_plus) * 3/8 (1-c)^2 (exact).

    frac_plus = 1: (1 + cos)^2; 0: (1 - cos)^2; 1/2 + A4/4: 1 + cos^2 + A4 cos.
    """
    u = rng.uniform(0.0, 1.0, n)
    plus = rng.uniform(0.0, 1.0, n) < frac_plus
    return np.where(plus, 2.0 * np.cbrt(u) - 1.0, 1.0 - 2.0 * np.cbrt(1.0 - u))


def quark_direction(rng: np.random.Generator, y: np.ndarray) -> np.ndarray:
    """+-1: direction of the quark (vs antiquark); it follows the boson boost at large |y|."""
    p_along = 0.5 + 0.4 * np.tanh(np.abs(y) / 1.2)
    along = rng.uniform(0.0, 1.0, y.size) < p_along
    sgn = np.where(y >= 0, 1.0, -1.0)
    return np.where(along, sgn, -sgn)


def michel_x(rng: np.random.Generator, n: int) -> np.ndarray:
    """Lepton energy fraction x = 2E/m_tau in unpolarised tau -> l nu nu: p(x) = 2x^2(3-2x)."""
    grid = np.linspace(0.0, 1.0, 2049)
    cdf = 2 * grid**3 - grid**4
    return np.interp(rng.uniform(0.0, 1.0, n), cdf, grid)


def transverse_mass(pt1, phi1, pt2, phi2):
    return np.sqrt(np.maximum(2.0 * pt1 * pt2 * (1.0 - np.cos(phi1 - phi2)), 0.0))
