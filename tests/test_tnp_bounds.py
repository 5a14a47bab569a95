"""Efficiencies at the bound 1 (no failing probe) and low-statistics bins through extraction,
smoothing and payload.

Coverage on toys: bins of n = 50 probes, all in the signal window and without background, so
every method (counting, batched fit, sPlot) measures the binomial k of n exactly and the exact
answer is a binomial sum. At k = 0 the reported interval [1 - err, 1] must miss a true
efficiency t only where observing k = 0 was less probable than 1 - 68.27 % (the one-sided
Clopper-Pearson limit, computed here independently from the beta distribution): the toy
fraction "at the bound and truth outside" must equal the exact P(k = 0) 1[t < CP limit] at a
truth just inside the limit (t^n = 0.45: 0) and one outside (t^n = 0.25: 0.25), and the full
interval's coverage at t = 0.995 must equal the exact binomial sum. The errors of the old code
(zero at the bound) and of the usual likelihood rise of 1/2 (0.5 / n) are injected and fail.

Extraction: pass/fail spectra of the chain's binning (configs/tnp_chain.yaml) with a data bin
without failing probes and one with 15 probes (fewer than min_probes) must give a smoothed
payload, both listed in the summary; a bin without any probe is an error naming step and bin.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

EDGES = np.linspace(50.0, 130.0, 81)
FIT_RANGE = (60.0, 120.0)
WINDOW = (81.0, 101.0)
SIDEBANDS = ((60.0, 71.0), (111.0, 120.0))
N_PROBES = 50
N_TOYS = 1000
CL = float(stats.norm.cdf(1.0) - stats.norm.cdf(-1.0))  # +-1 sigma content


def _peak(rng: np.random.Generator, window: tuple[float, float] | None = None) -> np.ndarray:
    m = 91.19 + 1.25 * rng.standard_cauchy(400_000) + 1.5 * rng.normal(size=400_000)
    if window is not None:
        m = m[(m > window[0]) & (m < window[1])]
    h = np.histogram(m, EDGES)[0].astype(float)
    return h / h.sum()


def cp_lower(n: int, cl: float = CL) -> float:
    """One-sided Clopper-Pearson lower limit on the efficiency with n of n passing: the beta
    quantile (independent of efficiency.bounds)."""
    return float(stats.beta.ppf(1.0 - cl, n, 1))


def _toys(t: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = _peak(rng, WINDOW)
    k = rng.binomial(N_PROBES, 1.0 - t, N_TOYS)
    fail = np.stack([rng.multinomial(x, shape) for x in k]).astype(float)
    pas = np.stack([rng.multinomial(N_PROBES - x, shape) for x in k]).astype(float)
    return pas, fail, np.tile(shape * 1e6, (N_TOYS, 1))


def measure(method: str, pas: np.ndarray, fail: np.ndarray, tmpl: np.ndarray):
    """(eff, err, at_bound) of one extraction method on pure-signal toys."""
    if method == "count":
        from wremnants_dask.efficiency.counting import count_efficiency

        c = count_efficiency(pas, fail, pas, fail, EDGES, WINDOW, SIDEBANDS)
        return c.eff, c.err, c.at_bound
    if method == "fit":
        from wremnants_dask.efficiency.fit import fit_efficiencies

        r = fit_efficiencies(pas, fail, tmpl, tmpl, EDGES, FIT_RANGE, own_sample=True)
        assert r.converged.all()
        return r.eff, r.err, r.at_bound
    from wremnants_dask.efficiency.splot import splot_efficiencies

    s = splot_efficiencies(pas, fail, tmpl, EDGES, FIT_RANGE, own_sample=True)
    return s.eff, s.err, s.at_bound


#: injected errors at the bound: the old counting/sPlot (zero), the likelihood rise of 1/2
INJECTED = {
    "zero": lambda n: 0.0 * n,
    "half_rise": lambda n: -np.expm1(-0.5 / n),
}


def check_bound_coverage(eff, err, bound, t: float, n: int = N_PROBES) -> None:
    """Toy fraction with the efficiency at 1 and t below 1 - err equals the exact binomial
    P(k = 0) 1[t < CP limit] (4 standard errors); at most 1 - CL however t is chosen."""
    assert np.all(eff[bound] == 1.0)
    miss = np.mean(bound & (t < eff - err))
    exact = t**n * (t < cp_lower(n))
    sd = np.sqrt(max(exact * (1 - exact), 1.0 / N_TOYS) / N_TOYS)
    assert abs(miss - exact) < 4 * sd, (t, miss, exact)
    assert miss < 1.0 - CL + 4 * sd, (t, miss)


def check_coverage(eff, err, t: float, n: int = N_PROBES) -> None:
    """Coverage of [eff - err, eff + err] equals the exact binomial sum of the same intervals
    (binomial error inside, one-sided CP at k = 0) and is at least 68.27 %."""
    k = np.arange(n + 1)
    e = (n - k) / n
    half = np.where(k == 0, 1.0 - cp_lower(n), np.sqrt(e * (1 - e) / n))
    exact = np.sum(stats.binom.pmf(k, n, 1 - t) * (np.abs(e - t) <= half))
    cover = np.mean(np.abs(eff - t) <= err)
    sd = np.sqrt(exact * (1 - exact) / N_TOYS)
    assert abs(cover - exact) < 4 * sd + 1e-9, (cover, exact)
    assert cover >= CL - 4 * sd, cover


T_INSIDE = 0.45 ** (1 / N_PROBES)  # P(k=0) = 0.45: inside the CP limit, outside 0.5/n
T_OUTSIDE = 0.25 ** (1 / N_PROBES)  # P(k=0) = 0.25: outside the CP limit


@pytest.fixture(scope="module")
def toy_sets():
    return {t: _toys(t, seed) for seed, t in enumerate((T_INSIDE, T_OUTSIDE, 0.995))}


@pytest.mark.parametrize("method", ["count", "fit", "splot"])
def test_bound_error_has_clopper_pearson_coverage(toy_sets, method):
    for t in (T_INSIDE, T_OUTSIDE):
        eff, err, bound = measure(method, *toy_sets[t])
        # every toy is k of 50 exactly: the measured efficiency is (50 - k) / 50
        n_fail = toy_sets[t][1].sum(1)
        np.testing.assert_allclose(eff, 1 - n_fail / N_PROBES, atol=1e-6)
        assert np.array_equal(bound, n_fail == 0)
        # without background the error at the bound is the beta quantile itself
        np.testing.assert_allclose(err[bound], 1 - cp_lower(N_PROBES), rtol=2e-3)
        check_bound_coverage(eff, err, bound, t)
    eff, err, _ = measure(method, *toy_sets[0.995])
    check_coverage(eff, err, 0.995)


@pytest.mark.parametrize("injected", sorted(INJECTED))
def test_injected_bound_errors_fail_the_coverage_check(toy_sets, injected):
    eff, err, bound = measure("count", *toy_sets[T_INSIDE])
    err = np.where(bound, INJECTED[injected](N_PROBES * np.ones_like(err)), err)
    with pytest.raises(AssertionError):
        check_bound_coverage(eff, err, bound, T_INSIDE)
    if injected == "zero":  # the full interval misses the truth whenever k = 0
        eff, err, bound = measure("count", *toy_sets[0.995])
        err = np.where(bound, 0.0, err)
        with pytest.raises(AssertionError):
            check_coverage(eff, err, 0.995)


def test_bound_error_formula_is_the_beta_quantile():
    from wremnants_dask.efficiency.bounds import clopper_pearson_bound

    for n in (1, 7, 50, 1000):
        np.testing.assert_allclose(1 - clopper_pearson_bound(n), cp_lower(n), rtol=1e-10)


# --- extraction, smoothing and payload on the chain's binning -----------------------------

EMPTY_FAIL = 7  # flat bin (step reco, pt 1, eta 3) without failing probes in data
FEW = 60  # flat bin (step trigger, pt 3, eta 0) with 15 probes in data


def _spectra(cfg, n: np.ndarray, eff: float, bkg: float, seed: int, empty=(), few=None):
    from wremnants_dask.efficiency.spectra import Spectra

    rng = np.random.default_rng(seed)
    shape = _peak(rng)
    c = 0.5 * (EDGES[1:] + EDGES[:-1])
    bshape = np.exp(-0.03 * (c - 90.0))
    bshape[(c < FIT_RANGE[0]) | (c > FIT_RANGE[1])] = 0.0
    bshape /= bshape.sum()
    mu_p = (n * eff)[:, None] * shape + bkg * bshape
    mu_f = (n * (1 - eff))[:, None] * shape + 0.3 * bkg * bshape
    p, f = rng.poisson(mu_p).astype(float), rng.poisson(mu_f).astype(float)
    for b in empty:
        f[b] = 0.0
    if few is not None:  # 15 probes in the window, one failing, nothing outside
        p[few], f[few] = 0.0, 0.0
        p[few, 40], f[few, 41] = 14.0, 1.0
    return Spectra(
        cfg.step_names,
        EDGES,
        np.asarray(cfg.pt_edges, float),
        np.asarray(cfg.eta_edges, float),
        np.array([-2.0, 2.0]),
        p,
        f,
        p.copy(),
        f.copy(),
        np.zeros((len(cfg.step_names), 2, 2)),
        np.array([0.0, 1.0, 2.0]),
        np.array([0.0, 1.0, 2.0]),
        ["toy"],
    )


@pytest.fixture(scope="module")
def chain_extraction():
    from wremnants_dask.efficiency.extract import extract
    from wremnants_dask.processors.tnp_config import load_config

    cfg = load_config("tnp_chain")
    n_bins = len(cfg.step_names) * (len(cfg.pt_edges) - 1) * (len(cfg.eta_edges) - 1)
    data = _spectra(cfg, np.full(n_bins, 200.0), 0.96, 4.0, 1, (EMPTY_FAIL,), FEW)
    mc = _spectra(cfg, np.full(n_bins, 2000.0), 0.96, 0.0, 2)
    return cfg, data, mc, extract(cfg, data, mc)


def test_bound_and_low_statistics_bins_reach_the_payload(chain_extraction):
    from wremnants_dask.efficiency import output
    from wremnants_dask.efficiency.smooth import smooth_all

    _, data, _, ex = chain_extraction
    assert data.failing[EMPTY_FAIL].sum() == 0 and data.passing[FEW].sum() < 20
    summary = ex.summary()
    for method in ("count", "fit", "splot"):
        s = summary[f"data/{method}"]
        hit = [b for b in s["at_bound_bins"] if (b["step"], b["pt_bin"], b["eta_bin"]) ==
               ("reco", 1, 3)]  # fmt: skip
        assert hit and hit[0]["eff"] == 1.0 and hit[0]["err"] > 0, (method, s["at_bound_bins"])
    assert ex.sf["ok"].all() and np.isfinite(ex.sf["stat"]).all() and (ex.sf["stat"] > 0).all()
    assert ex.sf["low_stat"][FEW] and ex.sf["low_stat"].sum() == 1
    low = summary["scale_factors"]["flagged_bins"]
    assert [(b["step"], b["pt_bin"], b["eta_bin"]) for b in low] == [("trigger", 3, 0)]
    # the bound bin's SF error: the data's one-sided error dominates (200 probes x 0.96 in the
    # fit range: CP 1.148 / n ~ 0.006), not zero and not the simulation's alone
    assert 0.003 < ex.sf["stat"][EMPTY_FAIL] < 0.02, ex.sf["stat"][EMPTY_FAIL]
    smooth = smooth_all(ex, 1, 0.0)
    cset = output.build_measured_payload(ex, output.base_from_file(None), smooth)
    assert any(c["name"] == "muon_sf_trigger" for c in cset["corrections"])


def test_bin_without_probes_is_an_error_naming_it(chain_extraction):
    from wremnants_dask.efficiency import output
    from wremnants_dask.efficiency.extract import Measurement, scale_factors
    from wremnants_dask.efficiency.smooth import smooth_all

    _, _, _, ex = chain_extraction
    saved = ex.results["data"]
    b = 47  # step iso, pt 3, eta 3
    try:
        ex.results = dict(ex.results)
        ex.results["data"] = {}
        for m, meas in saved.items():  # the data of bin b emptied: no probe, no efficiency
            cp = Measurement(*(np.array(getattr(meas, k)) for k in
                               ("eff", "err", "flags", "n_probes")), at_bound=meas.at_bound)  # fmt: skip
            cp.eff[b], cp.err[b], cp.flags[b], cp.n_probes[b] = np.nan, np.nan, 1 | 8 | 16, 0
            ex.results["data"][m] = cp
        sf = ex.sf
        ex.sf = scale_factors(ex.results, ex.nominal)
        msg = r"step iso, pt bin 3 \[48, 80\] GeV, eta bin 3 \[1.2, 2.4\].*no probes in data"
        with pytest.raises(ValueError, match=msg):
            smooth_all(ex, 1, 0.0)
        with pytest.raises(ValueError, match="no good measurement: " + msg):
            output.build_measured_payload(ex, output.base_from_file(None))
        assert ex.summary()["scale_factors"]["flagged"] == 2
    finally:
        ex.results["data"] = saved
        ex.sf = sf
