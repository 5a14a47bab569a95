"""Tag-and-probe: efficiencies measured on synthetic Z -> mu mu agree with the generator truth.

One module fixture generates Z -> mu mu simulation and pseudo-data (with its Z -> tau tau and
ttbar backgrounds), histograms them with the tnp processor and extracts the efficiencies of
every step by counting and by the batched fit. The truth of a bin is the generator's table
averaged over the bin's probes (efficiency/truth.py). Pulls (measured - true) / sigma, sigma the
measured error taken to the true efficiency (``truth.pulls``: with the measured error itself the
pulls have a positive mean ~1 / (2 sqrt(failing probes)), +0.15..0.21 here, unbiased
efficiencies or not), over the bins of each step, sample and method must have mean ~0 and width
~1, and a truth shifted by 2 % must fail. The per-step checks (20-25 bins) cannot resolve a
bias of 0.21 sigma (the mean of the session-8 pulls): the same events, counted on the binning
of configs/tnp.yaml (~1000 good bins of data and simulation, no fit), give a pooled mean that
must be 0 to within 3 / sqrt(n) ~ 0.09, and fails with 0.21 sigma injected (either sign).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from wremnants_dask import synth
from wremnants_dask.processors.tnp_config import TnPConfigError, load_config

N_Z = 60_000
LUMI_PB = 30.0  # 60k Z -> mu mu in the pseudo-data (xsec 2000 pb)
SMALL_CONFIG = """
tag: {pt_min: 26.0, eta_max: 2.4, id: tightId, dxy_max: 0.05, iso_max: 0.15, trigger_match: true}
probe: {pt_min: 15.0, eta_max: 2.4}
trigger: {bit: 8, dr: 0.3}
pair: {opposite_charge: true, mass_bins: 80, mass_range: [50.0, 130.0]}
steps:
  - {name: reco, pass: {muon_match: 0.01}}
  - {name: idip, pass: {id: mediumId, dxy_max: 0.05}}
  - {name: iso, pass: {iso_max: 0.15}}
  - {name: trigger, pass: {trigger_match: true}}
binning: {pt: [15, 24, 30, 40, 50, 80], eta: [-2.4, -1.2, -0.4, 0.4, 1.2, 2.4], charge: false}
extraction:
  fit_range: [60.0, 120.0]
  signal_window: [81.0, 101.0]
  sidebands: [[60.0, 71.0], [111.0, 120.0]]
  min_probes: 20
  chi2_prob_min: 0.001
"""
#: the binning of configs/tnp.yaml (576 bins per sample): the pooled counting pulls
FINE_BINNING = """binning:
  pt: [15, 24, 28, 32, 36, 40, 44, 48, 80]
  eta: [-2.4, -2.1, -1.6, -1.2, -0.8, -0.4, 0.0, 0.4, 0.8, 1.2, 1.6, 2.1, 2.4]
  charge: true
"""


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    from wremnants_dask import engine
    from wremnants_dask.efficiency.counting import count_efficiency
    from wremnants_dask.efficiency.extract import extract
    from wremnants_dask.efficiency.spectra import spectra_from_result
    from wremnants_dask.efficiency.truth import true_efficiencies
    from wremnants_dask.inputs.datasets import Dataset
    from wremnants_dask.processors.tnp import TagAndProbeProcessor

    base = tmp_path_factory.mktemp("tnp")
    cfg_path = base / "tnp.yaml"
    cfg_path.write_text(SMALL_CONFIG)
    mc_files = synth.generate_sample("zmumu", N_Z, base / "mc", seed=501)
    info = synth.generate_pseudodata(
        base / "data", lumi_pb=LUMI_PB, seed=502, processes=("zmumu", "ztautau", "ttbar")
    )
    datasets = [
        Dataset("zmumu", "Zmumu", tuple(map(str, mc_files)), False, 2000.0, "2018"),
        Dataset(
            "data",
            "Data",
            tuple(map(str, info.files)),
            True,
            None,
            "2018",
            lumi_csv=str(info.lumi_csv),
            golden_json=str(info.golden_json),
        ),
    ]
    result = engine.run(datasets, TagAndProbeProcessor(config=str(cfg_path)))
    cfg = load_config(cfg_path)
    data = spectra_from_result(result, data=True)
    mc = spectra_from_result(result, data=False)
    truth = json.loads((base / "mc" / "truth.json").read_text())
    # the same events on the fine binning, counted only (no fit): ~1000 good bins for the
    # pooled pull mean
    fine_path = base / "tnp_fine.yaml"
    fine_path.write_text(SMALL_CONFIG.split("binning:")[0] + FINE_BINNING + "extraction:" +
                         SMALL_CONFIG.split("extraction:")[1])  # fmt: skip
    fine = engine.run(datasets, TagAndProbeProcessor(config=str(fine_path)))
    counted = {}
    for sample in ("data", "mc"):
        spec = spectra_from_result(fine, data=sample == "data")
        c = count_efficiency(spec.passing, spec.failing, spec.passing_var, spec.failing_var,
                             spec.mass_edges, cfg.signal_window, cfg.sidebands)  # fmt: skip
        # no cut on the outcome: a bin with no failing probe (eff 1) is compared too
        good = np.isfinite(c.eff) & (c.err > 0) & (c.n_probes >= cfg.min_probes)
        step = np.unravel_index(np.flatnonzero(good), spec.shape)[0]  # step of each good bin
        true = true_efficiencies(spec, truth, sample)[good]
        counted[sample] = (c.eff[good], c.err[good], true, np.asarray(cfg.step_names)[step],
                           c.n_probes[good])  # fmt: skip
    ex = extract(cfg, data, mc)
    return {"ex": ex, "truth": truth, "base": base, "cfg": cfg, "counted": counted}


def pulls(
    measured, sample: str, method: str, scale: float = 1.0, bias: float = 0.0
) -> dict[str, np.ndarray]:
    """Pulls per step; ``scale`` multiplies the truth, ``bias`` moves the measurement by that
    many of its errors (injected defects the checks must catch)."""
    from wremnants_dask.efficiency.truth import pulls as pull_of
    from wremnants_dask.efficiency.truth import true_efficiencies

    ex = measured["ex"]
    spec = ex.spectra[sample]
    true = scale * true_efficiencies(spec, measured["truth"], sample)
    meas = ex.results[sample][method]
    step = spec.bin_index()["step"]
    out = {}
    for s, name in enumerate(spec.steps):
        sel = (step == s) & meas.good
        eff = meas.eff[sel] + bias * meas.err[sel]
        out[name] = pull_of(eff, meas.err[sel], true[sel], meas.n_probes[sel])
    return out


def check_pulls(p: dict[str, np.ndarray], min_bins: int = 20) -> None:
    for step, x in p.items():
        assert x.size >= min_bins, f"{step}: only {x.size} good bins"
        # mean within 3 standard errors of 0; width 1 within what 20-25 bins allow
        assert abs(x.mean()) < 3.0 / np.sqrt(x.size), f"{step}: pull mean {x.mean():.2f}"
        assert 0.6 < x.std(ddof=1) < 1.5, f"{step}: pull width {x.std(ddof=1):.2f}"


#: tolerance of the pooled mean in standard errors: a 0.21 sigma bias over ~1100 bins is ~7
#: (measured: -0.060 at n = 1116, tolerance 0.090; +-0.21 injected: about +0.14 / -0.27)
POOLED_SIGMAS = 3.0
#: the mean pull of session 8's data (576 bins): what the pooled check must resolve
SESSION8_BIAS = 0.21
#: Steps pooled; the reco step (track probes) has its own check below.
POOLED_STEPS = ("idip", "iso", "trigger")
#: The reco step's bias of session 9: pooled counting pulls -0.17 (data, 165 bins) and -0.34
#: (simulation, 161 bins), from the bins with no failing probe (~3-4 expected in a reco bin of
#: the fine binning), which had error 0 and were left out (issue 18). Measured now: -0.08 (383
#: bins, tolerance 0.15); +-0.3 injected: +0.23 / -0.48; the bins at eff 1 left out (57 of
#: them): -0.29 (326 bins, tolerance 0.17).
RECO_BIAS = 0.3


def check_pooled(
    measured, bias: float = 0.0, steps: tuple[str, ...] = POOLED_STEPS, edge: bool = True
) -> None:
    """Counting pulls of ``steps`` of data and simulation on the fine binning together: mean
    0 within POOLED_SIGMAS standard errors; ``bias`` moves every measurement by that many of
    its errors; ``edge`` False leaves out the bins measured at 0 or 1 (session 9's defect)."""
    from wremnants_dask.efficiency.truth import pulls as pull_of

    x = np.concatenate(
        [
            pull_of(e[m] + bias * s[m], s[m], t[m], n[m])
            for e, s, t, step, n in measured["counted"].values()
            for m in [np.isin(step, steps) & (edge | ((e > 0) & (e < 1)))]
        ]
    )
    assert x.size >= 160, f"only {x.size} good bins"
    tol = POOLED_SIGMAS / np.sqrt(x.size)
    assert abs(x.mean()) < tol, f"pooled pull mean {x.mean():+.3f} (n={x.size})"


CASES = [(s, m) for s in ("data", "mc") for m in ("count", "fit", "splot")] + [
    ("data", m) for m in ("fit_voigt", "fit_cb", "fit_linear")
]
METHODS_ALL = ("count", "fit", "splot")
DATA_METHODS = ["count", "fit", "splot", "fit_voigt", "fit_cb", "fit_linear"]


@pytest.mark.parametrize(("sample", "method"), CASES)
def test_pulls_against_truth(measured, sample, method):
    # the analytic signal shapes miss the FSR tail that the wide bins here resolve: some of
    # their fits are flagged (chi2 probability), never used; the good ones must still pull ~1
    check_pulls(pulls(measured, sample, method), 20 if method in METHODS_ALL else 12)


@pytest.mark.parametrize("bias", [0.0, SESSION8_BIAS, -SESSION8_BIAS])
def test_pooled_pulls_resolve_a_bias_of_0p21_sigma(measured, bias):
    """Counting on the binning of configs/tnp.yaml, pooled over steps and samples (~1000
    bins): the mean pull is 0 to ~0.09, and a bias of 0.21 sigma injected into every
    measurement fails the check (either sign)."""
    if bias == 0.0:
        check_pooled(measured)
    else:
        with pytest.raises(AssertionError, match="pooled pull mean"):
            check_pooled(measured, bias=bias)


@pytest.mark.parametrize("bias", [0.0, RECO_BIAS, -RECO_BIAS])
def test_pooled_pulls_of_the_reco_step(measured, bias):
    """The reco step alone (~380 bins of data and simulation, ~3-4 failing probes each): mean
    pull 0 to ~0.15; a bias of session 9's size injected (either sign) fails, and so does
    leaving out the bins that fluctuated to no failing probe (what session 9's zero error
    did)."""
    if bias == 0.0:
        check_pooled(measured, steps=("reco",))
        with pytest.raises(AssertionError, match="pooled pull mean"):
            check_pooled(measured, steps=("reco",), edge=False)
    else:
        with pytest.raises(AssertionError, match="pooled pull mean"):
            check_pooled(measured, bias=bias, steps=("reco",))


def test_bins_without_failing_probes_are_measured(measured):
    """A bin with no failing probe measures eff 1 with its one-sided Clopper-Pearson error
    ~1.15 / N (efficiency.bounds), never 0: such bins are compared, not dropped. The reco step
    of the fine binning has some in both samples."""
    for e, s, _, step, n in measured["counted"].values():
        edge = (step == "reco") & (e >= 1)
        assert edge.sum() >= 5, f"only {edge.sum()} reco bins at eff 1"
        assert np.all((s[edge] > 0.3 / n[edge]) & (s[edge] < 3.0 / n[edge]))


def test_counting_error_of_an_empty_count():
    """No failing probe among P (no background): eff 1 with the one-sided 68.27 % Clopper-Pearson
    error 1 - 0.3173^(1/P) (analytic: P(all P pass | eff) = eff^P), not 0; with failing probes
    the error is the binomial sqrt(P F / (P + F)^3) as before."""
    from wremnants_dask.efficiency.counting import count_efficiency

    edges = np.linspace(50.0, 130.0, 81)
    passing, failing = np.zeros((2, 80)), np.zeros((2, 80))
    passing[:, 41] = 100.0  # the bin [91, 92]
    failing[1, 41] = 10.0
    c = count_efficiency(passing, failing, passing, failing, edges, (81.0, 101.0),
                         ((60.0, 71.0), (111.0, 120.0)))  # fmt: skip
    np.testing.assert_allclose(c.eff, [1.0, 100.0 / 110.0], rtol=1e-12)
    cp = 1.0 - (1.0 - 0.682689492137086) ** (1.0 / 100.0)
    np.testing.assert_allclose(c.err, [cp, np.sqrt(100.0 * 10.0 / 110.0**3)], rtol=1e-9)


def test_pulls_with_the_measured_error_are_biased(measured):
    """The reason for truth.pulls: with the measured error itself the pooled mean of the same
    measurements is higher by ~1 / (2 sqrt(failing probes)) (0.08-0.16 on three samples of 576
    bins): upward fluctuations carry smaller errors."""
    from wremnants_dask.efficiency.truth import pulls as pull_of

    plain, at_truth = [], []
    for eff, err, true, _, _ in measured["counted"].values():
        ok = (eff > 0) & (eff < 1)
        plain.append((eff[ok] - true[ok]) / err[ok])
        at_truth.append(pull_of(eff[ok], err[ok], true[ok]))
    assert np.concatenate(plain).mean() - np.concatenate(at_truth).mean() > 0.05


@pytest.mark.parametrize("method", DATA_METHODS)
def test_pulls_detect_a_biased_truth(measured, method):
    """A truth 2 % lower than the generator's must fail the same check (it can fail)."""
    with pytest.raises(AssertionError):
        check_pulls(
            pulls(measured, "data", method, scale=0.98), 20 if method in METHODS_ALL else 12
        )


def test_flags_are_few_and_reported(measured):
    ex = measured["ex"]
    summary = ex.summary()
    for key, s in summary.items():
        # the analytic signal shapes (alternatives only) miss the FSR tail these wide bins
        # resolve: up to half of them are chi2-flagged and then not used
        limit = 0.5 if key.endswith(("fit_voigt", "fit_cb")) else 0.2
        assert s["flagged"] <= limit * s["bins"], f"{key}: {s['flagged']} flagged"
        for b in s["flagged_bins"]:
            assert b["reasons"], b


def test_scale_factors_against_truth(measured):
    from wremnants_dask.efficiency.truth import sigma_at_truth, true_efficiencies

    ex = measured["ex"]
    t_data = true_efficiencies(ex.spectra["data"], measured["truth"], "data")
    t_mc = true_efficiencies(ex.spectra["mc"], measured["truth"], "mc")
    ok = ex.sf["ok"] & ex.sf["from_nominal"]
    # the stat error with each sample's error taken to its true efficiency (truth.pulls)
    errs = []
    for sample, t in (("data", t_data), ("mc", t_mc)):
        m = ex.results[sample][ex.nominal]
        errs.append(sigma_at_truth(m.eff, m.err, t, m.n_probes) / t)
    sf_true = t_data / t_mc
    sigma = sf_true * np.hypot(*errs)
    pull = (ex.sf["sf"][ok] - sf_true[ok]) / sigma[ok]
    assert ok.mean() > 0.9
    assert abs(pull.mean()) < 3.0 / np.sqrt(pull.size)
    assert 0.6 < pull.std(ddof=1) < 1.5


def combined_sf(ex) -> np.ndarray:
    """(step, pt, eta) SFs, charges combined by inverse-variance weighting (as the payload)."""
    shape = ex.spectra["mc"].shape
    sf, st = ex.sf["sf"].reshape(shape), ex.sf["stat"].reshape(shape)
    w = 1.0 / st**2
    return (sf * w).sum(-1) / w.sum(-1)


def test_outputs_and_payload(measured, tmp_path):
    from wremnants_dask.corrections.payload import CorrectionsPayload
    from wremnants_dask.efficiency import output

    ex = measured["ex"]
    paths = output.write_tables(ex, tmp_path)
    lines = paths["csv"].read_text().splitlines()
    n_meas = sum(len(by_m) for by_m in ex.results.values())  # data: 6 methods, mc: 3
    assert len(lines) == 1 + n_meas * ex.spectra["mc"].n_bins
    assert np.all(ex.sf["ok"]), "every bin of the small config is measured"
    cset = output.build_measured_payload(ex, output.base_from_truth(measured["truth"]))
    path = output.write_payload(cset, tmp_path)
    payload = CorrectionsPayload(path)
    spec = ex.spectra["mc"]
    sf = combined_sf(ex)
    # a probe at the centre of coarse bin (pt 2, eta 3) gets that bin's measured SF
    pt = np.array([0.5 * (spec.pt_edges[2] + spec.pt_edges[3])])
    eta = np.array([0.5 * (spec.eta_edges[3] + spec.eta_edges[4])])
    for s, step in enumerate(spec.steps):
        got = payload.muon_sf(step, eta, pt)
        np.testing.assert_allclose(got, sf[s, 2, 3], rtol=1e-12)
    assert payload.n_eigen == spec.shape[1]
    # a bin without a good measurement is refused, not written with a default
    saved = ex.sf["ok"].copy()
    try:
        ex.sf["ok"][5] = False
        with pytest.raises(ValueError, match="no good measurement"):
            output.build_measured_payload(ex, output.base_from_truth(measured["truth"]))
    finally:
        ex.sf["ok"] = saved


def test_smoothed_payload(measured, tmp_path):
    """The payload's SF and eigen-variations are the smoothing's, evaluated at the fine pT."""
    from wremnants_dask.corrections.payload import CorrectionsPayload
    from wremnants_dask.efficiency import output
    from wremnants_dask.efficiency.smooth import smooth_all

    ex = measured["ex"]
    smooth = smooth_all(ex, degree=1, pt_min=28.0)
    cset = output.build_measured_payload(ex, output.base_from_truth(measured["truth"]), smooth)
    payload = CorrectionsPayload(output.write_payload(cset, tmp_path))
    spec = ex.spectra["mc"]
    sm = smooth["iso"]
    assert payload.n_eigen == sm.n_eigen == 2 + 2  # 2 polynomial + 2 binned pT bins (< 28)
    pt = np.array([35.5, 20.5])  # fine-bin centres: one smoothed, one binned
    eta = np.full(2, 0.5 * (spec.eta_edges[3] + spec.eta_edges[4]))
    nom, var = sm.evaluate(pt)
    np.testing.assert_allclose(payload.muon_sf("iso", eta, pt), nom[3], rtol=1e-12)
    for k in range(sm.n_eigen):
        up = payload.muon_sf("iso", eta, pt, "stat_up", k)
        np.testing.assert_allclose(up - nom[3], var[3, k], atol=1e-12)


def test_payload_on_the_shipped_base(measured, tmp_path):
    """On the shipped base payload (what the W-mass processor reads otherwise) only the muon
    SFs and MC efficiencies change: every other correction and the reference masses of the
    provenance are the base's, and the base's path and SHA-256 are recorded."""
    from wremnants_dask.corrections.payload import CorrectionsPayload, default_payload_path
    from wremnants_dask.efficiency import output
    from wremnants_dask.utils.provenance import file_sha256

    ex = measured["ex"]
    base = output.base_from_file(None)
    cset = output.build_measured_payload(ex, base)
    shipped = output.read_payload(default_payload_path())
    by_name = {c["name"]: c for c in cset["corrections"]}
    assert [c["name"] for c in cset["corrections"]] == [c["name"] for c in shipped["corrections"]]
    measured_names = {*output.MEASURED, "muon_sf_reco"}  # reco: measured here too
    for c in shipped["corrections"]:
        if c["name"] in measured_names:
            assert by_name[c["name"]] != c, c["name"]
        else:
            assert by_name[c["name"]] == c, c["name"]
    meta = json.loads(cset["description"])
    old = json.loads(shipped["description"])
    assert meta["truth_params"] == old["truth_params"]  # reference masses of the processors
    assert meta["base_payload"]["sha256"] == file_sha256(default_payload_path())
    payload = CorrectionsPayload(output.write_payload(cset, tmp_path))
    spec = ex.spectra["mc"]
    pt = np.array([0.5 * (spec.pt_edges[2] + spec.pt_edges[3])])
    eta = np.array([0.5 * (spec.eta_edges[1] + spec.eta_edges[2])])
    np.testing.assert_allclose(
        payload.muon_sf("iso", eta, pt),
        combined_sf(ex)[list(spec.steps).index("iso"), 2, 1],
        rtol=1e-12,
    )
    # the measured eta bins travel with the payload: the fit gives each one nuisance per
    # eigenvector, not one per fine eta bin (12 independent copies of one measurement)
    np.testing.assert_array_equal(payload.sf_stat_eta_edges, spec.eta_edges)
    np.testing.assert_array_equal(payload.sf_stat_slots(), spec.eta_edges)
    assert CorrectionsPayload(default_payload_path()).sf_stat_eta_edges is None
    with pytest.raises(ValueError, match="lacks"):
        output.build_measured_payload(ex, {"corrections": shipped["corrections"][:1]})


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMALL_CONFIG.replace("iso_max: 0.15}}", "isomax: 0.15}}"))
    with pytest.raises(TnPConfigError, match=r"bad.yaml: steps\[2\].pass: unknown key"):
        load_config(bad)
    assert load_config(None).step_names == ["reco", "idip", "iso", "trigger"]
    # a packaged name (the W-mass chain's binning); an unknown one is an error naming it
    assert load_config("tnp_chain").path.endswith("tnp_chain.yaml")
    with pytest.raises(TnPConfigError, match="tnp_nonexistent"):
        load_config("tnp_nonexistent")


def test_kernel_matches_monte_carlo():
    """The smearing kernel equals a sampled uniform-in-bin mass shifted and smeared."""
    from wremnants_dask.efficiency.fit import mass_grid, smear, smear_kernel

    edges = np.linspace(50, 130, 81)
    (n_fit, i0, width), _ = mass_grid(edges, 10, 70)
    k = smear_kernel(n_fit, i0, 80, width, 0.3, 1.2)
    tmpl = np.zeros(80)
    tmpl[40] = 1.0  # the bin [90, 91]
    got = np.asarray(smear(tmpl, k, n_fit))
    rng = np.random.default_rng(1)
    x = rng.uniform(90, 91, 1_000_000) + 0.3 + 1.2 * rng.normal(size=1_000_000)
    ref = np.histogram(x, edges[10:71])[0] / 1e6
    # binomial error of the sampled fractions (<= 0.5e-3): 5 sigma
    np.testing.assert_allclose(got, ref, atol=2.5e-3)
    ident = smear_kernel(n_fit, i0, 80, width, 0.0, 1e-6)
    np.testing.assert_allclose(np.asarray(smear(tmpl, ident, n_fit))[30], 1.0, atol=1e-5)


@pytest.mark.parametrize("minimizer", ["scipy", "iminuit"])
def test_batched_fit_equals_scipy_one_by_one(measured, minimizer):
    """The vmapped LM fit finds the same minimum as scipy's L-BFGS-B (iminuit's MIGRAD) on
    single bins: the loop references of bench/bench_tnp.py fit the same likelihood."""
    from wremnants_dask.efficiency.fit import fit_one_scipy

    if minimizer == "iminuit":
        pytest.importorskip("iminuit", reason="iminuit is in the bench extra only")
    ex = measured["ex"]
    data, mc = ex.spectra["data"], ex.spectra["mc"]
    fit = ex.results["data"]["fit"]
    tmpl = mc.passing + mc.failing
    for b in np.flatnonzero(fit.good)[:2]:
        eff, err = fit_one_scipy(
            data.passing[b],
            data.failing[b],
            tmpl[b],
            tmpl[b],
            data.mass_edges,
            measured["cfg"].fit_range,
            minimizer=minimizer,
        )
        assert abs(eff - fit.eff[b]) < 0.05 * fit.err[b]
        assert abs(err - fit.err[b]) < 0.05 * fit.err[b]
