"""Tag-and-probe statistics the Z sample gives, per (eta, pT) bin of the efficiency tables.

Until tag-and-probe measures the scale factors, their statistical uncertainty is the binomial
error of the number of probes a Z -> mu mu sample of the analysis's size would give, not a flat
2e5 per bin (4.6e8 in all, more than every Z CMS recorded). How the counts are derived:

1. Z -> mu mu events are drawn with the synthetic generator's hard process (``zmumu``:
   lineshape, boson pT and rapidity, decay angles), generator-level muons;
2. each muon is the probe when the other one is a tag: pT > TAG_PT_MIN, |eta| < 2.4, weighted
   by the data efficiency of the full selection (reco x idip x iso x trigger, from the truth
   tables; reco where the truth has it),
   with the Z mass in the tag-and-probe window TNP_MASS_WINDOW; the probe fills its (eta, pT)
   bin. The fraction of generated events landing in each bin is the acceptance ``a(eta, pT)``;
3. data probes = sigma(Z -> mu mu, generator window) x luminosity x a; simulated probes =
   events of the simulated Z sample x a (its generator window is the same);
4. each later step only sees probes that passed the earlier ones: n(idip) = n(reco) eff(reco),
   n(iso) = n(idip) eff(idip), n(trigger) = n(iso) eff(iso), with the data (or simulation)
   efficiencies of the probe's bin (the first step, reco or idip, sees every probe).

Defaults: the default synthetic job (configs/datasets_synthetic.yaml): pseudo-data 10 pb^-1,
a simulated Z sample of 1e5 events; sigma = 2000 pb. The acceptance is computed once per
process from 2e5 generated events (fixed seed), a ~10 % statistical precision per bin on the
counts, i.e. ~5 % on the uncertainties they give.
"""

from __future__ import annotations

import functools

import numpy as np

#: Luminosity (pb^-1) of the default synthetic pseudo-data and events of its simulated Z sample.
DEFAULT_LUMI_PB = 10.0
DEFAULT_MC_Z_EVENTS = 100_000
TAG_PT_MIN = 26.0
TNP_MASS_WINDOW = (60.0, 120.0)
N_GENERATED = 200_000
STEPS = ("reco", "idip", "iso", "trigger")  # the chain; reco only where the truth tabulates it


def chain_steps(eff: dict) -> tuple[str, ...]:
    """The steps of STEPS a truth "efficiency" record tabulates, in chain order."""
    return tuple(s for s in STEPS if s in eff["data"] and s in eff["mc"])


def _bin(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index, clamped to the edge bins (as the efficiency tables are evaluated)."""
    return np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)


@functools.lru_cache(maxsize=4)
def _acceptance(
    eta_key: tuple[float, ...],
    pt_key: tuple[float, ...],
    tag_eff_key: bytes,
    shape: tuple[int, int],
    n_gen: int,
    seed: int,
) -> np.ndarray:
    from wremnants_dask.synth.params import SynthParams
    from wremnants_dask.synth.physics import generate_hard

    eta_edges, pt_edges = np.asarray(eta_key), np.asarray(pt_key)
    tag_eff = np.frombuffer(tag_eff_key).reshape(shape)
    ev = generate_hard("zmumu", np.random.default_rng(seed), n_gen, SynthParams().world(True))
    slots, ok = ev.table.muon_slots(2)
    pt = np.take_along_axis(ev.table.pt, slots, axis=1)
    eta = np.take_along_axis(ev.table.eta, slots, axis=1)
    in_window = (ev.sys_m > TNP_MASS_WINDOW[0]) & (ev.sys_m < TNP_MASS_WINDOW[1]) & ok.all(axis=1)
    counts = np.zeros(shape)
    for tag, probe in ((0, 1), (1, 0)):
        is_tag = in_window & (pt[:, tag] > TAG_PT_MIN) & (np.abs(eta[:, tag]) < 2.4)
        w = np.where(is_tag, tag_eff[_bin(eta[:, tag], eta_edges), _bin(pt[:, tag], pt_edges)], 0)
        inside = (
            (eta[:, probe] >= eta_edges[0]) & (eta[:, probe] < eta_edges[-1])
            & (pt[:, probe] >= pt_edges[0]) & (pt[:, probe] < pt_edges[-1])
        )  # fmt: skip
        sel = inside & (w > 0)
        np.add.at(
            counts, (_bin(eta[sel, probe], eta_edges), _bin(pt[sel, probe], pt_edges)), w[sel]
        )
    return counts / n_gen


def probe_counts(
    truth: dict,
    lumi_pb: float = DEFAULT_LUMI_PB,
    mc_z_events: float = DEFAULT_MC_Z_EVENTS,
    *,
    n_gen: int = N_GENERATED,
    seed: int = 20241204,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per step, (data probes, simulated probes) as (n_eta, n_pt) arrays (module docstring)."""
    from wremnants_dask.synth.processes import PROCESSES

    eff = truth["efficiency"]
    eta_edges = np.asarray(eff["eta_edges"], dtype=np.float64)
    pt_edges = np.asarray(eff["pt_edges"], dtype=np.float64)
    steps = chain_steps(eff)
    data_eff = {s: np.asarray(eff["data"][s], dtype=np.float64) for s in steps}
    mc_eff = {s: np.asarray(eff["mc"][s], dtype=np.float64) for s in steps}
    tag_eff = np.ascontiguousarray(np.prod([data_eff[s] for s in steps], axis=0))
    shape = tag_eff.shape
    acc = _acceptance(
        tuple(eta_edges), tuple(pt_edges), tag_eff.tobytes(), shape, int(n_gen), int(seed)
    )
    proc = (truth.get("processes") or {}).get("zmumu")
    xsec = float(proc["xsec_pb"] * proc.get("filter_eff", 1.0)) if proc else None
    if xsec is None:
        p = PROCESSES["zmumu"]
        xsec = float(p.xsec_pb * p.filter_eff)
    n_data, n_mc = acc * xsec * float(lumi_pb), acc * float(mc_z_events)
    out = {}
    for step in steps:
        out[step] = (n_data.copy(), n_mc.copy())
        n_data, n_mc = n_data * data_eff[step], n_mc * mc_eff[step]
    return out
