"""Real-looking run / lumi-section layout for pseudo-data, its brilcalc CSV and golden JSON.

Runs of 80-500 lumi sections (23.31 s each) grouped in fills, with an instantaneous luminosity
decaying within the fill. The first lumi sections of each run and occasional bad stretches are
left out of the golden JSON. Recorded luminosities are scaled so that the certified lumi
sections sum to the requested luminosity.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wremnants_dask.utils.atomic import atomic_write_text

LS_SECONDS = 23.31
FIRST_RUN = 315257
FIRST_FILL = 6570


@dataclass
class LumiPlan:
    run: np.ndarray
    fill: np.ndarray
    ls: np.ndarray
    time: np.ndarray  # seconds since the start
    delivered: np.ndarray  # /pb, rounded as written
    recorded: np.ndarray  # /pb, rounded as written
    avgpu: np.ndarray
    certified: np.ndarray

    @property
    def certified_lumi(self) -> float:
        return float(self.recorded[self.certified].sum())


def plan_lumisections(lumi_pb: float, rng: np.random.Generator, pileup_mean: float) -> LumiPlan:
    """Lumi sections whose certified recorded luminosity sums to ``lumi_pb`` (/pb)."""
    if not lumi_pb > 0:
        raise ValueError(f"lumi_pb must be positive, got {lumi_pb}")
    runs, fills, lss, times, dels, cert = [], [], [], [], [], []
    total, run, fill, t0 = 0.0, FIRST_RUN, FIRST_FILL, 0.0
    while total < lumi_pb:
        fill += 1
        t_fill = 0.0
        for _ in range(int(rng.integers(1, 4))):
            nls = int(rng.integers(80, 500))
            ls = np.arange(1, nls + 1)
            t = t_fill + (ls - 1) * LS_SECONDS
            d = 0.46 * np.exp(-t / 50000.0) * (1 + 0.01 * rng.normal(size=nls))
            good = ls > rng.integers(1, 4)
            if rng.uniform() < 0.25:
                a = int(rng.integers(1, nls))
                good[a : a + int(rng.integers(5, 20))] = False
            runs.append(np.full(nls, run))
            fills.append(np.full(nls, fill))
            lss.append(ls)
            times.append(t0 + t)
            dels.append(d)
            cert.append(good)
            total += float((0.93 * d[good]).sum())
            run += int(rng.integers(1, 12))
            t_fill = t[-1] + 600.0
        t0 += t_fill + 4 * 3600.0
    run_a, fill_a, ls_a = (np.concatenate(x) for x in (runs, fills, lss))
    time_a, del_a, cert_a = np.concatenate(times), np.concatenate(dels), np.concatenate(cert)
    rec_a = del_a * rng.uniform(0.90, 0.96, del_a.size)
    # keep lumi sections up to the one where the certified sum reaches lumi_pb, then rescale
    csum = np.cumsum(np.where(cert_a, rec_a, 0.0))
    last = int(np.searchsorted(csum, lumi_pb))
    keep = slice(0, last + 1)
    run_a, fill_a, ls_a, time_a = run_a[keep], fill_a[keep], ls_a[keep], time_a[keep]
    del_a, rec_a, cert_a = del_a[keep], rec_a[keep], cert_a[keep]
    factor = lumi_pb / rec_a[cert_a].sum()
    rec_a = np.round(rec_a * factor, 9)
    del_a = np.round(del_a * factor, 9)
    # absorb the rounding residue in the last certified lumi section
    resid = lumi_pb - rec_a[cert_a].sum()
    i_last = np.flatnonzero(cert_a)[-1]
    rec_a[i_last] = np.round(rec_a[i_last] + resid, 9)
    avgpu = np.round(pileup_mean * del_a / np.mean(del_a), 1)
    return LumiPlan(run_a, fill_a, ls_a, time_a, del_a, rec_a, avgpu, cert_a)


def write_brilcalc_csv(plan: LumiPlan, path: str | Path) -> Path:
    """brilcalc lumi --byls format (header lines start with '#')."""
    start = _dt.datetime(2018, 4, 17, 8, 0, 0)
    lines = [
        "#Data tag : synthetic , Norm tag: None",
        "#run:fill,ls,time,beamstatus,E(GeV),delivered(/pb),recorded(/pb),avgpu,source",
    ]
    for r, f, ls, t, d, rec, pu in zip(
        plan.run, plan.fill, plan.ls, plan.time, plan.delivered, plan.recorded, plan.avgpu
    ):
        stamp = (start + _dt.timedelta(seconds=float(t))).strftime("%m/%d/%y %H:%M:%S")
        lines.append(f"{r}:{f},{ls}:{ls},{stamp},STABLE BEAMS,6500,{d:.9f},{rec:.9f},{pu:.1f},HFOC")
    n_ls = plan.run.size
    lines.append("#Summary:")
    lines.append("#nfill,nrun,nls,ncms,totdelivered(/pb),totrecorded(/pb)")
    lines.append(
        f"#{np.unique(plan.fill).size},{np.unique(plan.run).size},{n_ls},{n_ls},"
        f"{plan.delivered.sum():.6f},{plan.recorded.sum():.6f}"
    )
    return atomic_write_text(path, "\n".join(lines) + "\n")


def golden_ranges(plan: LumiPlan) -> dict[str, list[list[int]]]:
    """{"run": [[first_ls, last_ls], ...]} of the certified lumi sections."""
    out: dict[str, list[list[int]]] = {}
    for run in np.unique(plan.run):
        sel = (plan.run == run) & plan.certified
        ls = plan.ls[sel]
        if ls.size == 0:
            continue
        breaks = np.flatnonzero(np.diff(ls) != 1)
        starts = np.concatenate([[0], breaks + 1])
        ends = np.concatenate([breaks, [ls.size - 1]])
        out[str(int(run))] = [[int(ls[a]), int(ls[b])] for a, b in zip(starts, ends)]
    return out


def write_golden_json(plan: LumiPlan, path: str | Path) -> Path:
    return atomic_write_text(path, json.dumps(golden_ranges(plan)) + "\n")
