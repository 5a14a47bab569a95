"""The reconstruction step: the generator's reco inefficiency and IsoTrack collection, the track
probes of the tnp processor, and what a file without IsoTrack does.

The measured reco efficiencies against truth (pulls per step and method) are in test_tnp.py,
whose config has the reco step first; here the generator itself is checked against its table,
the IsoTrack branches against a real NanoAOD file, and the processor on real and IsoTrack-less
inputs.
"""

from __future__ import annotations

import logging

import awkward as ak
import numpy as np
import pytest
import uproot
from conftest import GOLDEN_JSON, NANOAOD_DATA, NANOAOD_DY

from wremnants_dask import engine, synth
from wremnants_dask.efficiency.spectra import spectra_from_result
from wremnants_dask.inputs.datasets import Dataset
from wremnants_dask.processors.common import _WARNED
from wremnants_dask.processors.tnp import (
    MUON_TRACK_BRANCHES,
    TRACK_BRANCHES,
    TagAndProbeProcessor,
    track_charge,
    track_like,
    unmatched_tracks,
)
from wremnants_dask.processors.tnp_config import TnPConfigError, load_config

N_Z = 40_000
CONFIG = """
tag: {pt_min: 26.0, eta_max: 2.4, id: tightId, dxy_max: 0.05, iso_max: 0.15, trigger_match: true}
probe: {pt_min: 15.0, eta_max: 2.4}
trigger: {bit: 8, dr: 0.3}
pair: {opposite_charge: true, mass_bins: 80, mass_range: [50.0, 130.0]}
steps:
  - {name: reco, pass: {muon_match: 0.01}}
  - {name: idip, pass: {id: mediumId, dxy_max: 0.05}}
  - {name: iso, pass: {iso_max: 0.15}}
binning: {pt: [15, 30, 45, 80], eta: [-2.4, -1.2, 0.0, 1.2, 2.4], charge: true}
extraction:
  fit_range: [60.0, 120.0]
  signal_window: [81.0, 101.0]
  sidebands: [[60.0, 71.0], [111.0, 120.0]]
"""


@pytest.fixture(scope="module")
def zfile(tmp_path_factory):
    base = tmp_path_factory.mktemp("reco")
    [f] = synth.generate_sample("zmumu", N_Z, base / "mc", seed=77)
    return base, f


def _ds(name: str, files, is_data: bool = False, golden: str | None = None) -> Dataset:
    group = "Data" if is_data else "Zmumu"
    xsec = None if is_data else 2000.0
    return Dataset(name, group, tuple(map(str, files)), is_data, xsec, "2018", golden_json=golden)


# ----------------------------------------------------------------------------- generator
def test_isotrack_branches_as_in_real_nanoaod(zfile):
    """Names and types of every IsoTrack branch equal those of the real NanoAODv6 file."""
    _, f = zfile
    ours = uproot.open(f)["Events"]
    real = uproot.open(NANOAOD_DY)["Events"]

    def branches(t):
        return {k: t[k].typename for k in t.keys() if k.startswith(("IsoTrack_", "nIsoTrack"))}

    assert branches(ours) == branches(real)
    assert len(branches(ours)) == 15


def test_generated_reco_efficiency_matches_truth(zfile):
    """Prompt Muons / (prompt Muons + IsoTracks) per coarse (eta, pT) bin equals the truth
    table averaged over the bin's tracks; the same check against a table 1 % lower fails.

    Z -> mu mu: every IsoTrack above 20 GeV is a prompt muon's track (nothing else is
    generated), and prompt muons pass the IsoTrack isolation; so the ratio is the reco
    efficiency of the tracks, at their (reconstructed) pT and eta.
    """
    import json

    base, f = zfile
    truth = json.loads((base / "mc" / "truth.json").read_text())["efficiency"]
    ev = uproot.open(f)["Events"].arrays(
        ["Muon_pt", "Muon_eta", "Muon_genPartFlav", "IsoTrack_pt", "IsoTrack_eta"]
    )
    prompt = ev.Muon_genPartFlav == 1
    sel_m = prompt & (ev.Muon_pt > 20) & (abs(ev.Muon_eta) < 2.4)
    sel_t = (ev.IsoTrack_pt > 20) & (abs(ev.IsoTrack_eta) < 2.4)
    m_pt, m_eta = (ak.to_numpy(ak.flatten(x[sel_m])) for x in (ev.Muon_pt, ev.Muon_eta))
    t_pt, t_eta = (ak.to_numpy(ak.flatten(x[sel_t])) for x in (ev.IsoTrack_pt, ev.IsoTrack_eta))
    e_fine, p_fine = np.asarray(truth["eta_edges"]), np.asarray(truth["pt_edges"])
    table = np.asarray(truth["mc"]["reco"])

    def fine(pt, eta):
        ie = np.clip(np.searchsorted(e_fine, eta, side="right") - 1, 0, 47)
        ip = np.clip(np.searchsorted(p_fine, pt, side="right") - 1, 0, p_fine.size - 2)
        return ie, ip

    eta_c, pt_c = np.array([-2.4, -1.2, -0.3, 0.3, 1.2, 2.4]), np.array([20.0, 40.0, 80.0])
    pt_all, eta_all = np.concatenate([m_pt, t_pt]), np.concatenate([m_eta, t_eta])
    passed = np.concatenate([np.ones(m_pt.size, bool), np.zeros(t_pt.size, bool)])
    e_true = table[fine(pt_all, eta_all)]
    be = np.clip(np.searchsorted(eta_c, eta_all, side="right") - 1, 0, eta_c.size - 2)
    bp = np.clip(np.searchsorted(pt_c, pt_all, side="right") - 1, 0, pt_c.size - 2)
    assert t_pt.size > 300  # ~1.5 % of ~65k tracks
    for scale, ok in ((1.0, True), (0.99, False)):
        chi2, n = 0.0, 0
        for i in range(eta_c.size - 1):
            for j in range(pt_c.size - 1):
                b = (be == i) & (bp == j)
                exp = scale * e_true[b].mean()
                var = (e_true[b] * (1 - e_true[b])).sum() / b.sum() ** 2  # Poisson-binomial
                chi2 += (passed[b].mean() - exp) ** 2 / var
                n += 1
        # chi2 with 10 bins: below 29.6 with probability 0.999
        assert (chi2 < 29.6) == ok, f"scale {scale}: chi2 {chi2:.1f} for {n} bins"


def test_reco_draws_have_their_own_stream():
    """A different reco stream changes which muons are found, nothing else: the generator
    content is identical and every muon found in both runs has identical fields."""
    from wremnants_dask.synth.events import make_events
    from wremnants_dask.synth.params import SynthParams
    from wremnants_dask.synth.processes import PROCESSES

    world = SynthParams().world(False)

    def run(seed_reco):
        rng = np.random.default_rng(5)
        chunk, _ = make_events(
            PROCESSES["zmumu"], 3000, world, rng, rng_reco=np.random.default_rng(seed_reco)
        )
        return chunk

    a, b = run(1), run(2)
    for name in ("GenPart", "LHEPdfWeight"):
        for k, v in a.collections[name][1].items():
            np.testing.assert_array_equal(v, b.collections[name][1][k], err_msg=f"{name}_{k}")
    for k in ("genWeight", "Pileup_nTrueInt", "PV_npvs", "PV_z", "Pileup_nPU", "LHE_Vpt"):
        np.testing.assert_array_equal(a.scalars[k], b.scalars[k], err_msg=k)
    fa, fb = a.collections["Muon"][1], b.collections["Muon"][1]
    common, ia, ib = np.intersect1d(fa["pt"], fb["pt"], return_indices=True)
    assert common.size > 0.95 * min(fa["pt"].size, fb["pt"].size)
    assert fa["pt"].size != fb["pt"].size or not np.array_equal(fa["pt"], fb["pt"])
    for k in ("eta", "phi", "pfRelIso04_all", "dxy", "mediumId", "genPartIdx"):
        np.testing.assert_array_equal(fa[k][ia], fb[k][ib], err_msg=f"Muon_{k}")


# ----------------------------------------------------------------------------- processor
def test_track_helpers():
    assert track_charge(np.array([211, -211, 13, -13, 11, 0])).tolist() == [1, -1, -1, 1, -1, 0]
    t_eta = np.array([[0.5, 1.0, np.nan]])
    t_phi = np.array([[0.1, 3.1, np.nan]])
    m_eta = np.array([[0.5, np.nan]])
    m_phi = np.array([[0.1 + 0.005, np.nan]])
    assert unmatched_tracks(t_eta, t_phi, m_eta, m_phi, 0.01).tolist() == [[False, True, True]]
    # dphi wraps around pi: a track at phi 3.14 matches a muon at -3.14
    assert not unmatched_tracks(np.array([[0.0]]), np.array([[3.14]]), np.array([[0.0]]),
                                np.array([[-3.14]]), 0.01)[0, 0]  # fmt: skip


@pytest.mark.parametrize(
    ("steps", "match"),
    [
        ("[{name: idip, pass: {id: mediumId}}, {name: reco, pass: {muon_match: 0.01}}]",
         "first step"),
        ("[{name: reco, pass: {muon_match: 0.01, iso_max: 0.1}}]", "only criterion"),
        ("[{name: reco, pass: {muon_match: 2}}]", "dR in"),
        ("[{name: reco, pass: {muon_match: true}}]", "dR in"),
    ],
)  # fmt: skip
def test_reco_step_config_errors(tmp_path, steps, match):
    text = CONFIG.replace(CONFIG[CONFIG.index("steps:") : CONFIG.index("binning:")], "")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text + f"steps: {steps}\n")
    with pytest.raises(TnPConfigError, match=match):
        load_config(bad)


def test_files_without_isotrack_skip_the_step(zfile, tmp_path, monkeypatch, caplog):
    """Without IsoTrack the reco step is empty with one message; the other steps are filled
    exactly as with it (their probes are the Muons either way). With IsoTrack the reco step
    has failing probes (the tracks) and passing ones (the Muons)."""
    from wremnants_dask.synth import detector

    base, f = zfile
    monkeypatch.setattr(detector, "_isotracks", lambda *a, **k: None)
    [g] = synth.generate_sample("zmumu", N_Z, tmp_path / "noiso", seed=77)
    monkeypatch.undo()
    assert "IsoTrack_pt" not in uproot.open(g)["Events"].keys()
    cfg = tmp_path / "tnp.yaml"
    cfg.write_text(CONFIG)
    _WARNED.clear()
    with caplog.at_level(logging.WARNING):
        r_with = engine.run([_ds("zmumu", [f])], TagAndProbeProcessor(config=str(cfg)))
        r_without = engine.run([_ds("zmumu", [g])], TagAndProbeProcessor(config=str(cfg)))
    msgs = [r.getMessage() for r in caplog.records if "IsoTrack" in r.getMessage()]
    assert len(msgs) == 1 and "'reco'" in msgs[0] and "skipped" in msgs[0], msgs
    s_with = spectra_from_result(r_with, data=False)
    s_without = spectra_from_result(r_without, data=False)
    step = s_with.bin_index()["step"]
    reco = step == 0
    assert s_without.passing[reco].sum() == 0 and s_without.failing[reco].sum() == 0
    np.testing.assert_array_equal(s_with.passing[~reco], s_without.passing[~reco])
    np.testing.assert_array_equal(s_with.failing[~reco], s_without.failing[~reco])
    # with tracks: passing reco probes are the Muons the idip step sees that pass the IsoTrack
    # selection (~98 %: prompt muons failing its isolation), failing ones ~1-2 %
    n_idip = (s_with.passing + s_with.failing)[step == 1].sum()
    assert 0.95 * n_idip < s_with.passing[reco].sum() < n_idip
    frac = s_with.failing[reco].sum() / (s_with.passing + s_with.failing)[reco].sum()
    assert 0.005 < frac < 0.03, frac


def test_real_nanoaod_runs_the_reco_step(tmp_path):
    """The real NanoAODv6 files carry IsoTrack: the tnp processor runs every step on them."""
    for b in TRACK_BRANCHES + MUON_TRACK_BRANCHES:
        assert b in uproot.open(NANOAOD_DY)["Events"].keys()
    datasets = [
        _ds("dy_m50", [NANOAOD_DY]),
        _ds("data_dimuon", [NANOAOD_DATA], True, str(GOLDEN_JSON)),
    ]
    result = engine.run(datasets, TagAndProbeProcessor())
    for data in (False, True):
        spec = spectra_from_result(result, data=data)
        assert spec.steps[0] == "reco"
        reco = spec.bin_index()["step"] == 0
        # 40 events per file: a few Z pairs in the simulation (none of the data's pass the
        # tag and golden JSON); the Muon probes in IsoTrack's selection pass the reco step
        assert spec.passing[reco].sum() >= (0 if data else 5)
        n_idip = (spec.passing + spec.failing)[spec.bin_index()["step"] == 1].sum()
        assert spec.passing[reco].sum() <= n_idip


def test_muon_probes_take_the_isotrack_selection(zfile):
    """The reco step's pass and fail probes are selected alike: every IsoTrack the generator
    wrote passes the processor's ``track_like`` (the two copies of NanoAOD's selection agree),
    and the Muons carry the charged isolation the selection needs; a few per cent of them
    (non-isolated) fail it, as the lost tracks the generator left out of IsoTrack. Without it
    the measured reco efficiency was high by 1.4 % of the inefficiency (issue 18)."""
    _, f = zfile
    ev = uproot.open(f)["Events"].arrays(
        [f"IsoTrack_{k}" for k in ("pt", "dxy", "dz", "pfRelIso03_chg")]
        + ["Muon_pt", "Muon_pfRelIso03_all", *MUON_TRACK_BRANCHES]
    )
    t_ok = track_like(ev.IsoTrack_pt, ev.IsoTrack_dxy, ev.IsoTrack_dz, ev.IsoTrack_pfRelIso03_chg)
    assert ak.sum(ak.num(ev.IsoTrack_pt)) > 300 and ak.all(t_ok)
    chg, iso = ak.flatten(ev.Muon_pfRelIso03_chg), ak.flatten(ev.Muon_pfRelIso03_all)
    assert ak.all((chg >= 0.5 * iso * (1 - 1e-6)) & (chg <= 0.9 * iso * (1 + 1e-6)))
    m_ok = track_like(ev.Muon_pt, ev.Muon_dxy, ev.Muon_dz, ev.Muon_pfRelIso03_chg)
    hard = ev.Muon_pt > 20
    frac = 1 - ak.sum(m_ok[hard]) / ak.sum(hard)
    assert 0.003 < frac < 0.05, frac


# ----------------------------------------------------------------------------- W-mass weights
def test_muon_weights_apply_the_reco_sf(tmp_path):
    """The default payload carries muon_sf_reco and the muon weights multiply it in: against a
    payload built from the same truth without the reco tables (as payloads before the reco
    step, which still load), the nominal weight per muon differs by exactly the truth ratio
    eff_data / eff_mc of reco, and the effStat tensors gain one step."""
    import json

    from wremnants_dask.corrections import build
    from wremnants_dask.corrections.payload import load_payload
    from wremnants_dask.processors.muon_weights import muon_sf_weights
    from wremnants_dask.synth.params import SynthParams

    truth = json.loads(json.dumps(SynthParams().truth()))
    eff = truth["efficiency"]
    legacy = json.loads(json.dumps(truth))
    for world in ("mc", "data"):
        del legacy["efficiency"][world]["reco"]
    old = load_payload(build.write_payload(build.build_payload(legacy), tmp_path))
    new = load_payload()
    assert old.sf_steps == ("idip", "iso", "trigger")
    assert new.sf_steps == ("reco", "idip", "iso", "trigger")
    eta = np.array([0.25, -1.05, 2.3, 0.6])
    pt = np.array([30.5, 41.5, 27.5, 50.5])
    counts = np.ones(4, dtype=np.int64)
    w_new = muon_sf_weights(new, eta, pt, counts)
    w_old = muon_sf_weights(old, eta, pt, counts)
    ie = np.searchsorted(eff["eta_edges"], eta, side="right") - 1
    ip = np.searchsorted(eff["pt_edges"], pt, side="right") - 1
    sf_reco = np.asarray(eff["data"]["reco"])[ie, ip] / np.asarray(eff["mc"]["reco"])[ie, ip]
    assert np.all(sf_reco < 0.9995)  # the data lose 0.3-1.1 % more muons: not trivially 1
    np.testing.assert_allclose(w_new.nominal / w_old.nominal, sf_reco, rtol=1e-9)
    assert w_new.stat_per_muon.shape[1] == 4 and w_old.stat_per_muon.shape[1] == 3
