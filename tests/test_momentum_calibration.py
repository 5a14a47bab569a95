"""Muon momentum calibration (processors/mucalib.py, corrections/momentum_calibration.py,
processors/muon_calibration.py) against the generator truth.

Z -> mu mu simulation (600k events) and Z-only pseudo-data (60 /pb, ~45k events) generated
with amplified data scale offsets (5x the default pattern, up to 4e-3) and a 10 % worse data
resolution, so that the measurement on a test-sized sample resolves them (the resolution ratio
to ~0.015: 6.5 sigma from 1 expected): the measured offsets and resolution ratios must agree
with the truth (chi2 with the fit's covariance below its 99.9 % quantile, pull mean and spread),
and the same check must fail when an error is injected in the truth or in the fit.
"""

from __future__ import annotations

import dataclasses
import json

import awkward as ak
import numpy as np
import pytest
from scipy import stats

from wremnants_dask import engine
from wremnants_dask.cli import mucalib as cli
from wremnants_dask.corrections import momentum_calibration as mcal
from wremnants_dask.corrections.payload import CorrectionsPayload
from wremnants_dask.histograms import histio
from wremnants_dask.inputs.datasets import Dataset
from wremnants_dask.processors import muon_calibration as apply
from wremnants_dask.processors.muon_scale import resolution_weight
from wremnants_dask.processors.registry import get_processor
from wremnants_dask.synth import PROCESSES, SynthParams, generate_pseudodata, generate_sample

AMPLIFY = 5.0
RES_RATIO = 1.10
_P0 = SynthParams(neg_weight_fraction=0.0)
PARAMS = dataclasses.replace(
    _P0,
    data_scale_offsets=tuple(AMPLIFY * x for x in _P0.data_scale_offsets),
    data_resolution_scale=RES_RATIO,
)


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    """(inputs, calibration, payload path, truth path) from a fresh mz_mucalib run."""
    root = tmp_path_factory.mktemp("mucalib")
    mc = generate_sample("zmumu", 600_000, root / "mc", seed=31, params=PARAMS, n_files=2)
    data = generate_pseudodata(
        root / "data", lumi_pb=60.0, seed=32, processes=("zmumu",), params=PARAMS
    )
    datasets = [
        Dataset("zmumu", "Zmumu", tuple(map(str, mc)), False, PROCESSES["zmumu"].xsec_pb, "2018"),
        Dataset(
            "data", "Data", tuple(map(str, data.files)), True, None, "2018",
            lumi_csv=str(data.lumi_csv), golden_json=str(data.golden_json),
        ),
    ]  # fmt: skip
    proc = get_processor("mz_mucalib")
    result = engine.run(datasets, proc)
    hist_path = histio.write_run(
        root / "mz_mucalib.hdf5", result, {"analysis_metadata": proc.analysis_metadata()}
    )
    payload = cli.main(
        [
            str(hist_path),
            "-o",
            str(root / "calib.json.gz"),
            "--truth",
            str(root / "data" / "truth.json"),
        ]
    )
    inp = cli.read_inputs(hist_path)
    return inp, mcal.calibrate(inp), payload, root / "data" / "truth.json"


def truth_failures(cal: mcal.Calibration, truth: np.ndarray) -> list[str]:
    """What disagrees between a calibration and the truth (empty: compatible)."""
    out = []
    d = cal.values - truth
    chi2 = float(d @ np.linalg.solve(cal.cov, d))
    if chi2 > stats.chi2.ppf(0.999, d.size):
        out.append(f"chi2 {chi2:.1f} for {d.size} parameters")
    n_s = cal.scale.size
    pulls = d[:n_s] / cal.errors[:n_s]
    # 12 pulls: their mean has sd ~ 1/sqrt(12) (0.29), their sample sd ~ 1 +- 0.21
    if abs(pulls.mean()) > 3.0 / np.sqrt(n_s):
        out.append(f"scale pull mean {pulls.mean():.2f}")
    if not 0.35 < pulls.std(ddof=1) < 1.65:
        out.append(f"scale pull sd {pulls.std(ddof=1):.2f}")
    res_pulls = d[n_s:] / cal.errors[n_s:]
    if np.any(np.abs(res_pulls) > 3.0):
        out.append(f"resolution pulls {np.round(res_pulls, 2)}")
    return out


def _truth(truth_path, inp) -> np.ndarray:
    return cli.truth_values(truth_path, inp.eta_edges, inp.n_res)


def test_calibration_matches_truth(calib):
    inp, cal, _, truth_path = calib
    truth = _truth(truth_path, inp)
    # the resolution pulls are checked on their own below
    assert [f for f in truth_failures(cal, truth) if not f.startswith("resolution")] == []
    # the measurement resolves what it corrects: the scale offsets differ from none and the
    # resolution ratio (combined over regions) from 1 by more than 5 standard deviations
    n_s = inp.n_scale
    cov_s = cal.cov[:n_s, :n_s]
    assert cal.scale @ np.linalg.solve(cov_s, cal.scale) > stats.chi2.ppf(1 - 3e-7, n_s)
    w = np.linalg.inv(cal.cov[n_s:, n_s:]).sum(axis=0)
    k_mean, k_err = w @ cal.resolution_ratio / w.sum(), 1.0 / np.sqrt(w.sum())
    assert (k_mean - 1.0) / k_err > 5.0
    # chi2 of the fit itself: the templates describe the data
    assert cal.chi2 / cal.ndf < 1.0 + 4.0 * np.sqrt(2.0 / cal.ndf)


def test_resolution_ratio_matches_truth(calib):
    """Resolution ratios within 3 sigma of the truth in every region (the template-noise bias
    of the fit removed by the jackknife of momentum_calibration; the truth k = 1 (the
    simulation's resolution) must fail, test_truth_check_fails_on_injected_error)."""
    inp, cal, _, truth_path = calib
    truth = _truth(truth_path, inp)
    assert [f for f in truth_failures(cal, truth) if f.startswith("resolution")] == []


def _wrong_truth_offsets(truth, n_s):
    t = truth.copy()
    t[:n_s] /= AMPLIFY  # the default offsets instead of the generated ones
    return t


@pytest.mark.parametrize(
    "injected",
    [
        "truth_offsets_not_amplified",
        "truth_offsets_sign",
        "truth_resolution_1",
        "fit_step_bias",
    ],
)
def test_truth_check_fails_on_injected_error(calib, injected):
    """The comparison above must catch a wrong truth and a biased fit."""
    inp, cal, _, truth_path = calib
    truth = _truth(truth_path, inp)
    n_s = inp.n_scale
    if injected == "truth_offsets_not_amplified":
        truth = _wrong_truth_offsets(truth, n_s)
    elif injected == "truth_offsets_sign":
        truth[:n_s] *= -1.0
    elif injected == "truth_resolution_1":
        truth[n_s:] = 1.0
        # the resolution check of test_resolution_ratio_matches_truth alone must see it
        assert [f for f in truth_failures(cal, truth) if f.startswith("resolution")] != []
    else:  # the fit believes its scale templates are for a 2x larger step: offsets doubled
        cal = mcal.calibrate(dataclasses.replace(inp, scale_step=2.0 * inp.scale_step))
    assert truth_failures(cal, truth) != []


def test_closure_consistent(calib):
    """The method closes on simulation: the odd half fitted with the even half's templates has
    a residual scale compatible with 0 in each region."""
    _, cal, _, _ = calib
    assert np.all(np.abs(cal.closure_residual) < 4.0 * cal.closure_error)
    assert np.all(cal.closure >= cal.closure_error)


def test_payload_round_trip(calib):
    inp, cal, payload, _ = calib
    pc = apply.MomentumCalibration(payload)
    eta = 0.5 * (inp.eta_edges[1:] + inp.eta_edges[:-1])
    np.testing.assert_allclose(pc.scale(eta), cal.scale, rtol=1e-12, atol=0)
    r = inp.res_edges
    np.testing.assert_allclose(pc.resolution_ratio(0.5 * (r[1:] + r[:-1])), cal.resolution_ratio)
    # eigen-variations: sum_k v_k v_k^T reproduces the covariance
    v = np.concatenate(
        [pc.scale_eigen(eta), pc.resolution_eigen(0.5 * (r[1:] + r[:-1]))], axis=0
    )  # (params, eigen)
    np.testing.assert_allclose(v @ v.T, cal.cov, rtol=1e-8, atol=1e-12 * np.abs(cal.cov).max())
    meta = pc.description
    assert meta["provenance"]["stage"] == "mucalib"
    assert len(meta["provenance"]["input_sha256"]) == 64
    with pytest.raises(mcal.CalibrationError, match="not found"):
        apply.MomentumCalibration(payload.parent / "missing.json")
    bad = payload.parent / "bad.json"
    doc = json.loads(__import__("gzip").decompress(payload.read_bytes()))
    doc["corrections"] = [c for c in doc["corrections"] if c["name"] != "muon_calib_closure"]
    bad.write_text(json.dumps(doc))
    with pytest.raises(mcal.CalibrationError, match="muon_calib_closure"):
        apply.MomentumCalibration(bad)


def test_smearing_reaches_data_resolution(calib):
    """Simulation smeared with the payload's ratio k has the resolution k sigma_mc (checked on
    generator-like muons, 2e5, sd known to 0.2 %); deterministic per (event, muon index)."""
    _, _, payload, _ = calib
    pc = apply.MomentumCalibration(payload)
    corr = CorrectionsPayload()
    rng = np.random.default_rng(5)
    n = 200_000
    eta = rng.uniform(-2.3, 2.3, n)
    gen = rng.uniform(30.0, 50.0, n)
    sig = corr.resolution(eta, gen)
    reco = gen * (1.0 + sig * rng.normal(size=n))
    normals = apply.event_normals(np.arange(n) + 10**9, np.zeros(n, dtype=np.int64))
    smeared = reco * apply.smear_factor(pc, corr, eta, reco, normals)
    k = pc.resolution_ratio(eta)
    for lo, hi in zip(pc.closure_regions()[:-1], pc.closure_regions()[1:]):
        m = (np.abs(eta) >= lo) & (np.abs(eta) < hi)
        ratio = np.std((smeared[m] / gen[m] - 1.0) / sig[m])
        expect = max(k[m][0], 1.0)
        assert abs(ratio - expect) < 5 * expect / np.sqrt(2 * m.sum()), (lo, ratio, expect)
    # the normals: standard, and one muon's draw does not depend on the others in its chunk
    assert abs(normals.mean()) < 5 / np.sqrt(n) and abs(normals.std() - 1) < 5 / np.sqrt(2 * n)
    assert stats.kstest(normals, "norm").pvalue > 1e-4
    part = apply.event_normals(np.arange(1000, 2000) + 10**9, np.zeros(1000, dtype=np.int64))
    np.testing.assert_array_equal(part, normals[1000:2000])
    assert not np.allclose(apply.event_normals(np.arange(5), np.ones(5)), normals[:5])


def test_calibrated_pt_data_and_simulation(calib):
    _, cal, payload, _ = calib
    pc = apply.MomentumCalibration(payload)
    corr = CorrectionsPayload()
    cols = {
        "Muon_pt": ak.Array([[40.0, 30.0], [], [45.0]]),
        "Muon_eta": ak.Array([[-2.3, 0.1], [], [1.9]]),
        "event": np.array([7, 8, 9], dtype=np.uint64),
    }
    data = apply.calibrated_pt(pc, corr, cols, is_data=True)
    expect = np.array([40.0, 30.0, 45.0]) / (1.0 + pc.scale(np.array([-2.3, 0.1, 1.9])))
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(data)), expect, rtol=1e-14)
    mc = apply.calibrated_pt(pc, corr, cols, is_data=False)
    again = apply.calibrated_pt(pc, corr, {**cols}, is_data=False)
    assert ak.to_list(mc) == ak.to_list(again)
    assert ak.to_list(ak.num(mc)) == [2, 0, 1]


def test_resolution_weight_against_direct_scaling():
    """Reweighting N(gen, sigma) to N(gen, k sigma) gives the variance k^2 sigma^2 (2e5
    muons, weighted sd known to ~0.3 %); a wrong k is seen."""
    rng = np.random.default_rng(11)
    n = 200_000
    gen = rng.uniform(30, 50, n)
    sigma = 0.015 * gen
    reco = gen + sigma * rng.normal(size=n)
    for k in (0.95, 1.05):
        w = resolution_weight(reco, gen, sigma, k)
        z = (reco - gen) / sigma
        sd = np.sqrt(np.average(z * z, weights=w))
        assert abs(sd - k) < 0.01
        assert abs(sd - 1.0) > 0.03
    assert np.all(resolution_weight(reco[:3], np.full(3, np.nan), sigma[:3], 1.1) == 1.0)


def test_mw_applies_calibration_with_nuisances(calib, tmp_path):
    """mw with the payload: data scale corrected, simulation smeared (independent of the
    chunking), and the stat/closure nuisance histograms filled."""
    _, _, payload, _ = calib
    mc = generate_sample("wplus_munu", 6000, tmp_path / "w", seed=41)
    ds = [
        Dataset("w", "Wmunu", tuple(map(str, mc)), False, PROCESSES["wplus_munu"].xsec_pb, "2018")
    ]
    proc = get_processor("mw", muon_calibration=str(payload))
    a = engine.run(ds, proc)["w"].hists
    b = engine.run(ds, proc, step_size=1700)["w"].hists
    np.testing.assert_allclose(a["nominal"].values(), b["nominal"].values(), rtol=1e-12)
    pc = apply.MomentumCalibration(payload)
    assert a["nominal_muonCalibStat"].axes["calibStatEig"].size == pc.n_eigen
    assert a["nominal_muonCalibClosure"].axes["calibClosureRegion"].size == 3
    nom = a["nominal"].values().sum()
    stat = a["nominal_muonCalibStat"].values().sum(axis=(0, 1, 2, 3, 4)) / nom  # (eig, 2)
    # up and down move the yield in opposite directions (or not at all)
    assert np.all((stat[:, 0] - 1.0) * (stat[:, 1] - 1.0) <= 1e-12)
    plain = engine.run(ds, get_processor("mw"))["w"].hists["nominal"].values()
    assert not np.allclose(plain, a["nominal"].values())  # the smearing moved muons


def test_fit_is_the_multinomial_maximum_likelihood(calib):
    """Without the simulation's variance the reweighted least squares solve the Poisson score
    equations: the same point as a direct minimisation (scipy BFGS) of the multinomial
    likelihood with the per-category normalisations profiled."""
    from scipy.optimize import minimize

    inp, _, _, _ = calib
    t, _ = mcal._templates(inp, mcal.REBIN)
    rng = np.random.default_rng(3)
    truth_x = np.r_[np.full(inp.n_scale, 0.5), np.full(inp.n_res, 0.3)]
    s_true, _ = t.shape(truth_x)
    data = rng.poisson(np.clip(s_true, 0, None) * 2.0).astype(float)
    t = dataclasses.replace(t, data=data, nominal_var=np.zeros_like(t.nominal_var))
    res = mcal.fit_templates(t)

    def nll_grad(x):
        s, ds = t.shape(x)
        s = np.clip(s, 1e-12, None)
        tot = s.sum(axis=1, keepdims=True)
        nll = -(t.data * np.log(s / tot)).sum()
        g = -np.einsum("cb,cbp->p", t.data / s, ds) + np.einsum(
            "c,cbp->p", t.data.sum(axis=1) / tot[:, 0], ds
        )
        return nll, g

    ml = minimize(nll_grad, np.zeros(truth_x.size), jac=True, method="BFGS", tol=1e-10)
    err = np.sqrt(np.diag(res.cov_x))
    assert np.max(np.abs(res.x - ml.x) / err) < 0.05


def test_histmaker_calibration_errors_are_one_line(tmp_path, capsys):
    from wremnants_dask.cli import histmaker

    missing = tmp_path / "nope.json.gz"
    args = ["--dataset-config", "nanoaod_shared", "--executor", "sync", "-o", str(tmp_path)]
    assert histmaker.console_main([*args, "-a", "mw", "--muon-calibration", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(missing) in err and len(err.splitlines()) == 1
    assert (
        histmaker.console_main([*args, "-a", "mz_dilepton", "--muon-calibration", str(missing)])
        == 2
    )
    assert "does not apply one" in capsys.readouterr().err
