"""Analytic line shapes of the alternative tag-and-probe fits (JAX, differentiable, vmappable).

Signal alternatives to the simulation template: a Voigtian (Breit-Wigner of the Z width
convolved with a Gaussian resolution, through the Faddeeva function) and a Crystal Ball (a
Gaussian core with a power-law tail towards low mass, where final-state radiation puts the
probes). Background alternative to the falling exponential: a straight line (the first-order
Bernstein polynomial, positive over the whole fit range for any slope parameter). Every shape
returns the probability of each fit bin, integrated with 4-point Gauss-Legendre per 1-GeV-scale
bin (the densities vary on the scale of the widths, >= 1 GeV) and normalised over the fit range.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

GAMMA_Z = 2.4952  # GeV, the Z width (PDG): the Breit-Wigner of the Voigtian
M_Z = 91.1876  # GeV: the Voigtian and Crystal-Ball peaks sit at M_Z + shift
_GL_X, _GL_W = np.polynomial.legendre.leggauss(4)


def _faddeeva_coefficients(n: int = 32) -> tuple[float, np.ndarray]:
    """Weideman's (1994) rational expansion of w(z) for Im z > 0: L and the n coefficients."""
    m = 2 * n
    k = np.arange(-m + 1, m)
    big_l = np.sqrt(n / np.sqrt(2.0))
    t = big_l * np.tan(k * np.pi / (2 * m))
    f = np.concatenate([[0.0], np.exp(-t * t) * (big_l * big_l + t * t)])
    a = np.real(np.fft.fft(np.fft.fftshift(f))) / (2 * m)
    return big_l, a[1 : n + 1][::-1].copy()


_FAD_L, _FAD_A = _faddeeva_coefficients()


def faddeeva(z: jnp.ndarray) -> jnp.ndarray:
    """w(z) = exp(-z^2) erfc(-iz) for Im z > 0 (relative accuracy ~1e-13 with 32 terms).

    The Horner recursion is a lax.scan: unrolled, its Hessian made XLA compile for minutes."""
    lz = _FAD_L - 1j * z
    zz = (_FAD_L + 1j * z) / lz

    def horner(p, c):
        return p * zz + c, None

    p, _ = jax.lax.scan(horner, jnp.zeros_like(zz), jnp.asarray(_FAD_A, dtype=zz.dtype))
    return 2.0 * p / lz**2 + 1.0 / (np.sqrt(np.pi) * lz)


def voigt_density(m: jnp.ndarray, mean, sigma, gamma_half) -> jnp.ndarray:
    """The Voigt profile: Lorentzian of half width ``gamma_half`` convolved with N(0, sigma)."""
    z = ((m - mean) + 1j * gamma_half) / (sigma * np.sqrt(2.0))
    return jnp.real(faddeeva(z)) / (sigma * np.sqrt(2.0 * np.pi))


def crystal_ball_density(m: jnp.ndarray, mean, sigma, alpha, n) -> jnp.ndarray:
    """Unnormalised Crystal Ball with the power-law tail below mean - alpha sigma."""
    t = (m - mean) / sigma
    tail_t = jnp.minimum(t, -alpha)  # keeps the power's base positive on both branches
    a = (n / alpha) ** n * jnp.exp(-0.5 * alpha * alpha)
    b = n / alpha - alpha
    return jnp.where(t > -alpha, jnp.exp(-0.5 * t * t), a * (b - tail_t) ** (-n))


def _bin_integrals(density, centres: jnp.ndarray, width: float) -> jnp.ndarray:
    x = centres[:, None] + 0.5 * width * jnp.asarray(_GL_X)[None, :]
    vals = density(x) @ jnp.asarray(0.5 * width * _GL_W)
    return vals / vals.sum()


def signal_shape(kind: str, theta: jnp.ndarray, centres: jnp.ndarray, width: float):
    """Fit-bin probabilities of the analytic signal ``kind`` (theta: the fit parameters;
    [6] shift, [7] log sigma, [8] log alpha, [9] log(n - 1))."""
    mean, sigma = M_Z + theta[6], jnp.exp(theta[7])
    if kind == "voigt":
        return _bin_integrals(
            lambda x: voigt_density(x, mean, sigma, 0.5 * GAMMA_Z), centres, width
        )
    if kind == "cb":
        alpha, n = jnp.exp(theta[8]), 1.0 + jnp.exp(theta[9])
        return _bin_integrals(
            lambda x: crystal_ball_density(x, mean, sigma, alpha, n), centres, width
        )
    raise ValueError(f"unknown signal shape {kind!r} (template, voigt, cb)")


def linear_shape(centres: jnp.ndarray, slope) -> jnp.ndarray:
    """1 + tanh(slope) x over the fit range (x in [-1, 1]): positive for every slope."""
    x = (centres - centres.mean()) / (0.5 * (centres[-1] - centres[0]))
    e = 1.0 + jnp.tanh(slope) * x
    return e / e.sum()
