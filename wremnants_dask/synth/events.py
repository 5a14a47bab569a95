"""Assemble one chunk of NanoAOD events for a process: hard process, detector, weights."""

from __future__ import annotations

import numpy as np

from . import lhe_weights as wts
from .chunk import EventChunk
from .detector import prefiring_weights, reconstruct
from .params import World
from .physics import generate_hard
from .processes import ProcessInfo


def make_events(
    info: ProcessInfo,
    n: int,
    world: World,
    rng: np.random.Generator,
    neg_weight_fraction: float | None = None,
    *,
    rng_reco: np.random.Generator,
) -> tuple[EventChunk, np.ndarray]:
    """One chunk (without run/lumi/event numbers) and its per-event prefiring probability.

    Simulation carries generator content (GenPart, genWeight, LHE, Generator, Pileup,
    L1PreFiringWeight); pseudo-data (``world.is_data``) carries none of it, like real data.
    ``rng_reco``: the separate stream of the muon reconstruction efficiency (detector.py).
    """
    hard = generate_hard(info.name, rng, n, world)
    reco = reconstruct(hard, world, rng, rng_reco)
    chunk = reco.chunk
    if world.is_data:
        return chunk, reco.prefire_prob
    f32, i32 = np.float32, np.int32
    tbl = hard.table
    valid = tbl.valid
    counts = valid.sum(axis=1)
    mother = tbl.mother.astype(np.int64)
    cidx = tbl.compact_index()
    mother_c = np.where(mother >= 0, np.take_along_axis(cidx, np.clip(mother, 0, None), axis=1), -1)
    chunk.add_collection(
        "GenPart",
        counts,
        {
            "eta": np.clip(tbl.eta[valid], -1e4, 1e4).astype(f32),
            "mass": tbl.mass[valid].astype(f32),
            "phi": tbl.phi[valid].astype(f32),
            "pt": tbl.pt[valid].astype(f32),
            "genPartIdxMother": mother_c[valid].astype(i32),
            "pdgId": tbl.pdgId[valid].astype(i32),
            "status": tbl.status[valid].astype(i32),
            "statusFlags": tbl.statusFlags[valid].astype(i32),
        },
    )
    neg = info.neg_weight_fraction if neg_weight_fraction is None else neg_weight_fraction
    gw = wts.gen_weights(rng, n, neg, info.abs_gen_weight)
    chunk.scalars["genWeight"] = gw
    chunk.scalars["LHEWeight_originalXWGTUP"] = gw
    chunk.scalars["Generator_weight"] = gw
    chunk.scalars["Generator_id1"] = hard.id1.astype(i32)
    chunk.scalars["Generator_id2"] = hard.id2.astype(i32)
    chunk.scalars["Generator_x1"] = (hard.sys_m / 13000.0 * np.exp(hard.sys_y)).astype(f32)
    chunk.scalars["Generator_x2"] = (hard.sys_m / 13000.0 * np.exp(-hard.sys_y)).astype(f32)
    chunk.scalars["Generator_scalePDF"] = hard.sys_m.astype(f32)
    chunk.scalars["Generator_binvar"] = hard.sys_pt.astype(f32)
    chunk.scalars["LHE_Vpt"] = (hard.sys_pt if hard.is_vboson else np.zeros(n)).astype(f32)
    pdf = wts.pdf_weights(hard.sys_y, hard.sys_pt, hard.charge)
    scale = wts.scale_weights(hard.sys_y, hard.sys_pt)
    chunk.add_collection("LHEPdfWeight", np.full(n, pdf.shape[1]), {"": pdf.ravel()})
    chunk.add_collection("LHEScaleWeight", np.full(n, scale.shape[1]), {"": scale.ravel()})
    chunk.scalars.update(prefiring_weights(reco.prefire_prob, world.prefire_syst))
    return chunk, reco.prefire_prob
