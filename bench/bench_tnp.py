"""Tag-and-probe timing: generation, histogramming, and the batched JAX fit against fitting the
bins one by one in a Python loop (scipy and, if installed, iminuit).

Z -> mu mu simulation (``--events`` events) and pseudo-data (Z at the luminosity that gives
``--events`` Z, plus ttbar background) are generated once into ``--cache`` (reused by later runs
with the same sizes and seeds; the generation time is reported apart, only when it ran),
histogrammed with the ``tnp`` processor (synchronous engine), then the data spectra of every bin
of the packaged configs/tnp.yaml binning are fitted:
  - batched: every bin in one vmapped jitted LM minimisation (first call incl. compilation,
    then the warm call),
  - loop references: ``fit_one_scipy`` (the same likelihood and JAX value+gradient) with
    scipy's L-BFGS-B and with iminuit's MIGRAD, each in a Python loop over the same
    ``--loop-bins`` bins, in the same run; per-bin time ratios reported.

    python bench/bench_tnp.py [--events 200000] [--cache DIR] [--loop-bins 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from wremnants_dask import engine, synth
from wremnants_dask.efficiency.fit import fit_efficiencies, fit_one_scipy
from wremnants_dask.efficiency.spectra import spectra_from_result
from wremnants_dask.inputs.datasets import Dataset
from wremnants_dask.processors.tnp import TagAndProbeProcessor
from wremnants_dask.processors.tnp_config import load_config
from wremnants_dask.utils.atomic import atomic_write_text

SEEDS = (11, 12)  # simulation, pseudo-data
EVENTS_PER_FILE = 1_000_000  # several files: the engine's chunks, and no single huge file


def _generate(base: Path, events: int) -> dict:
    """Generate (or reuse) the samples under ``base``; the stamp file marks a finished set."""
    stamp = base / "bench_tnp.json"
    key = {"events": events, "seeds": list(SEEDS), "version": 2}  # 2: reco step (IsoTrack)
    if stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
        return json.loads(stamp.read_text()) | {"generated_now": False}
    n_files = max(1, -(-events // EVENTS_PER_FILE))
    t0 = time.perf_counter()
    mc = synth.generate_sample("zmumu", events, base / "mc", seed=SEEDS[0], n_files=n_files)
    info = synth.generate_pseudodata(
        base / "data",
        lumi_pb=events / 2000.0,
        seed=SEEDS[1],
        processes=("zmumu", "ttbar"),
        n_files=n_files,
    )
    out = {
        "key": key,
        "generate_s": time.perf_counter() - t0,
        "mc_files": [str(f) for f in mc],
        "data_files": [str(f) for f in info.files],
        "lumi_csv": str(info.lumi_csv),
        "golden_json": str(info.golden_json),
    }
    atomic_write_text(stamp, json.dumps(out, indent=1) + "\n")
    return out | {"generated_now": True}


def _loop(minimizer: str, rows: np.ndarray, args_fit: tuple, edges, fit_range, res) -> dict:
    """Fit ``rows`` one by one; time per bin and the largest difference to the batched fit."""
    one = [a[rows[0]] for a in args_fit[:4]]
    fit_one_scipy(*one, edges, fit_range, minimizer=minimizer)  # compile the JAX functions
    t0 = time.perf_counter()
    diffs = []
    for b in rows:
        eff, _ = fit_one_scipy(*(a[b] for a in args_fit[:4]), edges, fit_range, minimizer=minimizer)
        diffs.append(abs(eff - res.eff[b]) / res.err[b])
    dt = time.perf_counter() - t0
    return {
        f"{minimizer}_s": dt,
        f"per_bin_{minimizer}_ms": 1e3 * dt / max(rows.size, 1),
        f"{minimizer}_max_eff_diff_in_sigma": float(max(diffs)) if diffs else None,
    }


def main() -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000, help="Z events per sample")
    p.add_argument("--cache", help="generate into (and reuse) this folder; default: a temp dir")
    p.add_argument("--loop-bins", type=int, default=40, help="bins fitted one by one per loop")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    cfg = load_config()
    out: dict = {"events_per_sample": args.events, "cpus": os.cpu_count()}
    out["load_avg_start"] = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.cache) if args.cache else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        gen = _generate(base, args.events)
        out["generate_s"] = gen["generate_s"]
        out["generated_now"] = gen["generated_now"]
        datasets = [
            Dataset("zmumu", "Zmumu", tuple(gen["mc_files"]), False, 2000.0, "2018"),
            Dataset(
                "data",
                "Data",
                tuple(gen["data_files"]),
                True,
                None,
                "2018",
                lumi_csv=gen["lumi_csv"],
                golden_json=gen["golden_json"],
            ),
        ]
        t0 = time.perf_counter()
        result = engine.run(datasets, TagAndProbeProcessor())
        out["histogram_s"] = time.perf_counter() - t0
        out["events_histogrammed"] = int(sum(r.n_events for r in result.datasets.values()))
        out["histogram_events_per_s"] = out["events_histogrammed"] / out["histogram_s"]
        print(json.dumps(out), flush=True)  # the figures so far, should a later stage stall
    data = spectra_from_result(result, data=True)
    sim = spectra_from_result(result, data=False)
    tmpl = sim.passing + sim.failing
    args_fit = (data.passing, data.failing, tmpl, tmpl, data.mass_edges, cfg.fit_range)
    out["probes_data"] = float(data.passing.sum() + data.failing.sum())
    t0 = time.perf_counter()
    res = fit_efficiencies(*args_fit)
    out["batched_first_s"] = time.perf_counter() - t0
    out["bins"] = int(data.n_bins)
    out["bins_converged"] = int(res.converged.sum())
    print(f"batched_first_s: {out['batched_first_s']:.4g}", flush=True)
    rows = np.flatnonzero(res.converged)[: args.loop_bins]
    out["loop_bins"] = int(rows.size)
    minimizers = ["scipy"]
    if importlib.util.find_spec("iminuit"):
        minimizers.append("iminuit")
    else:
        print("iminuit not installed (pip install '.[bench]'): scipy loop only")
    for m in minimizers:
        out |= _loop(m, rows, args_fit, data.mass_edges, cfg.fit_range, res)
        print(f"per_bin_{m}_ms: {out[f'per_bin_{m}_ms']:.4g}", flush=True)
    # the warm batched call last: in two 10M-event runs it never returned (JAX waiting on
    # its CPU executable with no thread busy), after the first call had
    t0 = time.perf_counter()
    fit_efficiencies(*args_fit)
    out["batched_warm_s"] = time.perf_counter() - t0
    out["per_bin_batched_ms"] = 1e3 * out["batched_warm_s"] / out["bins"]
    for m in minimizers:
        out[f"ratio_{m}_over_batched"] = out[f"per_bin_{m}_ms"] / out["per_bin_batched_ms"]
    out["load_avg_end"] = os.getloadavg()[0]
    for k, v in out.items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
