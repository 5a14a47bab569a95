"""Per-event physics helpers: momentum-scale weights, slot tensors, scale-factor tensors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from wremnants_dask.corrections.payload import load_payload
from wremnants_dask.processors.muon_scale import scale_weight
from wremnants_dask.processors.muon_weights import muon_sf_weights
from wremnants_dask.processors.tensors import product_per_event, scatter_slots
from wremnants_dask.synth.params import SynthParams


def test_scale_weight_matches_direct_shift():
    """Histogram of pT x (1+delta) == histogram of pT weighted by p'(pT)/p(pT) (Gaussian model)."""
    rng = np.random.default_rng(7)
    n = 400_000
    pt_gen = 25.0 + rng.exponential(12.0, n)
    sigma = 0.02 * pt_gen
    pt_reco = pt_gen + sigma * rng.normal(size=n)
    pt_other = pt_gen + sigma * rng.normal(size=n)  # independent sample for the direct shift
    delta = 0.01
    edges = np.linspace(30, 50, 21)
    h_direct, _ = np.histogram(pt_other * (1 + delta), edges)
    w = scale_weight(pt_reco, pt_gen, sigma, delta)
    h_w, _ = np.histogram(pt_reco, edges, weights=w)
    h_w2, _ = np.histogram(pt_reco, edges, weights=w * w)
    chi2 = np.sum((h_w - h_direct) ** 2 / (h_w2 + h_direct))
    assert stats.chi2.sf(chi2, edges.size - 1) > 1e-3
    h_nom, _ = np.histogram(pt_reco, edges)
    chi2_nom = np.sum((h_nom - h_direct) ** 2 / (h_nom + h_direct))
    assert stats.chi2.sf(chi2_nom, edges.size - 1) < 1e-6  # the shift itself is resolved
    # unmatched muons (no generator pT) are not reweighted
    np.testing.assert_array_equal(
        scale_weight(np.array([30.0]), np.array([np.nan]), np.array([1.0]), 0.01), 1.0
    )


def test_scatter_slots_against_loop():
    rng = np.random.default_rng(1)
    counts = np.array([0, 1, 2, 2, 1])
    slot = np.array([3, 0, 4, 2, 2, 1])
    per = rng.uniform(0.9, 1.1, (6, 2))
    got = scatter_slots(per, slot, counts, 5)
    expected = np.ones((5, 5, 2))
    i = 0
    for ev, c in enumerate(counts):
        for _ in range(c):
            expected[ev, slot[i]] *= per[i]
            i += 1
    np.testing.assert_allclose(got, expected)
    np.testing.assert_allclose(product_per_event(per[:, 0], counts), expected[:, :, 0].prod(axis=1))


def test_sf_tensors_and_antiisolation():
    payload = load_payload()
    truth = json.loads(json.dumps(SynthParams().truth()))
    eff = truth["efficiency"]
    eta = np.array([0.55, -1.95, 1.15])
    pt = np.array([35.5, 41.5, 28.5])
    counts = np.array([1, 2])
    fail = np.array([False, True, False])
    w = muon_sf_weights(payload, eta, pt, counts, fail={"iso": fail})
    ie = np.searchsorted(eff["eta_edges"], eta, side="right") - 1
    ip = np.searchsorted(eff["pt_edges"], pt, side="right") - 1
    sf = {
        s: np.asarray(eff["data"][s])[ie, ip] / np.asarray(eff["mc"][s])[ie, ip]
        for s in eff["steps"]
    }
    e_mc, e_d = np.asarray(eff["mc"]["iso"])[ie, ip], np.asarray(eff["data"]["iso"])[ie, ip]
    iso = np.where(fail, (1 - e_d) / (1 - e_mc), sf["iso"])
    per_mu = sf["reco"] * sf["idip"] * iso * sf["trigger"]  # the payload carries reco
    np.testing.assert_allclose(w.nominal, [per_mu[0], per_mu[1] * per_mu[2]], rtol=1e-10)
    full = w.stat_full()  # (events, steps, eta, eig, 2)
    assert payload.sf_steps == ("reco", "idip", "iso", "trigger")
    assert full.shape == (2, 4, 48, payload.n_eigen, 2)
    # event 0 varies only in its muon's eta bin; a failing-iso muon moves opposite to the SF
    untouched = np.delete(full[0], ie[0], axis=1)
    np.testing.assert_array_equal(untouched, 1.0)
    up_sf = payload.muon_sf("iso", eta[1:2], pt[1:2], "stat_up", 0) / sf["iso"][1]
    assert (up_sf[0] - 1) * (full[1, 2, ie[1], 0, 1] - 1) < 0
    assert w.syst.shape == (2, 4, 2)
    with pytest.raises(ValueError, match="at most one muon"):
        w.stat_diagonal()


def test_diagonal_eff_stat_expands_to_full_tensor(tmp_path):
    """mw's diagonal effStat histogram, expanded, equals filling the full (eta x eig) tensor."""
    import uproot

    from wremnants_dask.engine.processor import ChunkOutput, Events
    from wremnants_dask.inputs.datasets import Dataset
    from wremnants_dask.processors.common import expand_eff_stat
    from wremnants_dask.processors.mw import WMassProcessor
    from wremnants_dask.synth import generate_sample

    class FullTensorMW(WMassProcessor):
        eff_stat_diagonal = False

    (f,) = generate_sample("wminus_munu", 6000, tmp_path, seed=3)
    ds = Dataset("wminus", "Wmunu", (str(f),), False, 8700.0, "2018")
    arrays = uproot.open(f)["Events"].arrays()
    hists = {}
    for proc in (WMassProcessor(), FullTensorMW()):
        out = ChunkOutput(ds, proc.declared(ds))
        proc.process(Events(arrays), out)
        hists[type(proc).__name__] = {k: h.to_hist() for k, h in out.hists.items()}
    diag = hists["WMassProcessor"]
    full = hists["FullTensorMW"]["nominal_effStat"]
    expanded = expand_eff_stat(diag["nominal_effStat"], diag["nominal"])
    assert [a.name for a in expanded.axes] == [a.name for a in full.axes]
    assert diag["nominal"].sum().value > 1000
    np.testing.assert_allclose(expanded.values(), full.values(), rtol=1e-10, atol=1e-6)
    assert not np.allclose(full.values()[..., 0, :, :, 1], full.values()[..., 0, :, :, 0])
