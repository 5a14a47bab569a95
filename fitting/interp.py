"""Interpolation of systematic variations between theta = -1, 0, +1 (JAX, float64).

A variation is written ``avg * theta + hd * phi(theta)``; ``phi(theta) = theta * f(theta)``
with ``g(x) = x (3 x^4 - 10 x^2 + 15) / 8`` (odd, g(+-1) = +-1, g'(+-1) = g''(+-1) = 0):

* ``smooth``: ``f(theta) = g(theta)`` for |theta| < 1 and ``sign(theta)`` beyond (the pyhf
  code4p form): continuous first and second derivatives, the blend spans |theta| < 1;
* ``rabbit``: ``f(theta) = g(2 theta)`` for |theta| < 1/2 and ``sign(theta)`` beyond, the form
  of the CMS fitter rabbit: the asymmetric part is linear (``hd |theta|``) from |theta| = 1/2.
  The two differ for |theta| in (0, 1) whenever up and down are asymmetric (a W-mass-sized
  model: 3-100 units of NLL at |theta| ~ 1); they agree for symmetrised systematics;
* ``piecewise``: ``f = sign(theta)``, i.e. pyhf code0 (additive) or code1 (on logs).

pyhf's code4 for normsys (a polynomial in the factor itself, exponential beyond |alpha| = 1) is
``code4_factor``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

#: Interpolations ``phi`` knows (the fit input's shape/norm interpolation names).
PHI_MODES = ("smooth", "rabbit", "piecewise", "code0", "code1", "code4p")


def _blend(x: jnp.ndarray) -> jnp.ndarray:
    """g(x) = x (3 x^4 - 10 x^2 + 15) / 8 for |x| < 1, sign(x) beyond."""
    x2 = x * x
    inner = x * (x2 * (3.0 * x2 - 10.0) + 15.0) / 8.0
    return jnp.where(jnp.abs(x) < 1.0, inner, jnp.sign(x))


def phi(theta: jnp.ndarray, mode: str) -> jnp.ndarray:
    """``theta * f(theta)`` for the asymmetric part of a variation (see the module doc)."""
    if mode in ("piecewise", "code0", "code1"):
        return jnp.abs(theta)
    if mode == "rabbit":
        return theta * _blend(2.0 * theta)
    if mode in ("smooth", "code4p"):
        return theta * _blend(theta)
    raise ValueError(f"unknown interpolation {mode!r}; known: {PHI_MODES}")


# pyhf code4 (alpha0 = 1): polynomial coefficients a = A_INV @ b
_A_INV = np.array(
    [
        [15 / 16, -15 / 16, -7 / 16, -7 / 16, 1 / 16, -1 / 16],
        [3 / 2, 3 / 2, -9 / 16, 9 / 16, 1 / 16, 1 / 16],
        [-5 / 8, 5 / 8, 5 / 8, 5 / 8, -1 / 8, 1 / 8],
        [-3 / 2, -3 / 2, 7 / 8, -7 / 8, -1 / 8, -1 / 8],
        [3 / 16, -3 / 16, -3 / 16, -3 / 16, 1 / 16, -1 / 16],
        [1 / 2, 1 / 2, -5 / 16, 5 / 16, 1 / 16, 1 / 16],
    ]
)


def code4_coefficients(logup: np.ndarray, logdn: np.ndarray) -> np.ndarray:
    """Polynomial coefficients [6, ...] of pyhf code4 from log(hi), log(lo)."""
    up, dn = np.exp(logup), np.exp(logdn)
    b = np.stack([up - 1, dn - 1, logup * up, -logdn * dn, logup**2 * up, logdn**2 * dn])
    return np.tensordot(_A_INV, b, axes=(1, 0))


def code4_logfactor(
    alpha: jnp.ndarray, logup: jnp.ndarray, logdn: jnp.ndarray, coef: jnp.ndarray
) -> jnp.ndarray:
    """log of the pyhf code4 factor; ``alpha`` broadcasts against ``logup`` (last axis)."""
    outside = jnp.where(alpha >= 1.0, alpha * logup, -alpha * logdn)
    a_in = jnp.clip(alpha, -1.0, 1.0)
    poly = 1.0 + sum(coef[i] * a_in ** (i + 1) for i in range(6))
    inside = jnp.log(jnp.where(jnp.abs(alpha) < 1.0, poly, 1.0))
    return jnp.where(jnp.abs(alpha) < 1.0, inside, outside)
