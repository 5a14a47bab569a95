"""Correction payload: built from generator truth, checked against that truth and independent fits."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from float_compare import assert_tree_close

from wremnants_dask.corrections import build
from wremnants_dask.corrections.payload import CorrectionError, CorrectionsPayload, load_payload
from wremnants_dask.corrections.probe_counts import probe_counts
from wremnants_dask.corrections.sf_eigen import ratio_error, smooth_and_decompose
from wremnants_dask.synth.params import SynthParams


@pytest.fixture(scope="module")
def truth() -> dict:
    return json.loads(json.dumps(SynthParams().truth()))


@pytest.fixture(scope="module")
def payload(tmp_path_factory, truth) -> CorrectionsPayload:
    out = tmp_path_factory.mktemp("corr")
    truth_path = out / "truth.json"
    truth_path.write_text(json.dumps(truth))
    path = build.main(["--truth", str(truth_path), "-o", str(out)])
    return load_payload(path)


def _centres(edges) -> np.ndarray:
    e = np.asarray(edges)
    return 0.5 * (e[1:] + e[:-1])


def test_sf_nominal_is_truth_ratio(payload, truth):
    eff = truth["efficiency"]
    eta_c, pt_c = np.meshgrid(_centres(eff["eta_edges"]), _centres(eff["pt_edges"]), indexing="ij")
    for step in ("idip", "iso", "trigger"):
        mc, data = np.asarray(eff["mc"][step]), np.asarray(eff["data"][step])
        ok = mc > 0
        sf = payload.muon_sf(step, eta_c.ravel(), pt_c.ravel()).reshape(mc.shape)
        np.testing.assert_allclose((sf * mc)[ok], data[ok], rtol=1e-12)
        np.testing.assert_allclose(
            payload.mc_efficiency(step, eta_c.ravel(), pt_c.ravel()), mc.ravel()
        )
    # the data tables differ from simulation by 0.4-4%: the SFs are not trivially 1
    sf_trig = payload.muon_sf("trigger", np.array([2.3]), np.array([40.0]))
    assert sf_trig[0] < 0.97


def test_stat_eigenvariations_reproduce_fit_covariance(payload, truth):
    """sum_k delta_k delta_k^T equals the pT-polynomial fit covariance from numpy.polyfit."""
    eff = truth["efficiency"]
    pt_c = _centres(eff["pt_edges"])
    fit = pt_c >= 24.0
    meta = payload.metadata["args"]
    ieta = 7
    eta = np.full(fit.sum(), _centres(eff["eta_edges"])[ieta])
    mc = np.asarray(eff["mc"]["iso"])[ieta, fit]
    data = np.asarray(eff["data"]["iso"])[ieta, fit]
    counts = probe_counts(truth, meta["probe_lumi_pb"], meta["mc_z_events"])["iso"]
    n_data, n_mc = (np.maximum(c[ieta, fit], build.MIN_PROBES) for c in counts)
    err = ratio_error(data, mc, n_data, n_mc)
    x = 2.0 * (pt_c[fit] - 24.0) / (eff["pt_edges"][-1] - 24.0) - 1.0
    _, cov = np.polyfit(x, data / mc, meta["degree"], w=1.0 / err, cov="unscaled")
    design = np.vander(x, meta["degree"] + 1)  # polyfit order: highest power first
    expected = design @ cov @ design.T
    nom = payload.muon_sf("iso", eta, pt_c[fit])
    deltas = np.stack(
        [payload.muon_sf("iso", eta, pt_c[fit], "stat_up", k) - nom for k in range(payload.n_eigen)]
    )
    np.testing.assert_allclose(deltas.T @ deltas, expected, rtol=1e-6, atol=1e-14)
    downs = np.stack(
        [
            payload.muon_sf("iso", eta, pt_c[fit], "stat_down", k) - nom
            for k in range(payload.n_eigen)
        ]
    )
    np.testing.assert_allclose(downs, -deltas, atol=1e-15)


def test_smoothing_recovers_a_polynomial():
    rng = np.random.default_rng(3)
    pt = np.linspace(25, 60, 30)
    truth = 0.98 + 1e-4 * (pt - 40) - 2e-6 * (pt - 40) ** 2
    err = np.full((4, pt.size), 2e-3)
    vals = truth + err * rng.normal(size=err.shape)
    res = smooth_and_decompose(vals, err, pt, 2, (25.0, 60.0))
    pulls = (res.smooth - truth) / np.sqrt(np.sum(res.variations**2, axis=1))
    assert np.all(np.abs(pulls) < 5)
    assert np.mean(res.chi2) == pytest.approx(res.ndf, rel=0.5)


def test_pileup_weights_turn_mc_profile_into_data(payload, truth):
    pu = truth["pileup"]
    centres = np.asarray(pu["edges"][:-1]) + 0.5
    mc, data = np.asarray(pu["mc"]), np.asarray(pu["data"])
    w = payload.pileup(centres)
    np.testing.assert_allclose(w * mc / mc.sum(), data / data.sum(), atol=1e-12)
    mean = {v: np.sum(centres * payload.pileup(centres, v) * mc) for v in ("nominal", "up", "down")}
    # up/down scale nTrueInt by 1 +- 4.6%
    assert mean["up"] / mean["nominal"] == pytest.approx(1.046, abs=3e-3)
    assert mean["down"] / mean["nominal"] == pytest.approx(0.954, abs=3e-3)


def test_scale_resolution_prefiring_models(payload, truth):
    eta = np.array([-2.35, -0.25, 0.05, 1.65])
    pt = np.array([30.0, 40.0, 45.0, 55.0])
    r = truth["resolution"]
    a = r["a0"] + r["a2"] * (eta / 2.4) ** 2
    b = r["b0"] * (1 + r["b1"] * abs(eta))
    np.testing.assert_allclose(
        payload.resolution(eta, pt), np.sqrt(a * a + (b * pt) ** 2), rtol=1e-12
    )
    ie = np.searchsorted(truth["momentum_scale"]["eta_edges"], eta, side="right") - 1
    np.testing.assert_allclose(
        payload.scale_data(eta), np.asarray(truth["momentum_scale"]["data"])[ie]
    )
    np.testing.assert_allclose(
        payload.prefiring_prob(eta, pt), np.asarray(truth["prefiring"]["p_mu"])[ie]
    )
    assert payload.scale_slices().size == 49


# The shipped payload was built on another machine. The scale factors' statistical variations
# come from np.linalg.inv and eigh of 3x3 fit covariances, whose last bits depend on the LAPACK
# kernels of the CPU: values near 1 were seen 4 ulps (9e-16) apart. The normal matrices have
# condition numbers <= 31 and relative eigenvalue gaps >= 0.17, so a correct rebuild stays within
# ~cond * n * eps ~ 2e-14 relative; 1e-13 leaves a margin of 5 and is still 1e7 below the smallest
# change of a build parameter (degree, probes, truth efficiencies shift values by >= 1e-6).
# atol: exact zeros (edges, empty efficiency bins) compared with values that cancel to ~eps.
PAYLOAD_RTOL = 1e-13
PAYLOAD_ATOL = 1e-15


def _shipped_and_fresh(truth) -> tuple[CorrectionsPayload, dict, dict]:
    shipped = load_payload()
    with gzip.open(shipped.path, "rt") as f:
        raw = json.load(f)
    return shipped, raw, json.loads(json.dumps(build.build_payload(truth)))


def test_shipped_default_matches_generator_defaults(truth):
    """The packaged payload is the one built from the generator's default parameters (within
    the LAPACK rounding of another CPU, see PAYLOAD_RTOL)."""
    shipped, raw, fresh = _shipped_and_fresh(truth)
    assert [c["name"] for c in raw["corrections"]] == [c["name"] for c in fresh["corrections"]]
    for a, b in zip(raw["corrections"], fresh["corrections"]):
        assert_tree_close(a["data"], b["data"], PAYLOAD_RTOL, PAYLOAD_ATOL, a["name"])
    meta = shipped.metadata
    assert (
        meta["stage"] == "corrections.build" and meta["truth_params"]["mW"] == truth["params"]["mW"]
    )


def _float_lists(tree, out: list) -> list:
    """Every list of floats in a JSON tree, in document order (the mutable leaves)."""
    if isinstance(tree, dict):
        for v in tree.values():
            _float_lists(v, out)
    elif isinstance(tree, list):
        if tree and all(isinstance(v, float) for v in tree):
            out.append(tree)
        else:
            for v in tree:
                _float_lists(v, out)
    return out


@pytest.mark.parametrize(
    ("change", "passes"),
    [
        ("4 ulps on every value", True),  # what another CPU's LAPACK gives
        ("one value 1e-11 relative", False),
        ("one edge moved", False),
        ("a variation renamed", False),
    ],
)
def test_shipped_comparison_tolerates_rounding_only(truth, change, passes):
    """The tolerance of the shipped-payload test accepts rounding noise and nothing else."""
    _, raw, _ = _shipped_and_fresh(truth)
    trig = next(c for c in raw["corrections"] if c["name"] == "muon_sf_trigger")
    other = json.loads(json.dumps(trig["data"]))
    leaves = _float_lists(other, [])
    if change == "4 ulps on every value":
        for leaf in leaves:
            v = np.asarray(leaf)
            leaf[:] = (v + 4 * np.spacing(v)).tolist()
    elif change == "one value 1e-11 relative":
        content = max(leaves, key=len)
        content[len(content) // 2] *= 1 + 1e-11
    elif change == "one edge moved":
        leaves[0][1] += 1e-9
    else:
        stack = [other]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if node.get("key") == "stat_up":
                    node["key"] = "stat_upp"
                    break
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
        else:
            pytest.fail("no stat_up variation in muon_sf_trigger")
    if passes:
        assert_tree_close(other, trig["data"], PAYLOAD_RTOL, PAYLOAD_ATOL)
    else:
        with pytest.raises(AssertionError):
            assert_tree_close(other, trig["data"], PAYLOAD_RTOL, PAYLOAD_ATOL)


def test_errors_name_file_and_correction(tmp_path, payload):
    with pytest.raises(CorrectionError, match="nope.json.gz not found"):
        CorrectionsPayload(tmp_path / "nope.json.gz")
    with gzip.open(payload.path, "rt") as f:
        raw = json.load(f)
    broken = dict(raw, corrections=[c for c in raw["corrections"] if c["name"] != "muon_sf_iso"])
    bad = tmp_path / "broken.json"
    bad.write_text(json.dumps(broken))
    with pytest.raises(CorrectionError, match=r"broken.json lacks correction 'muon_sf_iso'"):
        CorrectionsPayload(bad)
    renamed = json.loads(json.dumps(raw))
    for c in renamed["corrections"]:
        if c["name"] == "pileup":
            c["inputs"][0]["name"] = "nPU"
    bad2 = tmp_path / "renamed.json"
    bad2.write_text(json.dumps(renamed))
    with pytest.raises(CorrectionError, match=r"renamed.json: correction 'pileup' has inputs"):
        CorrectionsPayload(bad2)
    garbage = tmp_path / "garbage.json.gz"
    garbage.write_bytes(b"not gzip")
    with pytest.raises(CorrectionError, match="garbage.json.gz is unreadable"):
        CorrectionsPayload(garbage)
    with pytest.raises(CorrectionError, match="evaluating 'muon_sf_iso'"):
        payload.muon_sf("iso", np.array([0.1]), np.array([30.0]), "bogus")


def test_prefiring_map_matches_generator_branches(tmp_path, payload, truth):
    """1 - (1 - p_event) prod_mu (1 - p_mu(eta)) from the payload == L1PreFiringWeight_Nom."""
    import awkward as ak
    import uproot

    from wremnants_dask.processors.muon_weights import prefiring_weights
    from wremnants_dask.synth import generate_sample

    (f,) = generate_sample("zmumu", 4000, tmp_path, seed=5)
    ev = uproot.open(f)["Events"].arrays(
        ["Muon_eta", "Muon_pt", "L1PreFiringWeight_Nom", "L1PreFiringWeight_Up"]
    )
    counts = ak.to_numpy(ak.num(ev.Muon_eta))
    eta = ak.to_numpy(ak.flatten(ev.Muon_eta)).astype(np.float64)
    pt = ak.to_numpy(ak.flatten(ev.Muon_pt)).astype(np.float64)
    nom, rel = prefiring_weights(payload, eta, pt, counts)
    expected = (1.0 - truth["prefiring"]["p_event"]) * nom
    branch = ak.to_numpy(ev.L1PreFiringWeight_Nom)
    # the payload is binned in eta (48 bins), the generator evaluates p_mu(eta) exactly
    assert np.max(np.abs(expected - branch)) < 1.5e-3
    assert np.mean(1 - expected) == pytest.approx(np.mean(1 - branch), rel=0.02)
    up = 1 - (1 - truth["prefiring"]["syst"]) * (1 - branch)
    np.testing.assert_allclose(ak.to_numpy(ev.L1PreFiringWeight_Up), up, atol=1e-6)
    assert np.all(rel[:, 0] <= 1.0 + 1e-12) and np.all(rel[:, 1] >= 1.0 - 1e-12)
