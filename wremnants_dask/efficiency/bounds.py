"""The error of an efficiency at its physical bound (no failing or no passing probe).

With k = 0 failing probes of n the binomial likelihood ratio L(t) / L(1) = t^n equals the
probability of observing k = 0 at the true efficiency t. The interval [1 - err, 1] with
t^n >= 1 - BOUND_CL at its lower end (the one-sided Clopper-Pearson limit at BOUND_CL) excludes
a true efficiency only where the bound had a probability below 1 - BOUND_CL = 31.7 % to be
observed: the non-coverage of a one-sigma Gaussian error. In likelihood terms the limit is where
the NLL has risen by -ln(1 - BOUND_CL) = 1.148 from the bound (the fit's scan uses that rise);
the usual rise of 1/2 would give 0.5 / n, an interval that misses the truth up to 61 % of the
time (exp(-1/2)), and the Hessian or binomial error is zero there.

Counting and sPlot measure signal yields with background subtracted or sWeighted: their bound
error is the Clopper-Pearson limit with the effective number of probes on the populated side,
n_eff = yield^2 / variance (the raw count without background or weights, so exact there).
"""

from __future__ import annotations

import numpy as np

#: one-sided confidence level of the interval [1 - err, 1] (or [0, err]) at a bound: the
#: probability content of +-1 sigma of a Gaussian, erf(1/sqrt 2)
BOUND_CL = 0.6826894921370859
#: NLL rise from the bound at the one-sided limit: -ln(1 - BOUND_CL)
BOUND_DNLL = float(-np.log(1.0 - BOUND_CL))


def clopper_pearson_bound(n: np.ndarray, cl: float = BOUND_CL) -> np.ndarray:
    """1 - (1 - cl)^(1/n): distance from the bound of the one-sided limit with 0 of n probes
    on the other side (NaN for n <= 0)."""
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, -np.expm1(np.log1p(-cl) / n), np.nan)


def at_bound(
    eff: np.ndarray,
    err: np.ndarray,
    sig_pass: np.ndarray,
    var_pass: np.ndarray,
    sig_fail: np.ndarray,
    var_fail: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(eff, err, at_bound) of a yield-ratio efficiency eff = P / (P + F): where the signal
    yield F (P) is not positive and the other is, eff is held at 1 (0), the physical bound, and
    err is the one-sided limit of the other side's effective probes. A bin with neither yield
    positive (no signal probe) keeps its undefined efficiency."""
    p, f = np.asarray(sig_pass, dtype=np.float64), np.asarray(sig_fail, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_pass = np.where(var_pass > 0, p * p / var_pass, p)
        n_fail = np.where(var_fail > 0, f * f / var_fail, f)
    upper = (f <= 0) & (p > 0)
    lower = (p <= 0) & (f > 0)
    eff = np.where(upper, 1.0, np.where(lower, 0.0, eff))
    err = np.where(
        upper,
        clopper_pearson_bound(np.where(upper, n_pass, 1.0)),
        np.where(lower, clopper_pearson_bound(np.where(lower, n_fail, 1.0)), err),
    )
    return eff, err, upper | lower
