"""Efficiency statistics: the probes the Z sample gives, against probes counted independently
from the generator's NanoAOD output (GenPart muons of a written zmumu sample)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import uproot

from wremnants_dask.corrections import build
from wremnants_dask.corrections import probe_counts as pc
from wremnants_dask.synth import PROCESSES, SynthParams, generate_sample


@pytest.fixture(scope="module")
def truth() -> dict:
    return json.loads(json.dumps(SynthParams().truth()))


def _coarse(a: np.ndarray) -> np.ndarray:
    """(48 eta, 48 pt) -> (4 eta, 3 pt) sums; pt groups 15-26, 26-40, 40-80 GeV."""
    eta = a.reshape(4, 12, a.shape[1]).sum(axis=1)
    return np.stack([eta[:, :11].sum(1), eta[:, 11:25].sum(1), eta[:, 25:].sum(1)], axis=1)


def test_probes_match_counted_z_sample(truth, tmp_path):
    n = 30_000
    [f] = generate_sample("zmumu", n, tmp_path, seed=99, params=SynthParams())
    # the pseudo-data world: count probes from the GenPart muons of the written file
    ev = uproot.open(f)["Events"].arrays(
        ["GenPart_pt", "GenPart_eta", "GenPart_pdgId", "GenPart_status", "GenPart_mass"],
        library="ak",
    )
    import awkward as ak

    mu = (abs(ev.GenPart_pdgId) == 13) & (ev.GenPart_status == 1)
    pt, eta = ev.GenPart_pt[mu][:, :2], ev.GenPart_eta[mu][:, :2]
    zmass = ak.firsts(ev.GenPart_mass[ev.GenPart_pdgId == 23])
    two = ak.to_numpy(ak.num(pt) == 2)
    pt = ak.to_numpy(pt[two]).astype(float)
    eta = ak.to_numpy(eta[two]).astype(float)
    zm = ak.to_numpy(zmass[two]).astype(float)
    eff = truth["efficiency"]
    e_edges, p_edges = np.asarray(eff["eta_edges"]), np.asarray(eff["pt_edges"])
    tag_eff = np.prod([np.asarray(eff["data"][s]) for s in eff["steps"]], axis=0)

    def idx(x, edges):
        return np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)

    counted = np.zeros((48, 48))
    window = (zm > 60) & (zm < 120)
    for t, p in ((0, 1), (1, 0)):
        tag = window & (pt[:, t] > 26) & (np.abs(eta[:, t]) < 2.4)
        probe = (np.abs(eta[:, p]) < 2.4) & (pt[:, p] >= 15) & (pt[:, p] < 80) & tag
        w = tag_eff[idx(eta[probe, t], e_edges), idx(pt[probe, t], p_edges)]
        np.add.at(counted, (idx(eta[probe, p], e_edges), idx(pt[probe, p], p_edges)), w)
    lumi = 10.0
    zproc = PROCESSES["zmumu"]
    counted *= zproc.xsec_pb * zproc.filter_eff * lumi / n
    first = eff["steps"][0]  # reco: every probe (track) enters the first step of the chain
    assert first == "reco"
    data, mc = pc.probe_counts(truth, lumi, 1e5)[first]
    got, exp = _coarse(data), _coarse(counted)
    rel_err = 1 / np.sqrt(np.maximum(_coarse(counted) * n / (zproc.xsec_pb * lumi), 1))
    assert np.all(np.abs(got / exp - 1) < 5 * rel_err + 0.02), (got / exp).round(3)
    # the total is what 10 pb^-1 of Z -> mu mu gives (~2e4 events): not 2e5 per bin
    assert 0.2 < data.sum() / (2 * zproc.xsec_pb * lumi) < 1.0
    # simulated probes scale with the sample size, data with the luminosity; steps chain
    c2 = pc.probe_counts(truth, 2 * lumi, 3e5)
    np.testing.assert_allclose(c2["reco"][0], 2 * data)
    np.testing.assert_allclose(c2["reco"][1], 3 * mc)
    after_reco = 2 * data * np.asarray(eff["data"]["reco"])
    np.testing.assert_allclose(c2["idip"][0], after_reco, rtol=1e-12)
    after_idip = after_reco * np.asarray(eff["data"]["idip"])
    np.testing.assert_allclose(c2["iso"][0], after_idip, rtol=1e-12)


def test_payload_stat_errors_follow_probes(truth):
    """Ten times the luminosity gives sqrt(10) smaller data-dominated SF errors."""
    small = build.sf_tables(truth, 2, *_counts(truth, 10.0), 5e-4)
    large = build.sf_tables(truth, 2, *_counts(truth, 100.0), 5e-4)
    s1 = np.sqrt((small["iso"]["stat"] ** 2).sum(axis=1))[:, 30]
    s2 = np.sqrt((large["iso"]["stat"] ** 2).sum(axis=1))[:, 30]
    assert np.all(s2 < s1) and 1.5 < np.median(s1 / s2) < np.sqrt(10) + 0.1
    flat = build.sf_tables(truth, 2, 2e5, 1e6, 5e-4)  # the old assumption: far too precise
    assert np.median(np.sqrt((flat["iso"]["stat"] ** 2).sum(axis=1))[:, 30] / s1) < 0.1


def _counts(truth, lumi):
    c = pc.probe_counts(truth, lumi, 1e5)
    return {s: v[0] for s, v in c.items()}, {s: v[1] for s, v in c.items()}
