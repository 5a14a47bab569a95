"""Symmetrisation of asymmetric variations, done once when the fit input is written.

A variation is given by ``vu`` (at theta=+1) and ``vd`` (at theta=-1), in log space for
log-normal systematics (``log(up/nom)``, ``log(down/nom)``) or as differences for additive
ones. Internally a systematic is ``avg * theta + hd * phi(theta)`` with
``avg = (vu - vd)/2`` and ``hd = (vu + vd)/2``. The options trade fidelity for linearity:

* ``none``: keep the asymmetry (smooth interpolation, exact at theta = +-1);
* ``average``: drop the asymmetric part (``hd = 0``);
* ``conservative``: the larger of ``|vu|``, ``|vd|`` per bin, with the sign of the up shift;
* ``linear``: split into two symmetric linear parameters ``<name>SymAvg`` (avg) and
  ``<name>SymDiff`` (hd), which together keep the variance ``(vu^2 + vd^2)/2``;
* ``quadratic``: as ``linear`` but the difference term scaled by sqrt(3), the RMS of a term
  quadratic in a unit-Gaussian parameter (as in rabbit).
"""

from __future__ import annotations

import numpy as np

SYMMETRIZE = ("none", "average", "conservative", "linear", "quadratic")


def symmetrize(
    name: str, vu: np.ndarray, vd: np.ndarray, mode: str
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Return ``[(param_name, avg, hd), ...]`` for one variation under ``mode``."""
    if mode not in SYMMETRIZE:
        raise ValueError(
            f"systematic {name!r}: symmetrize must be one of {SYMMETRIZE}, got {mode!r}"
        )
    vu = np.asarray(vu, np.float64)
    vd = np.asarray(vd, np.float64)
    avg = 0.5 * (vu - vd)
    hd = 0.5 * (vu + vd)
    zero = np.zeros_like(avg)
    if mode == "none":
        return [(name, avg, hd)]
    if mode == "average":
        return [(name, avg, zero)]
    if mode == "conservative":
        sym = np.where(np.abs(vu) >= np.abs(vd), vu, -vd)
        return [(name, sym, zero)]
    fac = np.sqrt(3.0) if mode == "quadratic" else 1.0
    return [(f"{name}SymAvg", avg, zero), (f"{name}SymDiff", fac * hd, zero)]
