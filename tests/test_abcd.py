"""ABCD non-prompt prediction and fake-rate smoothing on toys with a known non-prompt yield."""

from __future__ import annotations

import hist
import numpy as np
import pytest

from wremnants_dask.fitsetup import abcd, histops
from wremnants_dask.fitsetup.smoothing import (
    eigen_shifts,
    fit_log_polynomial,
    fit_log_ratio,
    poly_basis,
)

PT_EDGES = np.linspace(26, 56, 31)
FR_SLOPE = -0.03  # true log fake rate slope per GeV


def _axes(n_eta, n_mt):
    return [
        hist.axis.Regular(n_eta, -2.4, 2.4, name="eta"),
        hist.axis.Regular(30, 26, 56, name="pt"),
        hist.axis.Regular(2, -2, 2, name="charge", underflow=False, overflow=False),
        hist.axis.Boolean(name="passIso"),
        hist.axis.Integer(0, n_mt, name="passMT", underflow=False, overflow=False),
    ]


def _truth(n_eta, n_mt, fr_mt_ratio):
    """Expected non-prompt and prompt yields, shape (eta, pt, charge, iso[fail, pass], mT)."""
    eta = np.linspace(-2.4, 2.4, 2 * n_eta + 1)[1::2]
    pt = 0.5 * (PT_EDGES[1:] + PT_EDGES[:-1])
    norm = 4000 * (1 + 0.3 * np.cos(eta))[:, None, None] * np.array([1.0, 1.2])[None, None, :]
    fail_shape = norm * np.exp(-(pt - 26) / 20)[None, :, None]
    g_mt = np.array([0.55, 0.45]) if n_mt == 2 else np.array([0.5, 0.3, 0.2])
    fr = 0.4 * (1 + 0.2 * eta**2)[:, None, None] * np.exp(FR_SLOPE * (pt - 26))[None, :, None]
    np_ = np.zeros(fail_shape.shape + (2, n_mt))
    for m in range(n_mt):
        np_[..., 0, m] = fail_shape * g_mt[m]
        np_[..., 1, m] = fail_shape * g_mt[m] * fr * fr_mt_ratio**m
    p_shape = (3000 * np.exp(-(((pt - 40) / 8) ** 2)) + 400)[None, :, None] * np.ones_like(norm)
    pass_frac = np.linspace(0.15, 0.8, n_mt)
    fail_frac = np.linspace(0.01, 0.04, n_mt)
    prompt = np.stack([p_shape[..., None] * fail_frac, p_shape[..., None] * pass_frac], axis=-2)
    return np_, prompt


def _toy(rng, *, n_eta=4, n_mt=2, fr_mt_ratio=1.0, asimov=True, prompt_true=1.0, mc_stat=100.0):
    """(data, prompt MC, true non-prompt expectation in the signal region)."""
    axes = _axes(n_eta, n_mt)
    np_, prompt = _truth(n_eta, n_mt, fr_mt_ratio)
    expected = np_ + prompt_true * prompt
    data_v = expected if asimov else rng.poisson(expected).astype(float)
    data = histops.make_hist(axes, data_v, data_v.copy(), flow=False)
    mc_v = prompt if asimov else rng.poisson(mc_stat * prompt) / mc_stat
    mc = histops.make_hist(axes, mc_v, mc_v / mc_stat, flow=False)
    return data, mc, np_[..., 1, -1]


def _with_variations(h, scales):
    """``h`` with a last variation axis ``syst``: entry v = h * scales[v]."""
    s = np.asarray(scales)
    ax = hist.axis.Integer(0, len(s), name="syst", underflow=False, overflow=False)
    return histops.make_hist(
        [*h.axes, ax], h.values()[..., None] * s, h.variances()[..., None] * s**2, flow=False
    )


def test_extrapolation_weights():
    np.testing.assert_allclose(abcd.extrapolation_weights([0.0], 1.0), [1.0])
    np.testing.assert_allclose(abcd.extrapolation_weights([0.0, 1.0], 2.0), [-1.0, 2.0])
    # least squares linear over 3 nodes reproduces any straight line at the target
    w = abcd.extrapolation_weights([0.0, 1.0, 2.5], 4.0, degree=1)
    assert w @ (0.7 + 1.3 * np.array([0.0, 1.0, 2.5])) == pytest.approx(0.7 + 1.3 * 4.0)
    with pytest.raises(ValueError, match="degree 2"):
        abcd.extrapolation_weights([0.0, 1.0], 2.0, degree=2)


def test_simple_abcd_loop_reference_and_asimov():
    rng = np.random.default_rng(1)
    data, mc, truth = _toy(rng)
    asimov = abcd.predict_nonprompt(data, mc, smoothing_order=None)
    np.testing.assert_allclose(asimov.hist.values(), truth, rtol=1e-10)
    assert asimov.hist.axes.name == ("eta", "pt", "charge")

    data, mc, _ = _toy(rng, asimov=False)
    got = abcd.predict_nonprompt(data, mc, smoothing_order=None)
    dv, dw, mv, mw = data.values(), data.variances(), mc.values(), mc.variances()
    ref_v = np.zeros(truth.shape)
    ref_w = np.zeros(truth.shape)
    for idx in np.ndindex(*truth.shape):
        b = dv[idx][0, 1] - mv[idx][0, 1]
        c = dv[idx][1, 0] - mv[idx][1, 0]
        d = dv[idx][0, 0] - mv[idx][0, 0]
        vb, vc, vd = (dw[idx][i, j] + mw[idx][i, j] for i, j in ((0, 1), (1, 0), (0, 0)))
        ref_v[idx] = b * c / d
        ref_w[idx] = (c / d) ** 2 * vb + (b / d) ** 2 * vc + (b * c / d**2) ** 2 * vd
    np.testing.assert_allclose(got.hist.values(), ref_v, rtol=1e-10)
    np.testing.assert_allclose(got.hist.variances(), ref_w, rtol=1e-10)
    assert got.n_invalid == 0


@pytest.mark.parametrize("smoothing", [None, 1])
def test_extended_abcd_with_mt_dependent_fake_rate(smoothing):
    ratio = 1.3  # fake rate grows by 30% per mT bin: simple ABCD is biased, extended is not
    data, mc, truth = _toy(np.random.default_rng(2), n_mt=3, fr_mt_ratio=ratio)
    ext = abcd.predict_nonprompt(data, mc, smoothing_order=smoothing)
    np.testing.assert_allclose(ext.mt_weights, [-1.0, 2.0])
    np.testing.assert_allclose(ext.hist.values(), truth, rtol=1e-9)
    low = abcd.predict_nonprompt(data, mc, mt_sidebands=[0], smoothing_order=smoothing)
    np.testing.assert_allclose(low.hist.values(), truth / ratio**2, rtol=1e-9)
    med = abcd.predict_nonprompt(data, mc, mt_sidebands=[1], smoothing_order=smoothing)
    np.testing.assert_allclose(med.hist.values(), truth / ratio, rtol=1e-9)


def test_variations_broadcast_through():
    """Prompt-MC variations: the one matching the truth recovers it; all agree with one-by-one."""
    scales = [0.9, 1.0, 1.1, 1.05]
    data, mc, truth = _toy(np.random.default_rng(3), prompt_true=1.05)
    mc_var = _with_variations(mc, scales)
    for smoothing in (None, 1):
        batched = abcd.predict_nonprompt(data, mc_var, smoothing_order=smoothing)
        assert batched.hist.axes.name == ("eta", "pt", "charge", "syst")
        np.testing.assert_allclose(batched.hist.values()[..., 3], truth, rtol=1e-9)
        for v in range(len(scales)):
            single = abcd.predict_nonprompt(data, mc_var[{"syst": v}], smoothing_order=smoothing)
            np.testing.assert_allclose(
                batched.hist.values()[..., v], single.hist.values(), rtol=1e-12
            )
            np.testing.assert_allclose(
                batched.hist.variances()[..., v], single.hist.variances(), rtol=1e-12
            )
    # unsmoothed, analytic: N_X = np_X + (1.05 - s) prompt_X in each region
    np_, prompt = _truth(4, 2, 1.0)
    unsm = abcd.predict_nonprompt(data, mc_var, smoothing_order=None).hist.values()
    for v, s in enumerate(scales):
        n = np_ + (1.05 - s) * prompt
        want = n[..., 0, 1] * n[..., 1, 0] / n[..., 0, 0]
        np.testing.assert_allclose(unsm[..., v], want, rtol=1e-10)


def test_toy_ensemble_recovers_true_yield_within_precision():
    """Poisson toys: total signal-region yield pulls ~ N(0, 1) with stat + fake-rate errors."""
    rng = np.random.default_rng(4)
    pulls, fit_pulls = [], []
    for _ in range(80):
        data, mc, truth = _toy(rng, n_eta=3, asimov=False)
        res = abcd.predict_nonprompt(
            data, mc, smoothing_order=1, eigen_axis="frParam", decorrelate=("eta", "charge")
        )
        assert res.eigen.axes.name[-3:] == ("frParam", "etaDecorr", "chargeDecorr")
        nom = res.hist.values()
        dev = (res.eigen.values() - nom[..., None, None, None]).sum(axis=(0, 1, 2))
        sigma2 = res.hist.variances().sum() + np.sum(dev**2)
        pulls.append((nom.sum() - truth.sum()) / np.sqrt(sigma2))
        # the fitted log-slope per row against the truth (basis t spans 30 GeV over [-1, 1])
        slope = res.fakerate.params[..., 1] / 15.0
        slope_err = np.sqrt(res.fakerate.cov[..., 1, 1]) / 15.0
        fit_pulls.append(((slope - FR_SLOPE) / slope_err).ravel())
    pulls = np.array(pulls)
    fit_pulls = np.concatenate(fit_pulls)
    # observed-count weights (fit_iterations=0) bias this by ~0.6 sigma; the reweighted fit not
    assert abs(pulls.mean()) < 0.35, pulls
    assert 0.65 < pulls.std() < 1.4, pulls
    assert abs(fit_pulls.mean()) < 0.2 and 0.8 < fit_pulls.std() < 1.2


def test_smoothing_recovers_exponential_ratio():
    rng = np.random.default_rng(5)
    x = 0.5 * (PT_EDGES[1:] + PT_EDGES[:-1])
    true_log = np.log(0.5) + FR_SLOPE * (x - 26)
    fail = np.full((20, 30), 5000.0)
    # Asimov: exact
    fit = fit_log_polynomial(x, np.exp(true_log) * np.ones((20, 30)), np.full((20, 30), 1e-4), 2)
    np.testing.assert_allclose(fit.log_ratio(), np.broadcast_to(true_log, (20, 30)), atol=1e-10)
    # Poisson pass/fail counts: compare with a per-row np.polyfit reference and the truth
    n_pass = rng.poisson(fail * np.exp(true_log)).astype(float)
    n_fail = rng.poisson(fail).astype(float)
    r = n_pass / n_fail
    r_var = r**2 * (1 / n_pass + 1 / n_fail)
    fit = fit_log_polynomial(x, r, r_var, 1)
    t = 2 * (x - x.min()) / (x.max() - x.min()) - 1
    for row in range(20):
        ref, ref_cov = np.polyfit(
            t, np.log(r[row]), 1, w=r[row] / np.sqrt(r_var[row]), cov="unscaled"
        )
        np.testing.assert_allclose(fit.params[row], ref[::-1], rtol=1e-8)
        np.testing.assert_allclose(fit.cov[row], ref_cov[::-1, ::-1], rtol=1e-8)
    truth_at_t = np.array(
        [np.log(0.5) + FR_SLOPE * (x.mean() - 26), FR_SLOPE * (x.max() - x.min()) / 2]
    )
    pull = (fit.params - truth_at_t) / np.sqrt(np.diagonal(fit.cov, axis1=-2, axis2=-1))
    assert np.all(np.abs(pull) < 4)
    assert 0.5 < fit.chi2.sum() / fit.ndf.sum() < 1.5
    # the count form without reweighting is the same weighted fit
    same = fit_log_ratio(x, n_pass, n_pass, n_fail, n_fail, 1, iterations=0)
    np.testing.assert_allclose(same.params, fit.params, rtol=1e-10)
    rew = fit_log_ratio(x, n_pass, n_pass, n_fail, n_fail, 1, iterations=2)
    assert np.all(np.abs(rew.params - fit.params) < 0.5 * np.sqrt(np.diagonal(fit.cov, 0, -2, -1)))


def test_smoothing_too_few_points():
    r = np.zeros((3, 5))
    r[0] = 1.0
    with pytest.raises(ValueError, match="fake rate.*2 of 3 rows"):
        fit_log_polynomial(np.arange(5.0), r, np.ones_like(r), 1, what="fake rate")


def test_eigen_variations_reproduce_covariance():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(50, 4, 4))
    cov = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(4)
    s = eigen_shifts(cov)
    np.testing.assert_allclose(np.einsum("bki,bkj->bij", s, s), cov, rtol=1e-10, atol=1e-12)

    data, mc, _ = _toy(rng, n_eta=2, asimov=False)
    res = abcd.predict_nonprompt(data, mc, smoothing_order=2, eigen_axis="frParam")
    nom = res.hist.values()
    logdev = np.log(res.eigen.values() / nom[..., None])  # (eta, pt, charge, k)
    basis = poly_basis(res.hist.axes["pt"].centers, 2, (26.0, 56.0))
    for e in range(2):
        for q in range(2):
            d = logdev[e, :, q, :]
            want = basis @ res.fakerate.cov[e, q] @ basis.T
            np.testing.assert_allclose(d @ d.T, want, rtol=1e-8, atol=1e-14)
    dec = abcd.predict_nonprompt(
        data, mc, smoothing_order=2, eigen_axis="frParam", decorrelate=("eta", "charge")
    ).eigen.values()
    for e in range(2):
        for q in range(2):
            block = dec[..., e, q]  # (eta, pt, charge, k)
            np.testing.assert_allclose(block[e, :, q], res.eigen.values()[e, :, q], rtol=1e-12)
            mask = np.ones((2, 2), bool)
            mask[e, q] = False
            np.testing.assert_allclose(
                block.transpose(0, 2, 1, 3)[mask],
                nom.transpose(0, 2, 1)[mask][..., None] * np.ones(3),
            )


def test_clear_errors():
    data, mc, _ = _toy(np.random.default_rng(7))
    with pytest.raises(KeyError, match="no axis 'iso'"):
        abcd.predict_nonprompt(data, mc, iso_axis="iso")
    three = hist.Hist(
        hist.axis.Regular(30, 26, 56, name="pt"),
        hist.axis.Integer(0, 3, name="passIso"),
        hist.axis.Integer(0, 2, name="passMT"),
    )
    with pytest.raises(ValueError, match="'passIso' must have 2 bins"):
        abcd.predict_nonprompt(three, None)
    with pytest.raises(ValueError, match="eigen-variations need"):
        abcd.predict_nonprompt(data, mc, smoothing_order=None, eigen_axis="p")
