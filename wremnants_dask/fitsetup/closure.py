"""MC non-closure correction of a data-driven background method (the non-prompt ABCD).

Run on simulated non-prompt events alone (no prompt subtraction), the method predicts the
signal-region yield that the same simulation holds: the ratio ``true / predicted`` is the
method's non-closure, due to what its model leaves out (a fake rate that is not log-linear in mT,
the exponential extrapolation of noisy fake rates). That ratio multiplies the prediction from
data; its uncertainty is the statistical one of the ratio (the simulation's sample size, from
replicas of the histogram) combined with half the correction, as a normalisation nuisance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hist
import numpy as np

from wremnants_dask.fitsetup import histops

__all__ = ["McClosure", "mc_closure", "replica"]


@dataclass(frozen=True)
class McClosure:
    """Signal-region yield of the simulation (``true``), the method's prediction on it
    (``predicted``) and the relative statistical uncertainty of their ratio (``stat``)."""

    true: float
    predicted: float
    stat: float
    n_replicas: int

    @property
    def correction(self) -> float:
        """Factor applied to the data-driven prediction: true / predicted."""
        return self.true / self.predicted

    @property
    def uncertainty(self) -> float:
        """Relative uncertainty of the corrected prediction: stat (+) half the correction."""
        return float(np.hypot(self.stat, 0.5 * abs(self.correction - 1.0)))

    def summary(self) -> dict[str, Any]:
        return {
            "true": self.true,
            "predicted": self.predicted,
            "correction": self.correction,
            "stat": self.stat,
            "uncertainty": self.uncertainty,
            "n_replicas": self.n_replicas,
        }


def replica(h: hist.Hist, rng: np.random.Generator) -> hist.Hist:
    """A statistically independent copy of a weighted histogram: in each bin ``n_eff =
    value**2 / variance`` events of weight ``variance / value`` drawn from Poisson(n_eff) (exact
    for unit weights, positive as the counts are); bins with a non-positive sum of weights get a
    Gaussian fluctuation of their variance. Without variances the values are Poisson counts."""
    v, w = histops.hist_arrays(h, flow=False)
    w = v.copy() if w is None else w
    pos = (v > 0) & (w > 0)
    n_eff = np.where(pos, v**2 / np.where(pos, w, 1.0), 0.0)
    scale = np.where(pos, w / np.where(pos, v, 1.0), 0.0)
    out = np.where(
        pos, scale * rng.poisson(n_eff), v + rng.normal(size=v.shape) * np.sqrt(np.abs(w))
    )
    return histops.make_hist(list(h.axes), out, w.copy(), flow=False)


def mc_closure(
    mc: hist.Hist,
    predict: Callable[[hist.Hist], float],
    signal: dict[str, Any],
    *,
    n_replicas: int = 100,
    seed: int = 20,
) -> McClosure:
    """Non-closure of ``predict`` (histogram of simulated non-prompt events -> predicted
    signal-region yield) against the yield of ``mc`` in the ``signal`` bins.

    ``stat`` is the spread of ``true / predicted`` over ``n_replicas`` replicas of ``mc``
    (``replica``; fixed ``seed``: the same input gives the same correction), relative to the
    nominal ratio. Replicas on which the method fails (too few positive points to smooth) are
    skipped; fewer than half succeeding, or a non-positive nominal yield, is an error.
    """
    true = float(histops.select(mc, signal).values().sum())
    predicted = float(predict(mc))
    if not (true > 0 and predicted > 0):
        raise ValueError(
            f"MC closure needs positive yields: simulated signal region {true:.4g}, "
            f"prediction {predicted:.4g}"
        )
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(n_replicas):
        r = replica(mc, rng)
        try:
            p = float(predict(r))
        except ValueError:
            continue
        t = float(histops.select(r, signal).values().sum())
        if p > 0 and t > 0:
            ratios.append(t / p)
    if n_replicas and len(ratios) < max(2, n_replicas // 2):
        raise ValueError(
            f"MC closure: the method failed on {n_replicas - len(ratios)} of {n_replicas} "
            "replicas of the simulation (too few non-prompt events to smooth)"
        )
    stat = float(np.std(ratios, ddof=1) / (true / predicted)) if ratios else 0.0
    return McClosure(true=true, predicted=predicted, stat=stat, n_replicas=len(ratios))
