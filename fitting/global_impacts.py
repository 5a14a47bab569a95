"""Global impacts: how much each measured input moves the POI, per its own uncertainty.

The fitted parameters are a function of everything the likelihood observes: the data counts,
the auxiliary (global) observables of the constrained nuisances, and, with Barlow-Beeston
lite, the effective MC counts. At the minimum ``g(x-hat, obs) = 0`` (``g`` = gradient of the
NLL in the free parameters), so by the implicit function theorem

    d x-hat / d obs = -C  d g / d obs,          C = H^-1 (the fit covariance).

The global impact of an observable on a POI is ``d poi / d obs * sigma(obs)``: a data count has
``sigma^2 = n`` (Poisson), a Gaussian global observable its prior width, a Poisson-constrained
one its count, an MC count ``k`` its Poisson ``sqrt(k)``. Grouped, they add in quadrature;
data counts make the ``stat`` group and MC counts the ``binByBinStat`` group. This is the
definition the CMS W-mass fit (rabbit) reports next to the traditional impacts
``cov(poi, k) / sigma_k``: unlike those, the groups partition the POI variance, exactly where
the likelihood is quadratic in the observables' effect (e.g. on expected data,
``tests/test_global_impacts.py``).

``d g / d obs`` is never built as a matrix: one reverse-mode pass of ``v . g(x, obs)`` per POI
(``v`` = the POI's row of ``C``) gives the whole row ``d poi / d obs``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .fitinput import GAUSS, POISSON
from .model import FitModel, mc_counts

STAT_GROUP = "stat"
MCSTAT_GROUP = "binByBinStat"


def observables(model: FitModel, obs: dict[str, Any]) -> dict[str, jnp.ndarray]:
    """The fit's observations with, for BB lite, the MC counts as an observable (``bb_aux``;
    at their nominal ``k`` the likelihood is the one fitted)."""
    out = {k: jnp.asarray(v) for k, v in obs.items()}
    if model.static.bb_mode == "lite" and "bb_aux" not in out:
        out["bb_aux"] = jnp.asarray(mc_counts(model.arrays["kinv"]))
    return out


def observable_variances(model: FitModel, obs: dict[str, jnp.ndarray]) -> dict[str, np.ndarray]:
    """Variance of each observation: Poisson counts for data and MC counts, the prior width^2
    of Gaussian global observables, the count of Poisson-constrained ones, 0 for none."""
    a = model.arrays
    c, w = np.asarray(a["constraint"]), np.asarray(a["width"])
    aux = np.asarray(obs["aux"])
    var = {
        "data": np.asarray(obs["data"]) * np.asarray(a["mask"]),
        "aux": np.where(c == GAUSS, w**2, np.where(c == POISSON, aux, 0.0)),
    }
    if "bb_aux" in obs:
        var["bb_aux"] = np.asarray(obs["bb_aux"]) * (np.asarray(a["kinv"]) > 0)
    return var


def poi_derivatives(
    model: FitModel, x: np.ndarray, cov: np.ndarray, free: np.ndarray, obs: dict, poi: int
) -> dict[str, np.ndarray]:
    """``d poi-hat / d obs`` for every observation (same keys and shapes as ``obs``)."""
    v = jnp.asarray(np.where(free, cov[poi], 0.0))

    def contracted(o: dict[str, jnp.ndarray], xj: jnp.ndarray, vj: jnp.ndarray, a: Any):
        return jnp.dot(vj, jax.grad(model.nll)(xj, o, a))

    # one compiled program; the model's arrays are arguments, not baked-in constants
    dg = jax.jit(jax.grad(contracted))(obs, jnp.asarray(x), v, model.arrays)
    return {k: -np.asarray(d) for k, d in dg.items()}


def global_impacts(
    model: FitModel,
    x: np.ndarray,
    cov: np.ndarray,
    free: np.ndarray,
    obs: dict[str, Any],
    pois: list[int],
    param_names: list[str],
    groups: dict[str, list[str]],
) -> dict[str, Any]:
    """Global impacts on each POI: per constrained parameter (its global observable), per
    group (quadrature), and the data-statistics and MC-statistics groups."""
    o = observables(model, obs)
    var = observable_variances(model, o)
    index = {n: i for i, n in enumerate(param_names)}
    per = np.zeros((len(pois), len(param_names)))
    stat = np.zeros(len(pois))
    mcstat = np.zeros(len(pois))
    for k, p in enumerate(pois):
        d = poi_derivatives(model, x, cov, free, o, p)
        per[k] = d["aux"] * np.sqrt(var["aux"])
        stat[k] = np.sqrt(np.sum(d["data"] ** 2 * var["data"]))
        if "bb_aux" in d:
            mcstat[k] = np.sqrt(np.sum(d["bb_aux"] ** 2 * var["bb_aux"]))
    grouped = (
        np.stack(
            [
                np.sqrt((per[:, [index[m] for m in members]] ** 2).sum(1))
                for members in groups.values()
            ],
            axis=1,
        )
        if groups
        else np.zeros((len(pois), 0))
    )
    total = np.sqrt(stat**2 + mcstat**2 + (per**2).sum(1))
    return {
        "params": list(param_names),
        "impacts": per,
        "groups": list(groups),
        "grouped": grouped,
        STAT_GROUP: stat,
        MCSTAT_GROUP: mcstat,
        "total": total,  # quadrature sum of all; equals the POI error where the fit is Gaussian
    }
