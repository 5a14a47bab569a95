"""Tag-and-probe histograms (``--analysis tnp``): pass/fail pair-mass spectra per efficiency step.

Tag: a muon passing the tag criteria of ``configs/tnp.yaml`` (tight ID, |dxy|, isolation) and
matched to the single-muon trigger object. Probe: any other muon in the acceptance; the pair must
have opposite charges and a mass inside the histogram range. Every ordered (tag, probe)
combination is counted: when both muons are tags the event enters twice, once per probe (the
usual double-tag treatment, which keeps each probe's efficiency unbiased).

The reconstruction step (criterion ``muon_match``, first in the chain) has track-like probes:
every Muon (a reconstructed muon is its own track) and every IsoTrack farther than dR from all
Muons (NanoAOD's IsoTrack holds isolated tracks that are no Muon or Electron; the charge is
carried by pdgId, v6 has no IsoTrack_charge). A track probe fails; a Muon probe passes. A track
is in IsoTrack only if it passes NanoAOD's IsoTrack selection (pT, impact parameters, charged
isolation), so a Muon is a reco-step probe only if it passes the same selection (``track_like``,
from Muon_dxy, Muon_dz, Muon_pfRelIso03_chg): without it a non-isolated track would be a passing
probe when reconstructed and no probe when lost, and the measured efficiency would be high by
the lost tracks' share failing the isolation (1.4 % of them in the generator; issue 18). Muons
failing it are still probes of the later steps. Files without these branches (older or skimmed
NanoAOD) skip that step with a message: its histograms stay empty and the later steps' probes
are the Muons, as without it.

For step k of the factorised chain the probes are those passing steps 0..k-1; each pair fills
one histogram ``tnp`` with axes (mass, probe pt, probe eta, probe charge) and tensor axes
(step, passFail), so all steps are histogrammed in one pass. ``probes`` counts the probes of
each step in the fit range on the generator's fine (eta, pT) grid: what a bin's measured
efficiency averages over (the truth comparison uses it).

Pairs are unweighted in data and simulation: an efficiency is per muon, and the probe counts are
then the real statistics of each bin.
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import hist
import numpy as np

from wremnants_dask.engine.processor import ChunkOutput, Events, Processor, touch
from wremnants_dask.engine.tensorhist import TensorHist, tensor_axis
from wremnants_dask.processors import selection as S
from wremnants_dask.processors.common import np1, read_columns, sample_info, warn_once
from wremnants_dask.processors.tnp_config import TnPConfig, load_config

#: The generator's efficiency grid (truth.json "efficiency"): 0.1 in eta, 1 GeV in pT to 60.
FINE_ETA = np.round(np.linspace(-2.4, 2.4, 49), 6)
FINE_PT = np.array([*range(15, 61), 65, 70, 80], dtype=np.float64)
PASS_FAIL = ("fail", "pass")
#: The track-like probes of the reconstruction step (NanoAOD names; no IsoTrack_charge in v6).
TRACK_BRANCHES = ("IsoTrack_pt", "IsoTrack_eta", "IsoTrack_phi", "IsoTrack_pdgId")
#: What a Muon probe of the reconstruction step needs: the IsoTrack selection's variables.
MUON_TRACK_BRANCHES = ("Muon_dxy", "Muon_dz", "Muon_pfRelIso03_chg")


def _padded(values: ak.Array, n: int, fill: float = np.nan) -> np.ndarray:
    """(n_events, n) float64 numpy array of a jagged muon quantity (``fill`` padded)."""
    padded = ak.pad_none(values, n, axis=1, clip=True)
    return np.asarray(ak.to_numpy(ak.fill_none(padded, fill)), dtype=np.float64)


def _criteria(cols: dict[str, Any], crit: dict[str, Any], matched: ak.Array | None) -> ak.Array:
    """Jagged mask of muons passing a set of working-point criteria (see configs/tnp.yaml)."""
    ok = ak.ones_like(cols["Muon_pt"], dtype=bool)
    if "id" in crit:
        ok = ok & (cols[f"Muon_{crit['id']}"] != 0)
    if "dxy_max" in crit:
        ok = ok & (abs(cols["Muon_dxy"]) < crit["dxy_max"])
    if "iso_max" in crit:
        ok = ok & (cols["Muon_pfRelIso04_all"] < crit["iso_max"])
    if crit.get("trigger_match"):
        ok = ok & matched
    # muon_match (reconstruction step): every Muon is a reconstructed muon, so it passes
    return ok


def track_charge(pdg_id: np.ndarray) -> np.ndarray:
    """Charge of an IsoTrack from its PF pdgId: +-211 carries the sign of the charge, leptons
    (+-11, +-13) the opposite sign; 0 where the pdgId says nothing."""
    pdg = np.asarray(pdg_id)
    sign = np.sign(pdg)
    return np.where(np.isin(np.abs(pdg), (11, 13)), -sign, sign).astype(np.float64)


def track_like(pt: Any, dxy: Any, dz: Any, chg: Any) -> Any:
    """NanoAOD's IsoTrack selection of a charged track: pT > 10 GeV; |dxy| < 0.2 and |dz| < 0.1
    cm, or pT > 15 GeV; charged isolation in dR 0.3 below 5 GeV (pT < 25 GeV) or 0.2 relative
    (``chg`` the relative charged isolation). The Muon probes of the reco step must pass it as
    the tracks in IsoTrack did."""
    ok = pt > 10.0
    ok = ok & (((abs(dxy) < 0.2) & (abs(dz) < 0.1)) | (pt > 15.0))
    return ok & (((chg * pt < 5.0) & (pt < 25.0)) | (chg < 0.2))


def unmatched_tracks(
    t_eta: np.ndarray, t_phi: np.ndarray, m_eta: np.ndarray, m_phi: np.ndarray, dr: float
) -> np.ndarray:
    """(events, n_tracks) mask of padded tracks with no padded Muon within ``dr`` (NaN pads
    never match): the tracks that are not a reconstructed muon's own track."""
    deta = t_eta[:, :, None] - m_eta[:, None, :]
    dphi = (t_phi[:, :, None] - m_phi[:, None, :] + np.pi) % (2 * np.pi) - np.pi
    return ~np.any(deta * deta + dphi * dphi < dr * dr, axis=2)


def trigger_match(cols: dict[str, Any], bit: int, dr: float) -> ak.Array:
    """Jagged mask: muon within dR of a muon trigger object (id 13, filterBits & bit)."""
    tobj = (cols["TrigObj_id"] == 13) & ((cols["TrigObj_filterBits"] & bit) != 0)
    pairs_eta = ak.cartesian([cols["Muon_eta"], cols["TrigObj_eta"][tobj]], nested=True)
    pairs_phi = ak.cartesian([cols["Muon_phi"], cols["TrigObj_phi"][tobj]], nested=True)
    deta = pairs_eta["0"] - pairs_eta["1"]
    dphi = (pairs_phi["0"] - pairs_phi["1"] + np.pi) % (2 * np.pi) - np.pi
    return ak.any(deta * deta + dphi * dphi < dr * dr, axis=2)


class TagAndProbeProcessor(Processor):
    """Histograms ``tnp`` (mass, pt, eta, charge | step, passFail) and ``probes`` (fine grid).

    Option ``config``: a tag-and-probe YAML (default the packaged ``configs/tnp.yaml``).
    """

    name = "tnp"

    def __init__(self, *, systematics: bool = True, **options: Any) -> None:
        super().__init__(systematics=systematics, **options)
        self.config: TnPConfig = load_config(options.get("config"))

    def analysis_metadata(self) -> dict[str, Any]:
        return {"tnp_config": self.config.path, "tnp_steps": self.config.step_names}

    def histograms(self, dataset: Any) -> dict[str, TensorHist]:
        c = self.config
        axes = [
            hist.axis.Regular(c.mass_bins, *c.mass_range, name="mass", label="m(tag, probe)"),
            hist.axis.Variable(c.pt_edges, name="pt", label="probe pT (GeV)", flow=False),
            hist.axis.Variable(c.eta_edges, name="eta", label="probe eta", flow=False),
            hist.axis.Regular(
                2 if c.charge_bins else 1,
                -2.0,
                2.0,
                name="charge",
                label="probe charge",
                flow=False,
            ),
        ]
        steps = tensor_axis("step", labels=c.step_names)
        fine = [
            hist.axis.Variable(FINE_PT, name="pt", label="probe pT (GeV)", flow=False),
            hist.axis.Variable(FINE_ETA, name="eta", label="probe eta", flow=False),
        ]
        return {
            "tnp": TensorHist(
                axes, [steps, tensor_axis("passFail", labels=PASS_FAIL)], storage="weight"
            ),
            "probes": TensorHist(fine, [steps], storage="double"),
        }

    def _with_tracks(
        self, cols: dict[str, Any], arr: dict[str, np.ndarray], pas: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Muon candidates followed by the IsoTracks that are no Muon's track: never tags,
        probes in the same acceptance, failing every step (no reconstructed muon), each a
        reco-step probe (``track`` True: it passed the IsoTrack selection)."""
        c = self.config
        nt = max(int(ak.max(ak.num(cols["IsoTrack_pt"], axis=1), initial=0)), 1)
        t = {k: _padded(cols[f"IsoTrack_{k}"], nt) for k in ("pt", "eta", "phi")}
        t["charge"] = track_charge(_padded(cols["IsoTrack_pdgId"], nt, 0.0))
        keep = unmatched_tracks(t["eta"], t["phi"], arr["eta"], arr["phi"], c.track_dr)
        keep &= np.isfinite(t["pt"])
        probe = keep & (t["pt"] > c.probe["pt_min"]) & (np.abs(t["eta"]) < c.probe["eta_max"])
        new = {k: np.concatenate([arr[k], t[k]], axis=1) for k in ("pt", "eta", "phi", "charge")}
        new["tag"] = np.concatenate([arr["tag"], np.zeros_like(probe)], axis=1)
        new["probe"] = np.concatenate([arr["probe"], probe], axis=1)
        new["track"] = np.concatenate([arr["track"], probe], axis=1)
        fails = np.zeros((pas.shape[0], nt, pas.shape[2]), dtype=bool)
        return new, np.concatenate([pas, fails], axis=1)

    def process(self, events: Events, out: ChunkOutput) -> None:
        c = self.config
        # inputs named as in NanoAODv6 ("trigger": the era's single-muon path), resolved for
        # the dataset's era by the era table (configs/nanoaod_eras.yaml)
        required = [*sorted(c.branches()), "trigger", *S.TRIGOBJ_BRANCHES]
        info = sample_info(out.dataset, required)
        if info.is_data:
            required += ["run", "luminosityBlock"]
        cols = read_columns(events, info, required, [] if info.is_data else ["genWeight"])
        tracks = c.track_dr is not None
        if tracks:
            missing = [b for b in TRACK_BRANCHES + MUON_TRACK_BRANCHES if b not in info.branches]
            if missing:
                tracks = False
                warn_once(
                    out.dataset.name,
                    f"no {', '.join(missing)} in {out.dataset.files[0]}: tag-and-probe step "
                    f"{c.steps[0].name!r} (track probes) skipped, its histograms stay empty",
                )
            else:
                cols.update({b: events.branch(b) for b in TRACK_BRANCHES + MUON_TRACK_BRANCHES})
                if events.tracing:
                    touch(*(cols[b] for b in TRACK_BRANCHES + MUON_TRACK_BRANCHES))
        if events.tracing:
            return
        matched = trigger_match(cols, c.trigger_bit, c.trigger_dr)
        cf = S.event_preselection(out, cols, info.is_data, len(np1(cols["trigger"])))
        pt, eta = cols["Muon_pt"], cols["Muon_eta"]
        tag = _criteria(cols, c.tag, matched) & (pt > c.tag["pt_min"])
        tag = tag & (abs(eta) < c.tag["eta_max"])
        probe = (pt > c.probe["pt_min"]) & (abs(eta) < c.probe["eta_max"])
        passes = [_criteria(cols, s.criteria, matched) for s in c.steps]
        n = max(int(ak.max(ak.num(pt, axis=1), initial=0)), 2)
        cf.cut("tag", np1(ak.any(tag, axis=1)))
        keep = cf.mask  # golden JSON (data) and the trigger
        arr = {
            "pt": _padded(pt, n),
            "eta": _padded(eta, n),
            "phi": _padded(cols["Muon_phi"], n),
            "charge": _padded(cols["Muon_charge"], n, 0.0),
            "tag": _padded(tag, n, 0.0) > 0,
            "probe": _padded(probe, n, 0.0) > 0,
        }
        pas = np.stack([_padded(p, n, 0.0) > 0 for p in passes], axis=-1)  # (events, n, steps)
        if tracks:  # failing probes of the reconstruction step, after the Muons
            like = track_like(pt, cols["Muon_dxy"], cols["Muon_dz"], cols["Muon_pfRelIso03_chg"])
            arr["track"] = _padded(like, n, 0.0) > 0  # Muons that are reco-step probes
            arr, pas = self._with_tracks(cols, arr, pas)
        rows = []
        for i in range(n):
            for j in range(arr["pt"].shape[1]):
                if i == j:
                    continue
                ok = keep & arr["tag"][:, i] & arr["probe"][:, j]
                if c.opposite_charge:
                    ok &= arr["charge"][:, i] * arr["charge"][:, j] < 0
                idx = np.flatnonzero(ok)
                if idx.size:
                    rows.append((idx, i, j))
        if not rows:
            return
        ev = np.concatenate([r[0] for r in rows])
        it = np.concatenate([np.full(r[0].size, r[1]) for r in rows])
        ip = np.concatenate([np.full(r[0].size, r[2]) for r in rows])

        def at(a: np.ndarray, k: np.ndarray) -> np.ndarray:
            return a[ev, k]

        mass, _, _ = S.dimuon_kinematics(
            at(arr["pt"], it),
            at(arr["eta"], it),
            at(arr["phi"], it),
            at(arr["pt"], ip),
            at(arr["eta"], ip),
            at(arr["phi"], ip),
        )
        p_pt, p_eta, p_q = at(arr["pt"], ip), at(arr["eta"], ip), at(arr["charge"], ip)
        p_pass = pas[ev, ip]  # (pairs, steps)
        # probes of step k: passing every earlier step
        den = np.cumprod(np.concatenate([np.ones_like(p_pass[:, :1]), p_pass[:, :-1]], 1), 1)
        den = den.astype(bool)
        if c.track_dr is not None and not tracks:
            den[:, 0] = False  # no track probes in this file: the step is skipped
        elif tracks:
            den[:, 0] &= at(arr["track"], ip)  # reco-step probes: tracks in IsoTrack's selection
        tensor = np.stack([den & ~p_pass, den & p_pass], axis=-1).astype(np.float64)
        out.fill("tnp", mass, p_pt, p_eta, p_q, weight=None, tensor=tensor)
        lo, hi = c.fit_range
        in_fit = (mass > lo) & (mass < hi)
        out.fill(
            "probes",
            p_pt[in_fit],
            p_eta[in_fit],
            weight=None,
            tensor=den[in_fit].astype(np.float64),
        )
