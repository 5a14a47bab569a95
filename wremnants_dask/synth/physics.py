"""Hard-process generators: one function per process, each filling a ParticleTable.

Simplified but physical: Breit-Wigner bosons with a peaked pT spectrum and broad rapidity,
V-A decay angles (W+: (1 - cos)^2, W-: (1 + cos)^2 relative to the quark direction, which
follows the boson boost at large |y|) in the boson rest frame with axes parallel to the lab
(a Collins-Soper-like frame), tau decays with the Michel spectrum, t -> W b, WW/WZ/ZZ, and
heavy-flavour QCD with semileptonic b/c decays for non-prompt muons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import gentable as gt
from . import kinematics as kin
from .params import World
from .processes import BR_TAU_E, BR_TAU_MU, DIBOSON_FRACTIONS

# Decay modes of a vector boson.
MU, E, TAU, HAD, NU = 0, 1, 2, 3, 4
_LEP_PDG = {MU: 13, E: 11, TAU: 15}
_LEP_MASS = {MU: kin.MU_MASS, E: kin.E_MASS, TAU: kin.TAU_MASS}
_W_MODES = np.array([MU, E, TAU, HAD])
_W_BR = np.array([0.1086, 0.1071, 0.1138, 0.6705])
_Z_MODES = np.array([MU, E, TAU, HAD, NU])
_Z_BR = np.array([0.03366, 0.03363, 0.03370, 0.6991, 0.2000])
# Tau decay modes: leptonic mu / e, hadronic (pi nu).
T_MU, T_E, T_HAD = 0, 1, 2
_TAU_BR = np.array([BR_TAU_MU, BR_TAU_E, 1.0 - BR_TAU_MU - BR_TAU_E])


@dataclass
class HardEvent:
    """Generator particles plus the hard-system kinematics used for theory weights."""

    table: gt.GenTable
    sys_m: np.ndarray
    sys_pt: np.ndarray
    sys_y: np.ndarray
    charge: np.ndarray  # boson charge (W), 0 otherwise
    id1: np.ndarray
    id2: np.ndarray
    is_vboson: bool


def _uniform_phi(rng, n):
    return rng.uniform(-np.pi, np.pi, n)


def _incoming(tab: gt.ParticleTable, m, y, id_plus, id_minus) -> tuple[int, int]:
    """Incoming partons along +z / -z with x1,2 = m/sqrt(s) exp(+-y)."""
    x1, x2 = m / kin.SQRT_S * np.exp(y), m / kin.SQRT_S * np.exp(-y)
    e1, e2 = 0.5 * kin.SQRT_S * x1, 0.5 * kin.SQRT_S * x2
    z = np.zeros_like(m)
    s1 = tab.add((z, z, e1, e1), 0.0, id_plus, 21, gt.INCOMING, -1)
    s2 = tab.add((z, z, -e2, e2), 0.0, id_minus, 21, gt.INCOMING, -1)
    return s1, s2


def _choose(rng, n, modes, br) -> np.ndarray:
    return modes[rng.choice(len(modes), size=n, p=br / br.sum())]


def decay_tau(tab, rng, tau: kin.Vec, slot, charge, mode, valid) -> None:
    """tau -> mu nu nu / e nu nu (Michel spectrum, isotropic) or pi nu; 3 slots."""
    n = tab.n
    lep = np.where(mode == T_E, 1, 0)
    mlep = np.where(mode == T_E, kin.E_MASS, kin.MU_MASS)
    x = kin.michel_x(rng, n)
    e = np.maximum(0.5 * x * kin.TAU_MASS, mlep + 1e-6)
    p = np.sqrt(e * e - mlep * mlep)
    c, ph = kin.isotropic(rng, n)
    s = np.sqrt(1 - c * c)
    lrest = (p * s * np.cos(ph), p * s * np.sin(ph), p * c, e)
    nunu = (-lrest[0], -lrest[1], -lrest[2], kin.TAU_MASS - e)
    m_nn = np.sqrt(np.maximum(nunu[3] ** 2 - p * p, 1e-12))
    c2, ph2 = kin.isotropic(rng, n)
    nu_a, nu_b = kin.two_body(nunu, m_nn, 0.0, 0.0, c2, ph2)
    # hadronic: tau -> pi nu
    ch, phh = kin.isotropic(rng, n)
    tau_rest = (np.zeros(n), np.zeros(n), np.zeros(n), np.full(n, kin.TAU_MASS))
    pi, nu_h = kin.two_body(tau_rest, tau_rest[3], kin.PI_MASS, 0.0, ch, phh)
    had = mode == T_HAD
    vis = tuple(np.where(had, a, b) for a, b in zip(pi, lrest))
    vis = kin.boost(vis, tau)
    nu1 = kin.boost(tuple(np.where(had, a, b) for a, b in zip(nu_h, nu_a)), tau)
    nu2 = kin.boost(nu_b, tau)
    q = np.asarray(charge)  # tau charge: -1 for tau-
    vis_pdg = np.where(had, 211 * q, np.where(lep == 1, 11, 13) * -q)
    vis_mass = np.where(had, kin.PI_MASS, mlep)
    nul_pdg = np.where(lep == 1, 12, 14) * q  # anti-nu_l for tau-
    nut_pdg = -16 * q
    flav = np.where(had | (lep == 1), 0, 15)
    tab.add(vis, vis_mass, vis_pdg, 1, gt.TAU_PRODUCT, slot, valid, flav=flav)
    tab.add(nu1, 0.0, np.where(had, nut_pdg, nul_pdg), 1, gt.TAU_PRODUCT, slot, valid)
    tab.add(nu2, 0.0, nut_pdg, 1, gt.TAU_PRODUCT, slot, valid & ~had)


def decay_v(tab, rng, v: kin.Vec, m, slot, charge, mode, valid, cos_t=None) -> None:
    """Decay a W (charge +-1) or Z (0) in ``mode``; tau daughters decayed; 8 slots."""
    n = tab.n
    charge = np.broadcast_to(charge, (n,))
    if cos_t is None:
        cos_t, _ = kin.isotropic(rng, n)
    phi = _uniform_phi(rng, n)
    is_lep = mode <= TAU
    mlep = np.select(
        [mode == MU, mode == E, mode == TAU], [kin.MU_MASS, kin.E_MASS, kin.TAU_MASS], 0
    )
    lpdg = np.select([mode == MU, mode == E, mode == TAU], [13, 11, 15], 0)
    is_z = charge == 0
    # daughter 1: the (negative for Z/W-) charged lepton; daughter 2: partner.
    m1 = mlep
    m2 = np.where(is_z, mlep, 0.0)
    d1, d2 = kin.two_body(v, m, m1, m2, cos_t, phi)
    w_sign = np.where(charge > 0, -1, 1)  # W+ -> l+ (negative pdg)
    pdg1 = np.where(is_z, lpdg, w_sign * lpdg)
    pdg2 = np.where(is_z, -lpdg, -w_sign * (lpdg + 1))
    pdg1 = np.where(mode == HAD, np.where(charge > 0, 2, 1), pdg1)
    pdg2 = np.where(mode == HAD, np.where(charge > 0, -1, -2), pdg2)
    pdg1 = np.where(mode == NU, 14, pdg1)
    pdg2 = np.where(mode == NU, -14, pdg2)
    status1 = np.where(is_lep, np.where(mode == TAU, 2, 1), np.where(mode == NU, 1, 23))
    status2 = np.where(is_z & (mode == TAU), 2, np.where(mode == HAD, 23, 1))
    flags1 = np.where(mode == TAU, gt.HARD | gt.IS_DECAYED_LEPTON_HADRON, gt.HARD)
    flags2 = np.where(is_z & (mode == TAU), gt.HARD | gt.IS_DECAYED_LEPTON_HADRON, gt.HARD)
    s1 = tab.add(d1, m1, pdg1, status1, flags1, slot, valid, flav=np.where(mode == MU, 1, 0))
    s2 = tab.add(d2, m2, pdg2, status2, flags2, slot, valid, flav=np.where(mode == MU, 1, 0))
    tau1 = valid & (mode == TAU)
    tmode = _choose(rng, n, np.array([T_MU, T_E, T_HAD]), _TAU_BR)
    decay_tau(tab, rng, d1, s1, np.sign(pdg1) * -1, tmode, tau1)
    tmode2 = _choose(rng, n, np.array([T_MU, T_E, T_HAD]), _TAU_BR)
    decay_tau(tab, rng, d2, s2, np.ones(n, dtype=np.int64), tmode2, tau1 & is_z)


def _modes_with_muon(rng, n, species: list[np.ndarray]) -> list[np.ndarray]:
    """Decay modes per boson (species: True for W, False for Z), requiring >= 1 direct muon."""
    out = [np.empty(n, dtype=np.int64) for _ in species]
    todo = np.arange(n)
    while todo.size:
        draws = [
            np.where(sp[todo], _choose(rng, todo.size, _W_MODES, _W_BR),
                     _choose(rng, todo.size, _Z_MODES, _Z_BR))
            for sp in species
        ]  # fmt: skip
        ok = np.zeros(todo.size, dtype=bool)
        for d in draws:
            ok |= d == MU
        for o, d in zip(out, draws):
            o[todo[ok]] = d[ok]
        todo = todo[~ok]
    return out


def gen_drell_yan(rng, n: int, world: World, kind: str) -> HardEvent:
    """wplus_munu, wminus_munu, zmumu, ztautau (boson pT tilted by ``world.boson_pt_tilt``)."""
    tab = gt.ParticleTable(n)
    if kind in ("wplus_munu", "wminus_munu"):
        q = 1 if kind == "wplus_munu" else -1
        m = kin.sample_bw(rng, n, world.mW, world.GammaW, world.w_window)
        pt = kin.sample_boson_pt(rng, n, 5.5, 2.4, 300.0, world.boson_pt_tilt)
        y = kin.sample_truncnorm(rng, n, 2.2 if q > 0 else 2.0, 4.2)
        frac_plus = 0.0 if q > 0 else 1.0  # charged lepton: W+ (1-cos)^2, W- (1+cos)^2
        pdg_v = 24 * q
        up, down = (2, -1) if q > 0 else (1, -2)
    else:
        q = 0
        m = kin.sample_bw(rng, n, world.mZ, world.GammaZ, world.z_window)
        pt = kin.sample_boson_pt(rng, n, 6.0, 2.4, 300.0, world.boson_pt_tilt)
        y = kin.sample_truncnorm(rng, n, 2.0, 4.2)
        frac_plus = 0.5 + 0.06 / 4  # 1 + cos^2 + A4 cos, A4 = 0.06 for the negative lepton
        pdg_v = 23
        flav_u = rng.uniform(size=n) < 0.6
        up, down = np.where(flav_u, 2, 1), np.where(flav_u, -2, -1)
    phi = _uniform_phi(rng, n)
    v = kin.from_ptyphim(pt, y, phi, m)
    qdir = kin.quark_direction(rng, y)
    id_plus, id_minus = np.where(qdir > 0, up, down), np.where(qdir > 0, down, up)
    s1, _ = _incoming(tab, m, y, id_plus, id_minus)
    sv = tab.add(v, m, pdg_v, 62, gt.HARD, s1)
    cos_t = kin.sample_quark_frame_cos(rng, n, frac_plus) * qdir
    if kind == "ztautau":
        mode = np.full(n, TAU)
        pairs = np.array([[T_MU, T_MU], [T_MU, T_E], [T_MU, T_HAD], [T_E, T_MU], [T_HAD, T_MU]])
        br = np.array([_TAU_BR[a] * _TAU_BR[b] for a, b in pairs])
        pick = pairs[rng.choice(len(pairs), size=n, p=br / br.sum())]
        phi_d = _uniform_phi(rng, n)
        d1, d2 = kin.two_body(v, m, kin.TAU_MASS, kin.TAU_MASS, cos_t, phi_d)
        fl = gt.HARD | gt.IS_DECAYED_LEPTON_HADRON
        t1 = tab.add(d1, kin.TAU_MASS, 15, 2, fl, sv)
        t2 = tab.add(d2, kin.TAU_MASS, -15, 2, fl, sv)
        decay_tau(tab, rng, d1, t1, -1, pick[:, 0], True)
        decay_tau(tab, rng, d2, t2, 1, pick[:, 1], True)
    else:
        mode = np.full(n, MU)
        decay_v(tab, rng, v, m, sv, q, mode, True, cos_t=cos_t)
    return HardEvent(tab.finish(), m, pt, y, np.full(n, q), id_plus, id_minus, True)


def _pair_system(rng, n, m_threshold, m_scale, pt_b, y_sigma):
    m = m_threshold + rng.exponential(m_scale, n)
    pt = kin.sample_boson_pt(rng, n, pt_b, 2.2, 500.0)
    y = kin.sample_truncnorm(rng, n, y_sigma, 3.0)
    return m, pt, y, kin.from_ptyphim(pt, y, _uniform_phi(rng, n), m)


def gen_ttbar(rng, n: int, world: World) -> HardEvent:
    tab = gt.ParticleTable(n)
    m, pt, y, sys = _pair_system(rng, n, 2 * kin.TOP_MASS + 5.0, 120.0, 25.0, 1.1)
    gg = rng.uniform(size=n) < 0.85
    idp, idm = np.where(gg, 21, 2), np.where(gg, 21, -2)
    s1, _ = _incoming(tab, m, y, idp, idm)
    c, ph = kin.isotropic(rng, n)
    mt = np.full(n, kin.TOP_MASS)
    t, tb = kin.two_body(sys, m, mt, mt, c, ph)
    st = tab.add(t, kin.TOP_MASS, 6, 62, gt.HARD, s1)
    stb = tab.add(tb, kin.TOP_MASS, -6, 62, gt.HARD, s1)
    modes = _modes_with_muon(rng, n, [np.ones(n, bool), np.ones(n, bool)])
    for top, slot, q, mode in ((t, st, 1, modes[0]), (tb, stb, -1, modes[1])):
        mw = kin.sample_bw(rng, n, world.mW, world.GammaW, world.w_window)
        c, ph = kin.isotropic(rng, n)
        w, b = kin.two_body(top, mt, mw, kin.B_MASS, c, ph)
        sw = tab.add(w, mw, 24 * q, 62, gt.HARD, slot)
        tab.add(b, kin.B_MASS, 5 * q, 23, gt.HARD, slot)
        decay_v(tab, rng, w, mw, sw, q, mode, True)
    return HardEvent(tab.finish(), m, pt, y, np.zeros(n), idp, idm, False)


def gen_diboson(rng, n: int, world: World) -> HardEvent:
    tab = gt.ParticleTable(n)
    names = list(DIBOSON_FRACTIONS)
    frac = np.array([DIBOSON_FRACTIONS[k] for k in names])
    sub = rng.choice(len(names), size=n, p=frac / frac.sum())
    is_ww, is_wz = sub == names.index("WW"), sub == names.index("WZ")
    wz_q = np.where(rng.uniform(size=n) < 0.6, 1, -1)
    q1 = np.where(is_ww, 1, np.where(is_wz, wz_q, 0))
    q2 = np.where(is_ww, -1, 0)
    masses = []
    for q in (q1, q2):
        mw = kin.sample_bw(rng, n, world.mW, world.GammaW, world.w_window)
        mz = kin.sample_bw(rng, n, world.mZ, world.GammaZ, world.z_window)
        masses.append(np.where(q == 0, mz, mw))
    m, pt, y, sys = _pair_system(rng, n, 0.0, 80.0, 15.0, 1.5)
    m = m + masses[0] + masses[1]
    sys = kin.from_ptyphim(pt, y, _uniform_phi(rng, n), m)
    qq = rng.uniform(size=n) < 0.5
    idp, idm = np.where(qq, 2, -1), np.where(qq, -1, 2)
    s1, _ = _incoming(tab, m, y, idp, idm)
    c, ph = kin.isotropic(rng, n)
    v1, v2 = kin.two_body(sys, m, masses[0], masses[1], c, ph)
    modes = _modes_with_muon(rng, n, [q1 != 0, q2 != 0])
    for v, mv, q, mode in ((v1, masses[0], q1, modes[0]), (v2, masses[1], q2, modes[1])):
        sv = tab.add(v, mv, np.where(q == 0, 23, 24 * q), 62, gt.HARD, s1)
        decay_v(tab, rng, v, mv, sv, q, mode, True)
    return HardEvent(tab.finish(), m, pt, y, np.zeros(n), idp, idm, False)


def _qcd_candidates(rng, n):
    """Heavy-flavour dijets with a semileptonic decay in jet 1 (before the muon filter)."""
    ptq = 15.0 * rng.uniform(size=n) ** (-1.0 / 3.5)
    is_b = rng.uniform(size=n) < 0.75
    zh = np.where(is_b, rng.beta(6.0, 1.5, n), rng.beta(4.0, 2.0, n))
    zmu = rng.beta(1.6, 3.0, n)
    eta1 = kin.sample_truncnorm(rng, n, 1.8, 4.5)
    sig = np.minimum(0.3, 3.0 / np.maximum(zh * ptq, 1.0))
    eta_mu = eta1 + rng.normal(0, 1, n) * sig
    pt_mu = zmu * zh * ptq * np.cosh(eta1) / np.cosh(eta_mu)
    ok = (pt_mu > 15.0) & (np.abs(eta_mu) < 2.5)
    return ok, dict(ptq=ptq, is_b=is_b, zh=zh, zmu=zmu, eta1=eta1, sig=sig, eta_mu=eta_mu)


def gen_qcd(rng, n: int, world: World) -> HardEvent:
    """bb/cc dijets; muon filter: semileptonic jet-1 decay with a muon pT > 15, |eta| < 2.5."""
    keep: dict[str, list[np.ndarray]] = {}
    have = 0
    while have < n:
        ok, c = _qcd_candidates(rng, max(8 * (n - have), 1000))
        for k, v in c.items():
            keep.setdefault(k, []).append(v[ok])
        have += int(ok.sum())
    c = {k: np.concatenate(v)[:n] for k, v in keep.items()}
    tab = gt.ParticleTable(n)
    ptq, zh, zmu, sig = c["ptq"], c["zh"], c["zmu"], c["sig"]
    qpdg = np.where(c["is_b"], 5, 4)
    hpdg = np.where(c["is_b"], 521, 411)
    flav = np.where(c["is_b"], 5, 4)
    dxy = np.where(c["is_b"], 0.03, 0.015)
    phi1 = _uniform_phi(rng, n)
    eta2 = kin.sample_truncnorm(rng, n, 1.8, 4.5)
    phi2 = phi1 + np.pi + rng.normal(0, 0.2, n)
    pt2 = ptq * np.clip(1 + rng.normal(0, 0.1, n), 0.5, 1.5)
    mq = np.where(c["is_b"], kin.B_MASS, 1.5)
    q1 = kin.from_ptetaphim(ptq, c["eta1"], phi1, mq)
    q2 = kin.from_ptetaphim(pt2, eta2, phi2, mq)
    sys = kin.add(q1, q2)
    spt, _, _, sm = kin.to_ptetaphim(sys)
    sy = 0.5 * np.log((sys[3] + sys[2]) / np.maximum(sys[3] - sys[2], 1e-9))
    s1, _ = _incoming(tab, sm, sy, 21, 21)
    # The muon-filtered jet is the quark or the antiquark with equal odds: the non-prompt
    # muons of QCD are charge symmetric.
    q_sign = np.where(rng.uniform(size=n) < 0.5, 1, -1)
    sq1 = tab.add(q1, mq, q_sign * qpdg, 23, gt.HARD, s1)
    sq2 = tab.add(q2, mq, -q_sign * qpdg, 23, gt.HARD, s1)
    znu_frac = rng.uniform(0.2, 0.6, n)
    for jet, (sq, pt_j, eta_j, phi_j, sign, semilep) in enumerate(
        (
            (sq1, ptq, c["eta1"], phi1, q_sign, np.ones(n, bool)),
            (sq2, pt2, eta2, phi2, -q_sign, rng.uniform(size=n) < 0.2),
        )
    ):
        zmu_j = zmu if jet == 0 else rng.beta(1.6, 3.0, n)
        ph = kin.from_ptetaphim(zh * pt_j, eta_j, phi_j, np.where(c["is_b"], 5.28, 1.87))
        sh = tab.add(ph, np.where(c["is_b"], 5.28, 1.87), sign * hpdg, 2,
                     gt.IS_DECAYED_LEPTON_HADRON | gt.IS_FIRST_COPY | gt.IS_LAST_COPY, sq)  # fmt: skip
        eta_mu = c["eta_mu"] if jet == 0 else eta_j + rng.normal(0, 1, n) * sig
        phi_mu = phi_j + rng.normal(0, 1, n) * sig
        pt_mu = zmu_j * zh * pt_j * np.cosh(eta_j) / np.cosh(eta_mu)
        znu = (1 - zmu_j) * znu_frac
        mu = kin.from_ptetaphim(pt_mu, eta_mu, phi_mu, kin.MU_MASS)
        nu = kin.from_ptetaphim(znu * zh * pt_j, eta_j, phi_j, 0.0)
        f_dec, f_frag = rng.beta(1.5, 3.0, n), rng.beta(1.0, 4.0, n)
        cone = pt_j * (zh * (1 - zmu_j - znu) * f_dec + (1 - zh) * f_frag)
        tab.add(mu, kin.MU_MASS, -13 * sign, 1, gt.HADRON_PRODUCT, sh, semilep, flav=flav,
                dxy=dxy, cone=cone)  # fmt: skip
        tab.add(nu, 0.0, 14 * sign, 1, gt.HADRON_PRODUCT, sh, semilep)
    return HardEvent(tab.finish(), sm, spt, sy, np.zeros(n), np.full(n, 21), np.full(n, 21), False)


def generate_hard(process: str, rng: np.random.Generator, n: int, world: World) -> HardEvent:
    """Dispatch to the process generator (names as in PROCESSES)."""
    if process in ("wplus_munu", "wminus_munu", "zmumu", "ztautau"):
        return gen_drell_yan(rng, n, world, process)
    if process == "ttbar":
        return gen_ttbar(rng, n, world)
    if process == "diboson":
        return gen_diboson(rng, n, world)
    if process == "qcd":
        return gen_qcd(rng, n, world)
    raise KeyError(f"unknown process {process!r}")
