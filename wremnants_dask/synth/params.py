"""Physics and detector parameters of the generator, for simulation and for pseudo-data.

``SynthParams`` is flat (every field a number or a tuple) so dataset configs can override any
field by name (``dataclasses.replace(SynthParams(), mW=80.4)``). Fields prefixed ``data_``
describe the pseudo-data "world"; the others the simulation. ``world(is_data)`` resolves one
world into tables (efficiencies, scale offsets, pileup profile) that the detector model uses and
that ``truth()`` writes to truth.json, so the tables in truth.json are exactly what was applied.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

ETA_EDGES = np.round(np.linspace(-2.4, 2.4, 49), 6)
PT_EDGES = np.array([*range(15, 61), 65, 70, 80], dtype=np.float64)
PILEUP_EDGES = np.arange(0.0, 101.0)
STEPS = ("reco", "idip", "iso", "trigger")
EFF_FLOOR = 1e-3  # tables never reach 0 (far below the trigger threshold), so SFs exist

#: Selection definitions the efficiency steps stand for (documented in docs/DESIGN.md).
DXY_CUT = 0.05  # cm: idip = Muon_mediumId & |Muon_dxy| < DXY_CUT
ISO_CUT = 0.15  # iso = Muon_pfRelIso04_all < ISO_CUT
#: reco: a generator muon with a track is a reconstructed Muon; the track of one that is not
#: is written to IsoTrack (NanoAOD keeps there isolated tracks that are no Muon/Electron) when
#: it passes NanoAOD's IsoTrack selection for a charged-hadron candidate (pT above this).
ISOTRACK_PT_MIN = 10.0


def _default_scale_offsets() -> tuple[float, ...]:
    """Data momentum-scale offsets per eta bin: a smooth pattern of 1e-4 .. 1e-3."""
    c = 0.5 * (ETA_EDGES[1:] + ETA_EDGES[:-1])
    off = 3e-4 + 4e-4 * np.sin(2.6 * c) + 3e-4 * (c / 2.4) ** 2
    return tuple(float(x) for x in np.round(off, 7))


@dataclass(frozen=True)
class SynthParams:
    """All tunable parameters. Masses/widths in GeV; efficiencies as relative modifications."""

    # Boson line shapes (simulation), running-width relativistic Breit-Wigner in s = m^2.
    mW: float = 80.379
    GammaW: float = 2.085
    mZ: float = 91.1876
    GammaZ: float = 2.4952
    # Generated mass windows (fixed, so a sample at another mass is a pure BW reweighting).
    w_window: tuple[float, float] = (50.0, 110.0)
    z_window: tuple[float, float] = (50.0, 130.0)
    # Pseudo-data truth masses (data_mW: the CMS 2024 value, so a fit has something to find).
    # Widths None: the simulation's width scaled to the data mass as Gamma (M_data/M)^3, which
    # is what the mass templates assume (processors.theory.running_width).
    data_mW: float = 80.3602
    data_GammaW: float | None = None
    data_mZ: float = 91.1876
    data_GammaZ: float | None = None
    # Data/simulation efficiency differences: eff_data = eff_mc * (1 - a - b * |eta|/2.4).
    data_reco_loss: tuple[float, float] = (0.003, 0.008)
    data_idip_loss: tuple[float, float] = (0.005, 0.012)
    data_iso_loss: tuple[float, float] = (0.004, 0.006)
    data_trigger_loss: tuple[float, float] = (0.012, 0.030)
    data_trigger_turnon_shift: float = 0.3  # GeV
    # Momentum scale: relative offsets per eta bin (48 bins, -2.4..2.4); simulation unbiased.
    mc_scale_offsets: tuple[float, ...] = field(default_factory=lambda: (0.0,) * 48)
    data_scale_offsets: tuple[float, ...] = field(default_factory=_default_scale_offsets)
    # Resolution sigma(pT)/pT = sqrt(a(eta)^2 + (b(eta) pT)^2), a = a0 + a2 (eta/2.4)^2,
    # b = b0 (1 + b1 |eta|); data resolution multiplied by data_resolution_scale.
    res_a0: float = 0.009
    res_a2: float = 0.012
    res_b0: float = 1.5e-4
    res_b1: float = 1.0
    data_resolution_scale: float = 1.03
    # Pileup nTrueInt profiles: gamma(mean, sd) (+ flat fraction in simulation, as in MC mixing).
    mc_pileup_mean: float = 32.0
    mc_pileup_sd: float = 14.0
    mc_pileup_flat: float = 0.1
    data_pileup_mean: float = 34.0
    data_pileup_sd: float = 11.0
    # Hadronic recoil: u_reco = response * u_true + Gaussian noise per component with
    # sigma = sigma0 + sigma_pu * nTrueInt (GeV); PuppiMET uses sigma_pu * puppi_pu_factor.
    recoil_response: float = 0.95
    recoil_sigma0: float = 6.0
    recoil_sigma_pu: float = 0.15
    puppi_pu_factor: float = 0.3
    data_recoil_response: float = 0.94
    data_recoil_sigma_scale: float = 1.05
    # Boson pT (qT) of W and Z: density times 1 + tilt * tanh((qT - 10 GeV) / 10 GeV),
    # normalised (kinematics.boson_pt_tilt); the same function for W and Z, as a transfer of
    # the Z measurement to W assumes. Default 0 in both worlds (no data/simulation difference).
    boson_pt_tilt: float = 0.0
    data_boson_pt_tilt: float = 0.0
    # L1 prefiring: per-event probability + per-muon probability rising above |eta| 1.24.
    prefire_event_prob: float = 0.004
    prefire_muon_max: float = 0.012
    prefire_syst: float = 0.2
    # Extra soft fake muons per event (probability), and negative-weight fraction override.
    fake_muon_rate: float = 0.03
    neg_weight_fraction: float | None = None

    def world(self, is_data: bool) -> World:
        """The resolved parameters and tables of the simulation (False) or pseudo-data (True)."""
        return World.build(self, is_data)

    def truth(self) -> dict[str, Any]:
        """The truth record written to truth.json (format in docs/DESIGN.md)."""
        mc, data = self.world(False), self.world(True)
        c = 0.5 * (ETA_EDGES[1:] + ETA_EDGES[:-1])
        return {
            "format_version": 1,
            "params": mc.scalars(),
            "data_params": data.scalars(),
            "all_params": _plain(asdict(self)),
            "efficiency": {
                "eta_edges": ETA_EDGES.tolist(),
                "pt_edges": PT_EDGES.tolist(),
                "steps": list(STEPS),
                "definitions": {
                    "reco": "a muon track (Muon or IsoTrack) is a reconstructed Muon",
                    "idip": f"Muon_mediumId && |Muon_dxy| < {DXY_CUT} (given reco)",
                    "iso": f"Muon_pfRelIso04_all < {ISO_CUT} (given idip)",
                    "trigger": "muon fires HLT_IsoMu24: TrigObj id 13, filterBits & 8 (given iso)",
                },
                "variable": "reconstructed pT and eta; beyond the pt edges the edge bins apply",
                "mc": {s: mc.eff[s].tolist() for s in STEPS},
                "data": {s: data.eff[s].tolist() for s in STEPS},
            },
            "momentum_scale": {
                "eta_edges": ETA_EDGES.tolist(),
                "definition": "pt_reco = pt_gen * (1 + offset[eta_bin(eta_gen)]) * (1 + sigma_rel * N(0,1))",
                "mc": list(mc.scale_offsets),
                "data": list(data.scale_offsets),
            },
            "resolution": {
                "formula": "sigma_rel = k * sqrt(a^2 + (b*pt)^2), a = a0 + a2*(eta/2.4)^2, b = b0*(1 + b1*|eta|)",
                "a0": self.res_a0,
                "a2": self.res_a2,
                "b0": self.res_b0,
                "b1": self.res_b1,
                "k": {"mc": 1.0, "data": self.data_resolution_scale},
                "eta_resolution": 5e-4,
                "phi_resolution": 5e-4,
            },
            "pileup": {
                "edges": PILEUP_EDGES.tolist(),
                "variable": "Pileup_nTrueInt (integer valued); PV_npvsGood ~ 1 + Poisson(0.7 nTrueInt)",
                "mc": mc.pileup.tolist(),
                "data": data.pileup.tolist(),
            },
            "prefiring": {
                "formula": "P = 1 - (1 - p_event) * prod_muons (1 - p_mu(eta)); Nom = 1 - P, "
                "Up = 1 - (1 - syst) P, Dn = 1 - (1 + syst) P; pseudo-data drops events with prob P",
                "p_event": self.prefire_event_prob,
                "eta_edges": ETA_EDGES.tolist(),
                "p_mu": prefire_muon_prob(c, self.prefire_muon_max).tolist(),
                "syst": self.prefire_syst,
            },
            "recoil": {
                "formula": "u_reco = response * u_true + N(0, sigma0 + sigma_pu * nTrueInt) per component",
                "mc": {
                    "response": mc.recoil_response,
                    "sigma0": mc.recoil_sigma0,
                    "sigma_pu": mc.recoil_sigma_pu,
                },
                "data": {
                    "response": data.recoil_response,
                    "sigma0": data.recoil_sigma0,
                    "sigma_pu": data.recoil_sigma_pu,
                },
            },
            "boson_pt": {
                "formula": "p(qT) ~ p_gen(qT) * (1 + tilt * tanh((qT - 10) / 10)), normalised "
                "on [0, 300] GeV; p_gen(qT) ~ qT (1 + qT^2/b^2)^-2.4, b = 5.5 (W), 6.0 (Z) GeV",
                "mc": {"tilt": mc.boson_pt_tilt},
                "data": {"tilt": data.boson_pt_tilt},
            },
            "mass_window": {"W": list(self.w_window), "Z": list(self.z_window)},
            "lineshape": (
                "p(m) = 2m / ((m^2 - M^2)^2 + m^4 Gamma^2 / M^2), normalised on mass_window"
            ),
        }


def _data_width(data_width: float | None, width: float, mass: float, data_mass: float) -> float:
    """The pseudo-data width: as given, or the simulation's scaled as (M_data / M)^3."""
    return float(data_width) if data_width is not None else width * (data_mass / mass) ** 3


def prefire_muon_prob(eta: np.ndarray, pmax: float) -> np.ndarray:
    """Per-muon prefiring probability: 0 below |eta| 1.24, rising linearly to pmax at 2.4."""
    return pmax * np.clip((np.abs(eta) - 1.24) / (2.4 - 1.24), 0.0, 1.0)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [_plain(v) for v in obj]
    return obj


def _turnon(pt: np.ndarray, thr: float, width: float) -> np.ndarray:
    from scipy import special  # here, not at import: scipy.special costs 0.3 s to import

    return 0.5 * (1.0 + special.erf((pt - thr) / (width * np.sqrt(2.0))))


def _gauss(x: np.ndarray, mu: float, s: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / s) ** 2)


def efficiency_tables(p: SynthParams, is_data: bool) -> dict[str, np.ndarray]:
    """(n_eta, n_pt) efficiency tables per step, evaluated at the bin centres."""
    eta = 0.5 * (ETA_EDGES[1:] + ETA_EDGES[:-1])[:, None]
    pt = 0.5 * (PT_EDGES[1:] + PT_EDGES[:-1])[None, :]
    ae = np.abs(eta)
    reco = (
        0.993
        - 0.02 * _gauss(ae, 0.25, 0.05)  # chimney region
        - 0.015 * _gauss(ae, 1.05, 0.12)  # barrel/endcap overlap
        - 0.01 * (ae > 2.1)
        - 0.012 * np.exp(-(pt - 15.0) / 8.0)
    )
    idip = (
        0.985
        - 0.03 * _gauss(ae, 0.25, 0.04)  # chimney region
        - 0.02 * _gauss(ae, 1.05, 0.12)  # barrel/endcap overlap
        - 0.012 * (ae > 2.1)
        - 0.025 * np.exp(-(pt - 15.0) / 8.0)
    )
    iso = 0.99 - 0.12 * np.exp(-(pt - 15.0) / 12.0) - 0.01 * ae / 2.4
    plateau = 0.955 - 0.03 * _gauss(ae, 1.05, 0.15) - 0.04 * np.clip((ae - 1.2) / 1.2, 0, 1)
    shift = p.data_trigger_turnon_shift if is_data else 0.0
    trig = plateau * _turnon(pt, 24.3 + shift, 0.9)
    tabs = {"reco": reco, "idip": idip, "iso": iso, "trigger": trig}
    if is_data:
        losses = {
            "reco": p.data_reco_loss,
            "idip": p.data_idip_loss,
            "iso": p.data_iso_loss,
            "trigger": p.data_trigger_loss,
        }
        for s, (a, b) in losses.items():
            tabs[s] = tabs[s] * (1.0 - a - b * ae / 2.4)
    out = {}
    for s, t in tabs.items():
        full = np.broadcast_to(t, (eta.shape[0], pt.shape[1]))
        out[s] = np.round(np.clip(full, EFF_FLOOR, 1.0), 6)
    return out


def pileup_profile(mean: float, sd: float, flat: float) -> np.ndarray:
    """Normalised nTrueInt histogram on PILEUP_EDGES: gamma(mean, sd) + a flat part to 75."""
    from scipy import special

    k = (mean / sd) ** 2
    # the gamma CDF (what scipy.stats.gamma.cdf computes, without importing scipy.stats)
    h = np.diff(special.gammainc(k, PILEUP_EDGES / (mean / k)))
    h = h / h.sum()
    uni = np.where(PILEUP_EDGES[:-1] < 75, 1.0, 0.0)
    h = (1 - flat) * h + flat * uni / uni.sum()
    return np.round(h / h.sum(), 9)


@dataclass(frozen=True)
class World:
    """Resolved parameters of one world (simulation or pseudo-data)."""

    is_data: bool
    mW: float
    GammaW: float
    mZ: float
    GammaZ: float
    w_window: tuple[float, float]
    z_window: tuple[float, float]
    eff: dict[str, np.ndarray]
    scale_offsets: tuple[float, ...]
    resolution_scale: float
    res: tuple[float, float, float, float]
    pileup: np.ndarray
    recoil_response: float
    recoil_sigma0: float
    recoil_sigma_pu: float
    puppi_pu_factor: float
    prefire_event_prob: float
    prefire_muon_max: float
    prefire_syst: float
    fake_muon_rate: float
    boson_pt_tilt: float = 0.0

    @classmethod
    def build(cls, p: SynthParams, is_data: bool) -> World:
        if len(p.mc_scale_offsets) != 48 or len(p.data_scale_offsets) != 48:
            raise ValueError("SynthParams: mc_scale_offsets/data_scale_offsets need 48 entries")
        d = is_data
        sig_scale = p.data_recoil_sigma_scale if d else 1.0
        return cls(
            is_data=d,
            mW=p.data_mW if d else p.mW,
            GammaW=_data_width(p.data_GammaW, p.GammaW, p.mW, p.data_mW) if d else p.GammaW,
            mZ=p.data_mZ if d else p.mZ,
            GammaZ=_data_width(p.data_GammaZ, p.GammaZ, p.mZ, p.data_mZ) if d else p.GammaZ,
            w_window=tuple(p.w_window),
            z_window=tuple(p.z_window),
            eff=efficiency_tables(p, d),
            scale_offsets=tuple(p.data_scale_offsets if d else p.mc_scale_offsets),
            resolution_scale=p.data_resolution_scale if d else 1.0,
            res=(p.res_a0, p.res_a2, p.res_b0, p.res_b1),
            pileup=pileup_profile(
                p.data_pileup_mean if d else p.mc_pileup_mean,
                p.data_pileup_sd if d else p.mc_pileup_sd,
                0.0 if d else p.mc_pileup_flat,
            ),
            recoil_response=p.data_recoil_response if d else p.recoil_response,
            recoil_sigma0=p.recoil_sigma0 * sig_scale,
            recoil_sigma_pu=p.recoil_sigma_pu * sig_scale,
            puppi_pu_factor=p.puppi_pu_factor,
            prefire_event_prob=p.prefire_event_prob,
            prefire_muon_max=p.prefire_muon_max,
            prefire_syst=p.prefire_syst,
            fake_muon_rate=p.fake_muon_rate,
            boson_pt_tilt=p.data_boson_pt_tilt if d else p.boson_pt_tilt,
        )

    def scalars(self) -> dict[str, Any]:
        """The scalar parameters of this world (truth.json 'params' / 'data_params')."""
        return {
            "mW": self.mW,
            "GammaW": self.GammaW,
            "mZ": self.mZ,
            "GammaZ": self.GammaZ,
            "w_window": list(self.w_window),
            "z_window": list(self.z_window),
            "resolution_scale": self.resolution_scale,
            "recoil_response": self.recoil_response,
            "is_data": self.is_data,
        }

    def resolution(self, pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """Relative pT resolution sigma(pT)/pT."""
        a0, a2, b0, b1 = self.res
        a = a0 + a2 * (eta / 2.4) ** 2
        b = b0 * (1.0 + b1 * np.abs(eta))
        return self.resolution_scale * np.sqrt(a * a + (b * pt) ** 2)

    def lookup_eff(self, step: str, pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """Table efficiency at (pt, eta); pt beyond the edges uses the edge bins."""
        ie = np.clip(np.searchsorted(ETA_EDGES, eta, side="right") - 1, 0, 47)
        ip = np.clip(np.searchsorted(PT_EDGES, pt, side="right") - 1, 0, PT_EDGES.size - 2)
        return self.eff[step][ie, ip]

    def scale_offset(self, eta: np.ndarray) -> np.ndarray:
        ie = np.clip(np.searchsorted(ETA_EDGES, eta, side="right") - 1, 0, 47)
        return np.asarray(self.scale_offsets)[ie]
