"""Physics of the synthetic samples against the generator's own truth (truth.json, formulas)."""

from __future__ import annotations

import dataclasses
import json

import awkward as ak
import numpy as np
import pytest
import uproot
from scipy import integrate, stats

from wremnants_dask.synth import SynthParams, generate_sample
from wremnants_dask.synth.physics import generate_hard

MU_BRANCHES = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_mediumId", "Muon_dxy", "Muon_charge",
               "Muon_pfRelIso04_all", "Muon_genPartIdx", "Muon_genPartFlav"]  # fmt: skip


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_phys")
    w = generate_sample("wplus_munu", 40000, out, seed=21)[0]
    z = generate_sample("zmumu", 25000, out, seed=22)[0]
    truth = json.loads((out / "truth.json").read_text())
    return uproot.open(w)["Events"], uproot.open(z)["Events"], truth


def _peak(x: np.ndarray, lo: float, hi: float, width: float) -> float:
    """Mode of a histogram refined by a parabola through the maximum and its neighbours."""
    h, e = np.histogram(x, bins=np.arange(lo, hi + width, width))
    i = int(np.argmax(h))
    y0, y1, y2 = h[i - 1 : i + 2].astype(float)
    return 0.5 * (e[i] + e[i + 1]) + 0.5 * width * (y0 - y2) / (y0 - 2 * y1 + y2)


def test_w_jacobian_peak(samples):
    w, _, truth = samples
    mw = truth["params"]["mW"]
    a = w.arrays(["Muon_pt", "Muon_genPartFlav"])
    pt = ak.to_numpy(ak.flatten(a.Muon_pt[a.Muon_genPartFlav == 1]))
    peak = _peak(pt, 30.0, 46.0, 1.0)
    # W pT and the muon resolution pull the Jacobian peak slightly below mW/2
    assert mw / 2 - 2.5 < peak < mw / 2 + 0.5, peak


def test_w_transverse_mass_endpoint(samples):
    w, _, truth = samples
    mw, hi = truth["params"]["mW"], truth["mass_window"]["W"][1]
    g = w.arrays(["GenPart_pt", "GenPart_phi", "GenPart_pdgId", "GenPart_status"])
    st1 = g.GenPart_status == 1
    mu = g[st1 & (g.GenPart_pdgId == -13)]
    nu = g[st1 & (g.GenPart_pdgId == 14)]
    mt_gen = np.sqrt(2 * mu.GenPart_pt[:, 0] * nu.GenPart_pt[:, 0]
                     * (1 - np.cos(mu.GenPart_phi[:, 0] - nu.GenPart_phi[:, 0])))  # fmt: skip
    mt_gen = ak.to_numpy(mt_gen)
    assert mt_gen.max() <= hi + 1e-3  # mT <= m <= window edge
    assert (mt_gen > mw + 6).mean() < 0.05 < (mt_gen > mw - 6).mean()
    r = w.arrays(["Muon_pt", "Muon_phi", "MET_pt", "MET_phi", "Muon_genPartFlav"])
    sel = ak.num(r.Muon_pt[r.Muon_genPartFlav == 1]) >= 1
    r = r[sel]
    prompt = r.Muon_genPartFlav == 1
    mpt, mphi = r.Muon_pt[prompt][:, 0], r.Muon_phi[prompt][:, 0]
    mt = ak.to_numpy(np.sqrt(2 * mpt * r.MET_pt * (1 - np.cos(mphi - r.MET_phi))))
    h, e = np.histogram(mt, bins=np.arange(0, 130, 2.0))
    c = 0.5 * (e[1:] + e[:-1])
    imax = int(np.argmax(h))
    half = c[np.flatnonzero((c > c[imax]) & (h < 0.5 * h[imax]))[0]]
    assert mw - 4 < half < mw + 12, half  # smeared by the recoil resolution (~10 GeV)


def test_z_mass_peak_and_resolution(samples):
    _, z, truth = samples
    a = z.arrays(["Muon_pt", "Muon_eta", "Muon_phi", "Muon_genPartFlav", "GenPart_mass",
                  "GenPart_pdgId"])  # fmt: skip
    prompt = a.Muon_genPartFlav == 1
    two = ak.sum(prompt, axis=1) == 2
    gen = a[two]
    p = [ak.to_numpy(a[k][prompt][two]) for k in ("Muon_pt", "Muon_eta", "Muon_phi")]
    pt, eta, phi = (np.asarray(x, dtype=np.float64) for x in p)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + 0.1056584**2)
    mll = np.sqrt(e.sum(1) ** 2 - px.sum(1) ** 2 - py.sum(1) ** 2 - pz.sum(1) ** 2)
    mz = truth["params"]["mZ"]
    assert abs(_peak(mll, 80.0, 102.0, 0.5) - mz) < 0.3
    mgen = ak.firsts(gen.GenPart_mass[gen.GenPart_pdgId == 23])
    mgen = ak.to_numpy(ak.fill_none(mgen, np.nan)).astype(np.float64)
    # predicted per-event sigma(m)/m = 1/2 sqrt(s1^2 + s2^2), from the documented resolution
    res = truth["resolution"]
    a_ = res["a0"] + res["a2"] * (eta / 2.4) ** 2
    b_ = res["b0"] * (1 + res["b1"] * np.abs(eta))
    s = np.sqrt(a_**2 + (b_ * pt) ** 2)
    sigma_m = 0.5 * mgen * np.sqrt((s**2).sum(1))
    pull = (mll - mgen) / sigma_m
    q16, q50, q84 = np.percentile(pull, [16, 50, 84])
    assert abs(0.5 * (q84 - q16) - 1.0) < 0.05
    assert abs(q50) < 0.05  # simulation has no scale offset


def test_efficiencies_match_truth_tables(samples):
    w, z, truth = samples
    eff = truth["efficiency"]
    tab = {k: np.asarray(v) for k, v in eff["mc"].items()}
    eta_e, pt_e = np.asarray(eff["eta_edges"]), np.asarray(eff["pt_edges"])
    cols = [*MU_BRANCHES, "TrigObj_eta", "TrigObj_phi", "TrigObj_id", "TrigObj_filterBits"]
    a = ak.concatenate([w.arrays(cols), z.arrays(cols)])
    # trigger match: a muon TrigObj with the IsoMu bit within dR < 0.05
    to = a[["TrigObj_eta", "TrigObj_phi"]][(a.TrigObj_id == 13) & ((a.TrigObj_filterBits & 8) > 0)]
    pairs = ak.cartesian([a.Muon_eta, to.TrigObj_eta], nested=True)
    pphi = ak.cartesian([a.Muon_phi, to.TrigObj_phi], nested=True)
    dphi = (pphi["0"] - pphi["1"] + np.pi) % (2 * np.pi) - np.pi
    matched = ak.any(np.hypot(pairs["0"] - pairs["1"], dphi) < 0.05, axis=-1)
    prompt = a.Muon_genPartFlav == 1
    f = {k: ak.to_numpy(ak.flatten(v[prompt])) for k, v in {
        "pt": a.Muon_pt, "eta": a.Muon_eta, "medium": a.Muon_mediumId, "dxy": a.Muon_dxy,
        "iso": a.Muon_pfRelIso04_all, "trig": matched}.items()}  # fmt: skip
    ie = np.clip(np.searchsorted(eta_e, f["eta"], side="right") - 1, 0, eta_e.size - 2)
    ip = np.clip(np.searchsorted(pt_e, f["pt"], side="right") - 1, 0, pt_e.size - 2)
    idip = f["medium"] & (np.abs(f["dxy"]) < 0.05)
    iso = idip & (f["iso"] < 0.15)
    steps = {"idip": (np.ones_like(idip), idip), "iso": (idip, iso), "trigger": (iso, f["trig"])}
    coarse_eta = np.digitize(np.abs(f["eta"]), [0.9, 1.6])  # 3 |eta| regions
    coarse_pt = np.digitize(f["pt"], [24.0, 30.0, 40.0])  # 4 pt regions
    pulls = []
    for step, (den, num) in steps.items():
        expect = tab[step][ie, ip]
        for ce in range(3):
            for cp in range(4):
                sel = den & (coarse_eta == ce) & (coarse_pt == cp) & (f["pt"] > 15)
                n = int(sel.sum())
                if n < 200:
                    continue
                p_exp = expect[sel].mean()
                err = np.sqrt(max(p_exp * (1 - p_exp), 1e-4) / n)
                pulls.append((num[sel].mean() - p_exp) / err)
    pulls = np.asarray(pulls)
    # ~35 binomial comparisons: none beyond 5 sigma, and a chi2/ndf compatible with 1
    assert pulls.size >= 25 and np.abs(pulls).max() < 5.0, pulls.round(2)
    assert np.mean(pulls**2) < 2.0, pulls.round(2)
    for step in tab:  # data efficiencies are lower: scale factors below one
        ratio = np.asarray(eff["data"][step]) / tab[step]
        above = pt_e[:-1] >= 26.0  # the trigger turn-on is shifted in data: large SFs below
        assert np.all(ratio[:, -5:] < 1.0) and np.all(ratio <= 1.0)
        assert np.all(ratio[:, above] > 0.9)
        assert np.all(tab[step] > 0)


def test_mass_shift_moves_the_lineshape():
    base = SynthParams()
    lo, hi = base.w_window
    shifted = dataclasses.replace(base, mW=base.mW + 0.1)
    m0 = generate_hard("wplus_munu", np.random.default_rng(7), 60000, base.world(False)).sys_m
    m1 = generate_hard("wplus_munu", np.random.default_rng(7), 60000, shifted.world(False)).sys_m

    def cdf(mass, width):
        """CDF of the running-width lineshape on the window, by numerical integration."""

        def pdf(m):
            return 2 * m / ((m * m - mass**2) ** 2 + (m * m * width / mass) ** 2)

        grid = np.linspace(lo, hi, 2401)
        parts = [integrate.quad(pdf, a, b)[0] for a, b in zip(grid[:-1], grid[1:])]
        cum = np.concatenate([[0.0], np.cumsum(parts)])
        return lambda m: np.interp(m, grid, cum / cum[-1])

    g = base.GammaW
    assert stats.kstest(m1, cdf(base.mW + 0.1, g)).pvalue > 1e-3
    assert stats.kstest(m1, cdf(base.mW, g)).pvalue < 1e-6
    assert stats.kstest(m0, cdf(base.mW, g)).pvalue > 1e-3
    assert abs(np.median(m1) - np.median(m0) - 0.1) < 0.01
    assert m1.min() >= lo and m1.max() <= hi
