"""Detector model: reconstructed muons, trigger objects, MET, pileup and prefiring.

Every generator muon in the acceptance leaves a track; it is reconstructed as a Muon with the
tabulated reco probability of the world, else its track goes to the IsoTrack collection (as in
NanoAOD, which keeps there isolated tracks that are no Muon or Electron). Those draws come from
their own random stream (``rng_reco``), so every other quantity is drawn as before.
Prompt muons (genPartFlav 1 or 15) pass the efficiency steps with exactly the tabulated
probabilities of the world (idip given reco, iso given idip, trigger given iso, at reconstructed
pT/eta);
non-prompt muons get their isolation from the surrounding jet activity, so QCD populates the
non-isolated sideband physically. MET = -(reco muons + electrons + smeared hadronic recoil).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kinematics as kin
from .chunk import EventChunk
from .params import DXY_CUT, ISO_CUT, ISOTRACK_PT_MIN, World, prefire_muon_prob
from .physics import HardEvent

K_MUONS = 4  # generator muons considered per event (+1 slot for a fake)
FILTER_ISO_MU = 2 | 8  # TrigObj muon filterBits: 2 = Iso, 8 = 1mu (HLT_IsoMu24)


@dataclass
class Reco:
    chunk: EventChunk
    prefire_prob: np.ndarray


def _wrap(phi):
    return (phi + np.pi) % (2 * np.pi) - np.pi


def _trunc_exp(rng, shape, scale, upper):
    u = rng.uniform(size=shape)
    return -scale * np.log1p(-u * (1.0 - np.exp(-upper / scale)))


def reconstruct(
    hard: HardEvent, world: World, rng: np.random.Generator, rng_reco: np.random.Generator
) -> Reco:
    """Everything measured in the detector, as NanoAOD branches (no run/event numbers).

    ``rng_reco``: the stream of the reconstruction-efficiency draws and the IsoTrack content.
    """
    tbl = hard.table
    n = tbl.pt.shape[0]
    K = K_MUONS
    out = EventChunk(n)
    # ---- pileup
    ntrue = rng.choice(world.pileup.size, size=n, p=world.pileup / world.pileup.sum()).astype(
        np.float64
    )
    npvs_good = 1 + rng.poisson(0.7 * ntrue)
    # ---- generator muons -> reco
    slots, mvalid = tbl.muon_slots(K)

    def g(a):
        return np.take_along_axis(a, slots, axis=1)

    pt_g, eta_g, phi_g = g(tbl.pt), g(tbl.eta), g(tbl.phi)
    pdg, flav, dxys, cone = g(tbl.pdgId), g(tbl.flav), g(tbl.dxy_scale), g(tbl.cone)
    gidx = np.take_along_axis(tbl.compact_index(), slots, axis=1)
    shape = (n, K)
    sig = world.resolution(pt_g, eta_g)
    pt_r = pt_g * (1.0 + world.scale_offset(eta_g)) * (1.0 + sig * rng.normal(size=shape))
    eta_r = eta_g + 5e-4 * rng.normal(size=shape)
    phi_r = _wrap(phi_g + 5e-4 * rng.normal(size=shape))
    track = mvalid & (np.abs(eta_g) < 2.4) & (pt_r > 3.0) & (np.abs(eta_r) < 2.4)
    found = rng_reco.uniform(size=shape) < world.lookup_eff("reco", pt_r, eta_r)
    reco = track & found  # a reconstructed Muon; track & ~found: an IsoTrack candidate
    prompt = (flav == 1) | (flav == 15)
    # idip: prompt from the table; failures split between mediumId and dxy
    pass_idip = rng.uniform(size=shape) < world.lookup_eff("idip", pt_r, eta_r)
    fail_dxy = rng.uniform(size=shape) < 0.4
    dxy_ok = np.clip(rng.normal(0, 0.002, shape), -0.9 * DXY_CUT, 0.9 * DXY_CUT)
    dxy_bad = rng.choice([-1.0, 1.0], size=shape) * rng.uniform(DXY_CUT * 1.02, 0.25, shape)
    medium_p = pass_idip | fail_dxy
    dxy_p = np.where(pass_idip | ~fail_dxy, dxy_ok, dxy_bad)
    medium_np = rng.uniform(size=shape) < 0.93
    dxy_np = rng.laplace(0.0, np.maximum(dxys, 1e-4), shape)
    medium = np.where(prompt, medium_p, medium_np)
    dxy = np.where(prompt, dxy_p, dxy_np)
    # iso: prompt from the table, non-prompt from the jet activity in the cone
    pass_iso = rng.uniform(size=shape) < world.lookup_eff("iso", pt_r, eta_r)
    iso_p = np.where(
        pass_iso,
        _trunc_exp(rng, shape, 0.03, ISO_CUT * 0.999),
        ISO_CUT + rng.exponential(0.25, shape),
    )
    pu_iso = rng.exponential(0.4 * (ntrue[:, None] / 30.0) + 1e-3, shape)
    iso_np = (cone + pu_iso) / np.maximum(pt_r, 1e-3)
    iso04 = np.where(prompt, iso_p, iso_np)
    iso03 = iso04 * rng.uniform(0.55, 0.95, shape)
    # trigger: table given iso; the HLT isolation is looser than the offline one
    hlt_iso = np.where(iso04 < ISO_CUT, 1.0, np.exp(-(iso04 - ISO_CUT) / 0.5))
    # drawn for every track (as before the reco step), kept for the found muons only: the
    # sizes of later draws must not depend on the reco stream
    fired = track & (rng.uniform(size=shape) < world.lookup_eff("trigger", pt_r, eta_r) * hlt_iso)
    charge = np.where(pdg > 0, -1, 1)
    # charged part of the relative isolation (dR 0.3): rng_reco's next draw after ``found``
    # (it was drawn first in _isotracks, so the IsoTrack content is unchanged); Muon and
    # IsoTrack carry the same value, so a reco-step probe can require the IsoTrack selection
    # of Muons and tracks alike
    chg03 = iso03 * rng_reco.uniform(0.5, 0.9, shape)
    dz = np.where(prompt, rng.normal(0, 0.005, shape), rng.laplace(0, 0.02, shape))
    # ---- one optional soft fake muon
    fake = rng.uniform(size=n) < world.fake_muon_rate

    def cat(real, fk):
        return np.concatenate([real, np.asarray(fk).reshape(n, 1)], axis=1)

    f_pt = 3.0 + rng.exponential(3.0, n)
    f_eta = rng.uniform(-2.39, 2.39, n)
    f_iso = 0.1 + rng.exponential(0.6, n)
    cols = {
        "pt": cat(pt_r, f_pt),
        "eta": cat(eta_r, f_eta),
        "phi": cat(phi_r, rng.uniform(-np.pi, np.pi, n)),
        "charge": cat(charge, rng.choice([-1, 1], n)),
        "dxy": cat(dxy, rng.laplace(0, 0.05, n)),
        "dz": cat(dz, rng.laplace(0, 0.1, n)),
        "iso04": cat(iso04, f_iso),
        "iso03": cat(iso03, f_iso * rng.uniform(0.55, 0.95, n)),
        "chg03": cat(chg03, np.zeros(n)),
        "medium": cat(medium, rng.uniform(size=n) < 0.3),
        "global": cat(rng.uniform(size=shape) < 0.995, rng.uniform(size=n) < 0.5),
        "gidx": cat(np.where(reco, gidx, -1), np.full(n, -1)),
        "flav": cat(flav, np.zeros(n, dtype=np.int64)),
        "fired": cat(fired, np.zeros(n, bool)),
        "sig": cat(sig, world.resolution(f_pt, f_eta)),
        "real": cat(reco, np.zeros(n, bool)),
        "found": cat(found, np.ones(n, bool)),
    }
    # the fake's charged isolation: 0.7 of its iso03 (no draw: the main stream stays as it was)
    cols["chg03"][:, -1] = 0.7 * cols["iso03"][:, -1]
    valid_track = cat(track, fake)  # the slot order of the generator before the reco step
    order = np.argsort(-np.where(valid_track, cols["pt"], -1.0), axis=1, kind="stable")
    cols = {k: np.take_along_axis(v, order, axis=1) for k, v in cols.items()}
    valid_track = np.take_along_axis(valid_track, order, axis=1)
    valid = valid_track & cols["found"]
    counts = valid.sum(axis=1)

    def flat(a, dtype):
        return a[valid].astype(dtype)

    f32, i32, u8 = np.float32, np.int32, np.uint8
    pt_flat = flat(cols["pt"], np.float64)
    medium_f = flat(cols["medium"], bool)
    glob = flat(cols["global"], bool)
    dz_f = flat(cols["dz"], f32)
    out.add_collection(
        "Muon",
        counts,
        {
            "pt": pt_flat.astype(f32),
            "eta": flat(cols["eta"], f32),
            "phi": flat(cols["phi"], f32),
            "mass": np.full(pt_flat.size, kin.MU_MASS, f32),
            "charge": flat(cols["charge"], i32),
            "pdgId": (-13 * flat(cols["charge"], i32)).astype(i32),
            "dxy": flat(cols["dxy"], f32),
            "dxyErr": np.full(pt_flat.size, 0.002, f32),
            "dz": dz_f,
            "dzErr": np.full(pt_flat.size, 0.004, f32),
            "ptErr": (flat(cols["sig"], np.float64) * pt_flat).astype(f32),
            "pfRelIso04_all": flat(cols["iso04"], f32),
            "pfRelIso03_all": flat(cols["iso03"], f32),
            "pfRelIso03_chg": flat(cols["chg03"], f32),
            "looseId": np.ones(pt_flat.size, bool),
            "mediumId": medium_f,
            "tightId": medium_f & glob & (np.abs(dz_f) < 0.5),
            "isGlobal": glob,
            "isTracker": np.ones(pt_flat.size, bool),
            "isPFcand": np.ones(pt_flat.size, bool),
            "tightCharge": np.full(pt_flat.size, 2, i32),
            "nStations": np.where(glob, 3, 1).astype(i32),
            "nTrackerLayers": np.full(pt_flat.size, 13, i32),
            "genPartIdx": flat(cols["gidx"], i32),
            "genPartFlav": flat(cols["flav"], u8),
        },
    )
    if world.is_data:  # real data carry no generator matching
        for k in ("genPartIdx", "genPartFlav"):
            del out.collections["Muon"][1][k]
    # ---- trigger objects for muons that fired HLT_IsoMu24
    fired_s = cols["fired"] & valid_track  # drawn for all, kept where the muon was found
    keep = cols["found"][fired_s]
    tcounts = (fired_s & cols["found"]).sum(axis=1)
    tpt = cols["pt"][fired_s]
    nt = tpt.size
    trig = {
        "pt": (tpt * (1 + 0.005 * rng.normal(size=nt))).astype(f32),
        "eta": (cols["eta"][fired_s] + 0.002 * rng.normal(size=nt)).astype(f32),
        "phi": _wrap(cols["phi"][fired_s] + 0.002 * rng.normal(size=nt)).astype(f32),
        "l1pt": np.round(2 * tpt * (1 + 0.1 * rng.normal(size=nt))).astype(f32) / 2,
        "l1pt_2": np.zeros(nt, f32),
        "l2pt": (tpt * (1 + 0.05 * rng.normal(size=nt))).astype(f32),
        "id": np.full(nt, 13, i32),
        "l1iso": np.ones(nt, i32),
        "l1charge": cols["charge"][fired_s].astype(i32),
        "filterBits": np.full(nt, 1 | FILTER_ISO_MU, i32),
    }
    out.add_collection("TrigObj", tcounts, {k: v[keep] for k, v in trig.items()})
    out.scalars["HLT_IsoMu24"] = tcounts > 0
    _isotracks(out, track & ~found, pt_r, eta_r, phi_r, charge, dxy, dz, iso03, chg03, rng_reco)
    # ---- MET from neutrinos, muons and the smeared hadronic recoil
    nux, nuy = tbl.final_state_sum((12, 14, 16))
    ex, ey = tbl.final_state_sum((11,))
    mux, muy = tbl.final_state_sum((13,))
    ux, uy = -(nux + ex + mux), -(nuy + ey + muy)
    real = cols["real"] & valid
    rmx = (cols["pt"] * np.cos(cols["phi"]) * real).sum(axis=1)
    rmy = (cols["pt"] * np.sin(cols["phi"]) * real).sum(axis=1)
    for name, pu_factor, resp in (("MET", 1.0, 0.0), ("PuppiMET", world.puppi_pu_factor, 0.02)):
        s = world.recoil_sigma0 + world.recoil_sigma_pu * pu_factor * ntrue
        r = world.recoil_response + resp
        urx, ury = r * ux + s * rng.normal(size=n), r * uy + s * rng.normal(size=n)
        mx, my = -(rmx + ex + urx), -(rmy + ey + ury)
        out.scalars[f"{name}_pt"] = np.hypot(mx, my).astype(f32)
        out.scalars[f"{name}_phi"] = np.arctan2(my, mx).astype(f32)
        out.scalars[f"{name}_sumEt"] = (200.0 + 12.0 * ntrue + np.hypot(ux, uy)).astype(f32)
    out.scalars["PV_npvs"] = (npvs_good + rng.poisson(1.0, n)).astype(i32)
    out.scalars["PV_npvsGood"] = npvs_good.astype(i32)
    out.scalars["PV_z"] = rng.normal(0, 3.5, n).astype(f32)
    if not world.is_data:
        out.scalars["GenMET_pt"] = np.hypot(nux, nuy).astype(f32)
        out.scalars["GenMET_phi"] = np.arctan2(nuy, nux).astype(f32)
        out.scalars["Pileup_nTrueInt"] = ntrue.astype(f32)
        out.scalars["Pileup_nPU"] = rng.poisson(ntrue).astype(i32)
    # ---- L1 prefiring
    p_mu = prefire_muon_prob(cols["eta"], world.prefire_muon_max) * valid
    prob = 1.0 - (1.0 - world.prefire_event_prob) * np.prod(1.0 - p_mu, axis=1)
    return Reco(out, prob)


def _isotracks(out, lost, pt, eta, phi, charge, dxy, dz, iso03, chg, rng) -> None:
    """IsoTrack: the tracks of generator muons that are no reconstructed Muon.

    NanoAOD's selection for a charged-hadron candidate (the PF candidate of a muon that is not
    reconstructed as one): pT > 10 GeV, |dxy| < 0.2 and |dz| < 0.1 cm (or pT > 15 GeV), charged
    isolation (dR 0.3) below 5 GeV (pT < 25 GeV) or below 0.2 relative. Names and types as in
    NanoAODv6 (no charge branch: pdgId = 211 x charge carries it). ``chg``: the charged part
    of the relative isolation (dR 0.3), as the Muon's pfRelIso03_chg.
    """
    keep = lost & isotrack_selection(pt, dxy, dz, chg)
    order = np.argsort(-np.where(keep, pt, -1.0), axis=1, kind="stable")

    def srt(a):
        return np.take_along_axis(a, order, axis=1)

    keep_s = srt(keep)
    m = int(keep.sum())
    f32 = np.float32
    mini = rng.uniform(0.8, 1.2, m)
    iso_all, iso_chg = srt(iso03)[keep_s], srt(chg)[keep_s]
    out.add_collection(
        "IsoTrack",
        keep.sum(axis=1),
        {
            "dxy": srt(dxy)[keep_s].astype(f32),
            "dz": srt(dz)[keep_s].astype(f32),
            "eta": srt(eta)[keep_s].astype(f32),
            "pfRelIso03_all": iso_all.astype(f32),
            "pfRelIso03_chg": iso_chg.astype(f32),
            "phi": srt(phi)[keep_s].astype(f32),
            "pt": srt(pt)[keep_s].astype(f32),
            "miniPFRelIso_all": (iso_all * mini).astype(f32),
            "miniPFRelIso_chg": (iso_chg * mini).astype(f32),
            "fromPV": np.full(m, 3, np.int32),
            "pdgId": (211 * srt(charge)[keep_s]).astype(np.int32),
            "isHighPurityTrack": np.ones(m, bool),
            "isPFcand": np.ones(m, bool),
            "isFromLostTrack": np.zeros(m, bool),
        },
    )


def isotrack_selection(pt, dxy, dz, chg):
    """NanoAOD's IsoTrack selection of a charged track (pT, |dxy|, |dz| in cm, relative charged
    isolation dR 0.3): the generator's tracks and the tnp processor's reco-step Muon probes."""
    keep = pt > ISOTRACK_PT_MIN
    keep = keep & (((np.abs(dxy) < 0.2) & (np.abs(dz) < 0.1)) | (pt > 15.0))
    return keep & (((chg * pt < 5.0) & (pt < 25.0)) | (chg < 0.2))


def prefiring_weights(prob: np.ndarray, syst: float) -> dict[str, np.ndarray]:
    """L1PreFiringWeight_Nom/Up/Dn = 1 - P, 1 - (1 - syst) P, 1 - (1 + syst) P."""
    return {
        "L1PreFiringWeight_Nom": (1.0 - prob).astype(np.float32),
        "L1PreFiringWeight_Up": (1.0 - (1.0 - syst) * prob).astype(np.float32),
        "L1PreFiringWeight_Dn": np.clip(1.0 - (1.0 + syst) * prob, 0, 1).astype(np.float32),
    }
