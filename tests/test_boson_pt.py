"""Boson-pT modelling (synth tilt, processors/bosonpt.py, corrections/boson_pt.py) against truth.

- The generator's tilted qT density against an independent numerical integration; the theory
  modes are normalised reweightings of their family (quadrature).
- The measurement on generated Z -> mu mu simulation and pseudo-data whose qT density is tilted
  by 1 + a tanh((qT - 10)/10) recovers the generator's true ratio at generator level (chi2 with
  the measured covariance); the same check fails for a wrong truth (a = 0, 2a).
- The measured weights transfer to W: the weighted W simulation's generator qT matches a W
  sample generated with the data's qT (chi2 with the weights' covariance), where the unweighted
  or an over-corrected one does not; the reweighted Z simulation's dilepton pT matches the data.
- In mw: the ``nominal_bosonPtStat`` cells equal runs with the shifted weights.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import uproot
from scipy import integrate, stats

from wremnants_dask import engine
from wremnants_dask.corrections import boson_pt as bp
from wremnants_dask.corrections.run_source import RunSource
from wremnants_dask.inputs.datasets import Dataset
from wremnants_dask.processors.registry import get_processor
from wremnants_dask.synth import PROCESSES, SynthParams, generate_pseudodata, generate_sample
from wremnants_dask.synth import kinematics as kin

TILT = 0.25
MC_PARAMS = SynthParams(neg_weight_fraction=0.0)  # n_eff = n
DATA_PARAMS = dataclasses.replace(SynthParams(), data_boson_pt_tilt=TILT)
#: generator-qT points (GeV) where the measured ratio is compared with the truth
POINTS = np.array([1.0, 3.0, 5.0, 8.0, 12.0, 16.0, 22.0, 30.0, 40.0])


# ----------------------------------------------------------------------------- generator
def _density(q, b, a):
    return q * (1 + q * q / b**2) ** -2.4 * kin.boson_pt_tilt(q, a)


def test_generator_tilt_matches_numerical_density():
    """Tilted samples follow p(qT) (1 + a g(qT)) integrated by quadrature; untilted draws are
    bit-identical to the sampler without the option; a wrong tilt fails the same check."""
    n, b = 400_000, 6.0
    edges = np.array([0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 60, 100, 300.0])
    plain = kin.sample_boson_pt(np.random.default_rng(3), n, b, 2.4, 300.0)
    zero = kin.sample_boson_pt(np.random.default_rng(3), n, b, 2.4, 300.0, 0.0)
    assert np.array_equal(plain, zero)
    tilted = kin.sample_boson_pt(np.random.default_rng(3), n, b, 2.4, 300.0, 0.3)
    counts = np.histogram(tilted, edges)[0]

    def pvalue(a):
        norm = integrate.quad(_density, 0, 300, args=(b, a), limit=400)[0]
        exp = np.array([integrate.quad(_density, lo, hi, args=(b, a), limit=200)[0]
                        for lo, hi in zip(edges[:-1], edges[1:])]) / norm * n  # fmt: skip
        return stats.chi2.sf(np.sum((counts - exp) ** 2 / exp), edges.size - 2)

    assert pvalue(0.3) > 1e-3
    assert pvalue(0.25) < 1e-6  # the check resolves a tilt error of 0.05
    with pytest.raises(ValueError, match="tilt"):
        kin.sample_boson_pt(np.random.default_rng(3), 10, b, 2.4, 300.0, 1.2)


def test_truth_records_the_tilt():
    truth = DATA_PARAMS.truth()
    assert truth["boson_pt"]["data"]["tilt"] == TILT
    assert truth["boson_pt"]["mc"]["tilt"] == 0.0
    assert SynthParams().world(True).boson_pt_tilt == 0.0  # default: no difference


def test_theory_modes_are_normalised_family_ratios():
    w = bp.BosonPtWeights(0, np.array([1.0]), np.zeros((0, 1)), bp.theory_modes(0.05, 0.1))
    q = np.array([0.0, 2.0, 6.0, 20.0, 80.0])
    th = w.theory_tensor(q)
    assert th.shape == (5, 2, 2)
    ref = bp.family_density(q[1:], bp.FAMILY_B, bp.FAMILY_N)
    up_b = bp.family_density(q[1:], bp.FAMILY_B * 1.05, bp.FAMILY_N)
    np.testing.assert_allclose(th[1:, 0, 1], up_b / ref, rtol=1e-12)
    for b, n in ((bp.FAMILY_B * 0.95, bp.FAMILY_N), (bp.FAMILY_B, bp.FAMILY_N + 0.1)):

        def f(x, b=b, n=n):
            return bp.family_density(x, bp.FAMILY_B, bp.FAMILY_N) * bp.family_ratio(x, b, n)

        assert abs(integrate.quad(f, 0, np.inf, limit=400)[0] - 1.0) < 1e-7


def test_apply_weights_on_hand_built_events():
    """The first last-copy boson's pT is the one weighted (earlier copies and other bosons
    ignored; no boson: weight 1), with the eigen and theory tensors of that pT."""
    import awkward as ak

    from wremnants_dask.processors import bosonpt as P
    from wremnants_dask.processors.common import EventWeights

    last = 1 << 13
    cols = {
        "GenPart_pt": ak.Array([[0.0, 3.0, 7.0, 40.0], [12.0], [5.0, 25.0]]),
        "GenPart_pdgId": ak.Array([[2, 24, 24, 23], [13], [-24, -24]]),
        "GenPart_statusFlags": ak.Array([[0, 0, last, last], [last], [last, last]]),
    }
    qt = P.gen_boson_pt(cols, "W")
    np.testing.assert_array_equal(qt[[0, 2]], [7.0, 5.0])
    assert np.isnan(qt[1])
    w = bp.BosonPtWeights(1, np.array([0.9, 0.3]), np.array([[0.02, -0.01]]),
                          bp.theory_modes(0.05, 0.1))  # fmt: skip
    ew = EventWeights(np.array([2.0, 3.0, 4.0]), {})
    P.apply_weights(ew, w, cols, np.ones(3, bool), "W", variations=True)
    q = np.array([7.0, 5.0])
    np.testing.assert_allclose(ew.nominal, [2 * w.weight(q)[0], 3.0, 4 * w.weight(q)[1]])
    stat = ew.tensors["bosonPtStat"](slice(None))
    up = w.weight(q, w.eigen[0]) / w.weight(q)
    np.testing.assert_allclose(stat[[0, 2], 0, 1], up, rtol=1e-12)
    np.testing.assert_allclose(stat[1], 1.0)
    th = ew.tensors["bosonPtTheory"](slice(None))
    b_up = bp.family_ratio(q, bp.FAMILY_B * 1.05, bp.FAMILY_N)
    n_dn = bp.family_ratio(q, bp.FAMILY_B, bp.FAMILY_N - 0.1)
    np.testing.assert_allclose(th[[0, 2], 0, 1], b_up, rtol=1e-12)
    np.testing.assert_allclose(th[[0, 2], 1, 0], n_dn, rtol=1e-12)
    assert abs(b_up[0] - 1) > 1e-3  # the modes move these events


# ----------------------------------------------------------------------------- fit algebra
def _toy(theta, n=400_000, seed=4):
    """Toy folding: generator qT from the family, reconstructed with a 15 % Gaussian smear;
    'data' = Poisson of the simulation weighted by sum_k theta_k t^k (the known answer)."""
    rng = np.random.default_rng(seed)
    q = kin.sample_boson_pt(rng, n, 6.0, 2.4, 300.0)
    reco = np.abs(q * (1 + 0.15 * rng.normal(size=n)))
    edges = np.array(bp.QT_EDGES)
    idx = np.clip(np.searchsorted(edges, reco, side="right") - 1, 0, edges.size - 1)
    x = bp.basis(q, bp.MAX_DEGREE)
    fold = np.stack([np.bincount(idx, x[:, k], edges.size) for k in range(x.shape[1])], 1)
    truth = fold[:, : len(theta)] @ np.asarray(theta)
    data = rng.poisson(truth).astype(float)
    z = np.zeros(edges.size)
    return bp.Measurement(edges, data, data, fold, z, z)  # an exact response: no MC variance


def test_forward_folding_recovers_a_known_ratio():
    """The linear fit through the response returns the generating theta (after the same
    normalisation) within its covariance; a wrong answer is rejected by the same chi2."""
    theta = np.array([0.9, 0.4, -0.2])
    meas = _toy(theta)
    w = bp.measure(meas, degree=2)
    expect, _ = bp.normalise(theta, np.eye(3), meas.fold)
    cov = np.array(w.info["fit"]["covariance"])
    d = w.params - expect
    chi2 = float(d @ np.linalg.pinv(cov, rcond=1e-9) @ d)
    assert stats.chi2.sf(chi2, 2) > 1e-3
    wrong, _ = bp.normalise(np.array([0.9, 0.5, -0.2]), np.eye(3), meas.fold)
    d = w.params - wrong
    assert stats.chi2.sf(float(d @ np.linalg.pinv(cov, rcond=1e-9) @ d), 2) < 1e-6
    # the normalisation keeps the simulated yield and the eigen-shifts rebuild the covariance
    assert abs((meas.fold[:, :3] @ w.params).sum() / meas.fold[:, 0].sum() - 1) < 1e-12
    np.testing.assert_allclose(w.eigen.T @ w.eigen, cov, atol=1e-12 * np.abs(cov).max())


# ----------------------------------------------------------------------------- measurement
def _z_datasets(mc_files, data):
    return [
        Dataset("zmumu", "Zmumu", tuple(map(str, mc_files)), False, PROCESSES["zmumu"].xsec_pb,
                "2018"),
        Dataset("data", "Data", tuple(map(str, data.files)), True, None, "2018",
                lumi_csv=str(data.lumi_csv), golden_json=str(data.golden_json)),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    root = tmp_path_factory.mktemp("bosonpt")
    mc = generate_sample("zmumu", 100_000, root / "mc", seed=51, params=MC_PARAMS)
    data = generate_pseudodata(root / "data", lumi_pb=80, seed=52, processes=["zmumu"],
                               params=DATA_PARAMS)  # fmt: skip
    res = engine.run(_z_datasets(mc, data), get_processor("mz_bosonpt"))
    weights = bp.measure(bp.collect(RunSource(res)), degree=3)
    return root, mc, data, res, weights


def true_ratio(res, tilt: float, qt: np.ndarray) -> np.ndarray:
    """The generator's data/simulation ratio at ``qt``, normalised like the measurement (the
    selected simulation keeps its yield), from the selected events' generator qT."""
    h = res["zmumu"].hists["bosonpt_gen"]
    c, v = h.axes[0].centers, h.values()
    norm = float((v * kin.boson_pt_tilt(c, tilt)).sum() / v.sum())
    return kin.boson_pt_tilt(qt, tilt) / norm


def truth_pvalue(w: bp.BosonPtWeights, truth: np.ndarray) -> float:
    """chi2 p-value of r(POINTS) - truth with the measured covariance (pseudo-inverse: rank
    P - 1 after the normalisation)."""
    cov = bp.function_covariance(w, POINTS)
    d = w.weight(POINTS) - truth
    rank = np.linalg.matrix_rank(cov, tol=1e-9 * np.abs(cov).max())
    chi2 = float(d @ np.linalg.pinv(cov, rcond=1e-9) @ d)
    return stats.chi2.sf(chi2, rank)


@pytest.mark.parametrize("tilt,agree", [(TILT, True), (0.0, False), (2 * TILT, False)])
def test_measured_ratio_matches_generator_truth(measured, tilt, agree):
    _, _, _, res, w = measured
    fit = w.info["fit"]
    assert fit["chi2"] < stats.chi2.ppf(0.999, fit["ndf"])  # the function describes the data
    assert w.n_eigen == w.degree  # rank P - 1: the normalisation is not a variation
    p = truth_pvalue(w, true_ratio(res, tilt, POINTS))
    if agree:
        assert p > 1e-3, p
    else:
        assert p < 1e-6, p


def _gen_qt(files, boson_pdg: int) -> np.ndarray:
    """Generator pT of the last-copy boson of every event, read from the files directly."""
    out = []
    for f in files:
        a = uproot.open(f)["Events"].arrays(
            ["GenPart_pt", "GenPart_pdgId", "GenPart_statusFlags"], library="ak"
        )
        sel = (abs(a["GenPart_pdgId"]) == boson_pdg) & ((a["GenPart_statusFlags"] & 8192) != 0)
        out.append(np.asarray(a["GenPart_pt"][sel][:, 0], dtype=np.float64))
    return np.concatenate(out)


def test_weighted_w_generator_qt_matches_data_world(measured, tmp_path):
    """The Z-measured weights applied to W+ simulation give the qT of W+ generated with the
    data's tilt (independent seeds); unweighted or over-corrected weights do not."""
    w = measured[4]
    sim = _gen_qt(generate_sample("wplus_munu", 200_000, tmp_path / "s", seed=61,
                                  params=MC_PARAMS), 24)  # fmt: skip
    tilted = dataclasses.replace(MC_PARAMS, boson_pt_tilt=TILT)
    target = _gen_qt(generate_sample("wplus_munu", 200_000, tmp_path / "t", seed=62,
                                     params=tilted), 24)  # fmt: skip
    edges = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 25, 30, 40, 50, 70, 300.0])
    t_counts = np.histogram(target, edges)[0].astype(float)
    x = bp.basis(sim, w.degree)
    # d(weighted histogram)/d(theta): the weights' covariance enters the chi2
    jac = np.stack([np.histogram(sim, edges, weights=x[:, k])[0] for k in range(w.degree + 1)], 1)

    def pvalue(params):
        r = np.maximum(x @ params, 0)
        h = np.histogram(sim, edges, weights=r)[0]
        h2 = np.histogram(sim, edges, weights=r * r)[0]
        f = t_counts.sum() / h.sum()
        j = jac * f
        cov = np.diag(t_counts + f * f * h2) + (j @ w.eigen.T) @ (j @ w.eigen.T).T
        d = t_counts - f * h
        return stats.chi2.sf(float(d @ np.linalg.solve(cov, d)), edges.size - 2)

    assert pvalue(w.params) > 1e-3
    one = np.zeros_like(w.params)
    one[0] = 1.0
    assert pvalue(one) < 1e-6  # the simulation without weights differs
    assert pvalue(2 * w.params - one) < 1e-6  # a wrong weight (twice the correction) fails


def test_reweighted_z_matches_pseudodata(measured, tmp_path):
    """Closure at reconstruction level on a fresh simulation: dilepton pT agrees with the data
    after the weights (chi2 p-value), not before."""
    _, _, data, res, w = measured
    path = w.save(tmp_path / "bpt.json")
    assert bp.load_weights(path).params.tolist() == w.params.tolist()
    mc2 = generate_sample("zmumu", 100_000, tmp_path / "mc2", seed=53, params=MC_PARAMS)
    ds = _z_datasets(mc2, data)[:1]
    before = engine.run(ds, get_processor("mz_bosonpt"))["zmumu"].hists["bosonpt_reco"]
    after = engine.run(ds, get_processor("mz_bosonpt", boson_pt_weights=str(path)))
    after = after["zmumu"].hists["bosonpt_reco"]
    d = res["data"].hists["bosonpt_reco"]

    def pvalue(m):
        dv, mv = d.values(flow=True), m.values(flow=True)
        f = dv.sum() / mv.sum()
        var = d.variances(flow=True) + f * f * m.variances(flow=True)
        ok = var > 0
        return stats.chi2.sf(np.sum((dv - f * mv)[ok] ** 2 / var[ok]), int(ok.sum()) - 1)

    assert pvalue(before) < 1e-6
    assert pvalue(after) > 1e-3


# ----------------------------------------------------------------------------- mw
def test_mw_variations_equal_shifted_runs(measured, tmp_path):
    w = measured[4]
    files = generate_sample("wminus_munu", 20_000, tmp_path / "w", seed=71, params=MC_PARAMS)
    ds = Dataset("wm", "Wmunu", tuple(map(str, files)), False,
                 PROCESSES["wminus_munu"].xsec_pb, "2018")  # fmt: skip

    def run(weights, systematics=False):
        opts = {} if weights is None else {"boson_pt_weights": str(weights)}
        return engine.run([ds], get_processor("mw", systematics=systematics, **opts))["wm"].hists

    base = w.save(tmp_path / "base.json")
    h = run(base, systematics=True)
    assert [a.name for a in h["nominal_bosonPtStat"].axes][-2:] == ["bosonPtEig", "downUpVar"]
    assert list(h["nominal_bosonPtTheory"].axes["bosonPtMode"]) == ["np", "resum"]
    plain = run(None)["nominal"].values(flow=True)
    assert abs(h["nominal"].values(flow=True).sum() / plain.sum() - 1) > 1e-3  # weights applied
    for k in (0, w.n_eigen - 1):
        for j, sign in enumerate((-1.0, 1.0)):
            shifted = dataclasses.replace(w, params=w.params + sign * w.eigen[k])
            ref = run(shifted.save(tmp_path / f"s{k}{j}.json"))["nominal"].values(flow=True)
            np.testing.assert_allclose(
                h["nominal_bosonPtStat"].values(flow=True)[..., k, j], ref, rtol=1e-9, atol=1e-9
            )
    # the theory cells: the nominal (with weights) times the modes' relative weights, which
    # move the yield by less than the modes' size (normalised reweightings)
    th = h["nominal_bosonPtTheory"].values(flow=True)
    tot = th.sum(axis=tuple(range(th.ndim - 2))) / h["nominal"].values(flow=True).sum()
    assert np.all(np.abs(tot - 1) < 0.05) and np.any(np.abs(tot - 1) > 1e-4), tot


# ----------------------------------------------------------------------------- files, CLI
def test_bad_weights_file_names_it(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"format": "other"}')
    with pytest.raises(bp.BosonPtError, match=str(bad)):
        bp.load_weights(bad)
    bad.write_text(f'{{"format": "{bp.FORMAT}", "degree": 1}}')
    with pytest.raises(bp.BosonPtError, match="missing"):
        bp.load_weights(bad)


def test_cli_writes_weights_and_names_bad_input(measured, tmp_path, capsys):
    from types import SimpleNamespace

    from wremnants_dask.cli import bosonpt as cli
    from wremnants_dask.histograms.histio import write_run

    res = measured[3]
    hists = write_run(tmp_path / "mz_bosonpt.hdf5", res, {"stage": "histmaker"})
    out = tmp_path / "w" / "bosonpt.json"
    assert cli.main([str(hists), "-o", str(out), "--degree", "3"]) == 0
    w = bp.load_weights(out)
    np.testing.assert_allclose(w.params, measured[4].params, rtol=1e-10)
    assert w.info["provenance"]["stage"] == "bosonpt"
    sim = SimpleNamespace(info=res.info, datasets={"zmumu": res.datasets["zmumu"]})
    mc_only = write_run(tmp_path / "mc_only.hdf5", sim, {"stage": "histmaker"})
    assert cli.main([str(mc_only), "-o", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(mc_only) in err[0], err


def test_histmaker_option_errors_are_one_line(measured, tmp_path, capsys):
    from wremnants_dask.cli.histmaker import console_main

    mc = measured[1]
    cfg = tmp_path / "ds.yaml"
    cfg.write_text(
        'era: "2018"\nsamples:\n  - name: zmumu\n    group: Zmumu\n'
        f"    files: [{mc[0]}]\n    xsec_pb: {PROCESSES['zmumu'].xsec_pb}\n"
    )
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    good = measured[4].save(tmp_path / "good.json")
    base = ["--dataset-config", str(cfg), "-o", str(tmp_path / "out"), "--no-progress"]
    assert console_main(["-a", "mw", *base, "--boson-pt-weights", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0], err
    assert console_main(["-a", "mz_dilepton", *base, "--boson-pt-weights", str(good)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not apply them" in err[0], err
