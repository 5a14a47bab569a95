"""Recoil calibration (processors/recoil.py, corrections/recoil_calibration.py) against truth.

- Kinematics and the correction's algebra on toys with a known answer (numpy, no generator).
- The measurement on generated Z -> mu mu simulation and pseudo-data recovers the generator's
  data/simulation ratios (response 0.94/0.95, resolution 1.05, synth/params.py) within its
  statistical uncertainty, and the same check fails on pseudo-data generated with other values.
- After the correction, the simulated recoil distributions agree with the pseudo-data's (chi2
  p-value), where before they did not.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from wremnants_dask import engine
from wremnants_dask.corrections import recoil_calibration as rc
from wremnants_dask.corrections.run_source import RunSource
from wremnants_dask.inputs.datasets import Dataset
from wremnants_dask.processors.recoil import components
from wremnants_dask.processors.registry import get_processor
from wremnants_dask.synth import PROCESSES, SynthParams, generate_pseudodata, generate_sample

MC_PARAMS = SynthParams(neg_weight_fraction=0.0)  # n_eff = n: the test's precision per event
TRUTH = SynthParams()
TRUE_RATIOS = {
    "response": TRUTH.data_recoil_response / TRUTH.recoil_response,
    "sigma_par": TRUTH.data_recoil_sigma_scale,
    "sigma_perp": TRUTH.data_recoil_sigma_scale,
}


# ----------------------------------------------------------------------------- algebra
def test_components_rotate_with_q():
    rng = np.random.default_rng(1)
    q = rng.normal(0, 10, (2, 1000))
    par, perp = components(-q[0], -q[1], q[0], q[1])  # u = -q: all along, minus
    np.testing.assert_allclose(par, -np.hypot(*q), rtol=1e-12)
    np.testing.assert_allclose(perp, 0.0, atol=1e-12)
    ux, uy = rng.normal(0, 5, (2, 1000))
    a, b = components(ux, uy, q[0], q[1])
    np.testing.assert_allclose(a**2 + b**2, ux**2 + uy**2, rtol=1e-12)  # a rotation


def _calib(params, mc_resp, degree=0):
    n = degree + 1
    return rc.RecoilCalibration(
        degree, np.asarray(params, float).reshape(3, n), np.asarray(mc_resp, float),
        np.zeros((3 * n, 3, n)), 100.0,
    )  # fmt: skip


def test_correction_maps_simulation_onto_data_toy():
    """u = -R q + N(0, s) per component; the correction with the true ratios gives the data
    world's mean -R_d q and widths s k (to the toy's statistical precision)."""
    rng = np.random.default_rng(7)
    n, r_mc, r_d, s = 400_000, 0.95, 0.90, 8.0
    qt = np.full(n, 30.0)
    phi = rng.uniform(-np.pi, np.pi, n)
    qx, qy = qt * np.cos(phi), qt * np.sin(phi)
    ux = -r_mc * qx + s * rng.normal(size=n)
    uy = -r_mc * qy + s * rng.normal(size=n)
    cal = _calib([r_d / r_mc, 1.1, 1.2], [r_mc])
    cx, cy = cal.correct(ux, uy, qx, qy)
    par, perp = components(cx, cy, qx, qy)
    tol = 5 * s / np.sqrt(n)  # 5 standard errors of a mean of n Gaussians of width ~s
    assert abs(par.mean() + r_d * 30.0) < tol
    assert abs(par.std() - 1.1 * s) < 5 * s / np.sqrt(2 * n) * 1.1
    assert abs(perp.std() - 1.2 * s) < 5 * s / np.sqrt(2 * n) * 1.2


def test_bin_stats_against_numpy():
    rng = np.random.default_rng(3)
    v, p, q = rng.exponential(3, 5000), rng.normal(1, 2, 5000), rng.uniform(5, 6, 5000)
    w = rng.uniform(0.5, 1.5, 5000)
    mom = np.stack([np.ones_like(v), q, v, v**2, v**3, v**4, p, p**2, p**3, p**4], 1)
    sums = (w[:, None] * mom).sum(0)[None]
    b = rc.bin_stats(sums, np.array([w.sum() ** 2 / (w**2).sum()]))
    mean = lambda x: np.average(x, weights=w)  # noqa: E731
    sd = lambda x: np.sqrt(mean((x - mean(x)) ** 2))  # noqa: E731
    np.testing.assert_allclose(b.sigma_par, sd(v), rtol=1e-9)
    np.testing.assert_allclose(b.sigma_perp, sd(p), rtol=1e-9)
    np.testing.assert_allclose(b.response, -(mean(v) - mean(q)) / mean(q), rtol=1e-9)


def test_fit_ratio_recovers_a_line():
    rng = np.random.default_rng(5)
    qt = np.linspace(1, 90, 30)
    den = 10 + 0.1 * qt
    true = 1.02 + 0.03 * qt / rc.QT_SCALE
    num = true * den + rng.normal(0, 0.01, qt.size)
    p, cov, chi2, ndf = rc.fit_ratio(qt, num, np.full(qt.size, 0.01), den, np.zeros(qt.size), 1)
    assert np.all(np.abs(p - [1.02, 0.03]) < 4 * np.sqrt(np.diag(cov)))
    assert ndf == 28 and chi2 < stats.chi2.ppf(0.9999, ndf)


# ----------------------------------------------------------------------------- generated
def _z_datasets(mc_files, data):
    return [
        Dataset("zmumu", "Zmumu", tuple(map(str, mc_files)), False, PROCESSES["zmumu"].xsec_pb,
                "2018"),
        Dataset("data", "Data", tuple(map(str, data.files)), True, None, "2018",
                lumi_csv=str(data.lumi_csv), golden_json=str(data.golden_json)),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    root = tmp_path_factory.mktemp("recoil")
    mc = generate_sample("zmumu", 100_000, root / "mc", seed=31, params=MC_PARAMS)
    data = generate_pseudodata(root / "data", lumi_pb=40, seed=32, processes=["zmumu"])
    res = engine.run(_z_datasets(mc, data), get_processor("mz_recoil", systematics=False))
    meas = rc.collect(RunSource(res))
    return root, mc, data, res, meas


def check_truth(cal: rc.RecoilCalibration, truth: dict[str, float], n_sigma: float = 3.0):
    """Each fitted constant ratio within n_sigma of the truth, with an error small enough that
    the check means something (a 5 % resolution difference is > 5 sigma)."""
    for q, (p, e) in zip(rc.QUANTITIES, (
        (cal.params[i, 0], cal.info["fit"][rc.QUANTITIES[i]]["errors"][0]) for i in range(3)
    )):  # fmt: skip
        assert e < (0.02 if q == "response" else 0.008), (q, e)
        assert abs(p - truth[q]) < n_sigma * e, (q, p, e, truth[q])


def test_measurement_recovers_generator_truth(measured):
    cal = rc.calibrate(measured[4], degree=0)
    check_truth(cal, TRUE_RATIOS)
    # the simulation's own response (recoil projected on the generator boson) is the generator's
    assert abs(cal.mc_response[0] - TRUTH.recoil_response) < 0.02


def test_measurement_fails_on_injected_difference(measured, tmp_path):
    """Pseudo-data made with another response and resolution: the truth check must fail."""
    root, mc, _, _, _ = measured
    params = dataclasses.replace(TRUTH, data_recoil_response=0.88, data_recoil_sigma_scale=1.12)
    # the fixture's luminosity: errors as small as there, so the first check below fails on
    # the truth, not on the size of the errors
    data = generate_pseudodata(tmp_path, lumi_pb=40, seed=33, processes=["zmumu"], params=params)
    ds = _z_datasets(mc, data)[1:]
    res = engine.run(ds, get_processor("mz_recoil", systematics=False))
    merged = RunSource(res)
    base = RunSource(measured[3])

    class Both:  # the injected data with the simulation of the fixture
        path = "<memory>"
        datasets = ["zmumu", "data"]

        def info(self, d):
            return (base if d == "zmumu" else merged).info(d)

        def get(self, d, n):
            return (base if d == "zmumu" else merged).get(d, n)

    cal = rc.calibrate(rc.collect(Both()), degree=0)
    with pytest.raises(AssertionError):
        check_truth(cal, TRUE_RATIOS)
    check_truth(cal, {"response": 0.88 / 0.95, "sigma_par": 1.12, "sigma_perp": 1.12})


def _chi2(data_h, mc_h):
    """Shape chi2 of two Weight histograms (MC normalised to data), bins with entries."""
    d, dv = data_h.values(flow=True).ravel(), data_h.variances(flow=True).ravel()
    m, mv = mc_h.values(flow=True).ravel(), mc_h.variances(flow=True).ravel()
    f = d.sum() / m.sum()
    ok = (dv + mv * f * f) > 0
    chi2 = np.sum((d - f * m)[ok] ** 2 / (dv + mv * f * f)[ok])
    ndf = int(ok.sum()) - 1
    return chi2, ndf, stats.chi2.sf(chi2, ndf)


def test_corrected_simulation_matches_pseudodata(measured, tmp_path):
    root, mc, data, res, meas = measured
    cal = rc.calibrate(meas, degree=1)
    path = cal.save(tmp_path / "recoil.json")
    assert rc.load_calibration(path).params.tolist() == cal.params.tolist()
    mc2 = generate_sample("zmumu", 100_000, tmp_path / "mc2", seed=34, params=MC_PARAMS)
    ds = _z_datasets(mc2, data)[:1]
    before = engine.run(ds, get_processor("mz_recoil", systematics=False))
    after = engine.run(
        ds, get_processor("mz_recoil", systematics=False, recoil_calibration=str(path))
    )
    for name in ("recoil_upar", "recoil_uperp"):
        # summed over qT: the resolution differs the same way in every qT bin
        axis = name.removeprefix("recoil_")
        h_data = res["data"].hists[name].project(axis)
        _, _, p_before = _chi2(h_data, before["zmumu"].hists[name].project(axis))
        chi2, ndf, p_after = _chi2(h_data, after["zmumu"].hists[name].project(axis))
        assert p_before < 1e-6, (name, p_before)
        assert p_after > 1e-3, (name, chi2, ndf, p_after)


# ----------------------------------------------------------------------------- real NanoAOD
def test_real_nanoaod(tmp_path):
    """mz_recoil and mw with a calibration run on the real CMS files (40 events each); the
    recoil selection is mz_dilepton's (same events, same weights: equal totals)."""
    from conftest import GOLDEN_JSON, NANOAOD_DATA, NANOAOD_DY

    dy = Dataset("dy_m50", "Zmumu", (str(NANOAOD_DY),), False, 6077.22, "2018")
    data = Dataset("data_dimuon", "Data", (str(NANOAOD_DATA),), True, None, "2018",
                   golden_json=str(GOLDEN_JSON))  # fmt: skip
    rec = engine.run([dy, data], get_processor("mz_recoil", systematics=False))
    ref = engine.run([dy, data], get_processor("mz_dilepton", systematics=False))
    for name in ("dy_m50", "data_dimuon"):
        total = rec[name].hists["recoil_upar"].values(flow=True).sum()
        np.testing.assert_allclose(total, ref[name].hists["mll"].values(flow=True).sum(), rtol=1e-9)
    assert rec["dy_m50"].hists["recoil_moments_gen"].values()[:, 0].sum() > 0  # GenPart_phi read
    path = _calib([0.99, 1.05, 1.05], [0.9]).save(tmp_path / "cal.json")
    h = engine.run([dy], get_processor("mw", recoil_calibration=str(path)))["dy_m50"].hists
    assert [a.name for a in h["nominal_recoil"].axes][-2:] == ["recoilEig", "downUpVar"]
    # zero eigen-shifts: every variation cell is the nominal
    np.testing.assert_allclose(
        h["nominal_recoil"].values(flow=True)[..., 0, 1], h["nominal"].values(flow=True)
    )


def test_bad_calibration_file_names_it(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"format": "other"}')
    with pytest.raises(rc.RecoilCalibrationError, match=str(bad)):
        rc.load_calibration(bad)
    with pytest.raises(rc.RecoilCalibrationError, match="missing"):
        bad.write_text(f'{{"format": "{rc.FORMAT}", "degree": 0}}')
        rc.load_calibration(bad)


def test_cli_writes_calibration_and_names_bad_input(measured, tmp_path, capsys):
    from wremnants_dask.cli import recoil as cli
    from wremnants_dask.histograms.histio import write_run

    res = measured[3]
    hists = write_run(tmp_path / "mz_recoil.hdf5", res, {"stage": "histmaker"})
    out = tmp_path / "cal" / "recoil.json"
    assert cli.main([str(hists), "-o", str(out), "--degree", "0"]) == 0
    cal = rc.load_calibration(out)
    direct = rc.calibrate(rc.collect(RunSource(res)), degree=0)
    np.testing.assert_allclose(cal.params, direct.params, rtol=1e-12)
    assert cal.info["provenance"]["stage"] == "recoil"
    # simulation only: no data to measure with -> exit 2, one line naming the file
    from types import SimpleNamespace

    sim = SimpleNamespace(info=res.info, datasets={"zmumu": res.datasets["zmumu"]})
    mc_only = write_run(tmp_path / "mc_only.hdf5", sim, {"stage": "histmaker"})
    assert cli.main([str(mc_only), "-o", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(mc_only) in err[0], err
