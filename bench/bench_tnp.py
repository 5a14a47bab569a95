"""Tag-and-probe timing: histogramming, and the batched JAX fit against scipy one bin at a time.

Generates Z -> mu mu simulation and pseudo-data (``--events`` Z each), histograms them with the
``tnp`` processor (synchronous engine), then fits the data spectra of every bin of the packaged
configs/tnp.yaml binning (576 bins: 3 steps x 8 pT x 12 eta x 2 charges):
  - batched: every bin in one vmapped jitted LM minimisation (first call incl. compilation,
    then the warm call),
  - reference: ``fit_one_scipy`` (the same likelihood, L-BFGS-B with JAX value+gradient) in a
    Python loop over ``--scipy-bins`` bins, in the same run; per-bin time ratio reported.

    python bench/bench_tnp.py [--events 200000] [--scipy-bins 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
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


def main() -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--scipy-bins", type=int, default=40)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    cfg = load_config()
    out: dict = {"events_per_sample": args.events}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        t0 = time.perf_counter()
        mc = synth.generate_sample("zmumu", args.events, base / "mc", seed=11)
        info = synth.generate_pseudodata(
            base / "data", lumi_pb=args.events / 2000.0, seed=12, processes=("zmumu", "ttbar")
        )
        out["generate_s"] = time.perf_counter() - t0
        datasets = [
            Dataset("zmumu", "Zmumu", tuple(map(str, mc)), False, 2000.0, "2018"),
            Dataset(
                "data",
                "Data",
                tuple(map(str, info.files)),
                True,
                None,
                "2018",
                lumi_csv=str(info.lumi_csv),
                golden_json=str(info.golden_json),
            ),
        ]
        t0 = time.perf_counter()
        result = engine.run(datasets, TagAndProbeProcessor())
        out["histogram_s"] = time.perf_counter() - t0
        out["events_histogrammed"] = int(sum(r.n_events for r in result.datasets.values()))
    data = spectra_from_result(result, data=True)
    sim = spectra_from_result(result, data=False)
    tmpl = sim.passing + sim.failing
    args_fit = (data.passing, data.failing, tmpl, tmpl, data.mass_edges, cfg.fit_range)
    t0 = time.perf_counter()
    fit_efficiencies(*args_fit)
    out["batched_first_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = fit_efficiencies(*args_fit)
    out["batched_warm_s"] = time.perf_counter() - t0
    out["bins"] = int(data.n_bins)
    rows = np.flatnonzero(res.converged)[: args.scipy_bins]
    fit_one_scipy(*(a[rows[0]] for a in args_fit[:4]), data.mass_edges, cfg.fit_range)  # compile
    t0 = time.perf_counter()
    diffs = []
    for b in rows:
        eff, _ = fit_one_scipy(*(a[b] for a in args_fit[:4]), data.mass_edges, cfg.fit_range)
        diffs.append(abs(eff - res.eff[b]) / res.err[b])
    out["scipy_bins"] = int(rows.size)
    out["scipy_s"] = time.perf_counter() - t0
    out["per_bin_batched_ms"] = 1e3 * out["batched_warm_s"] / out["bins"]
    out["per_bin_scipy_ms"] = 1e3 * out["scipy_s"] / max(rows.size, 1)
    out["ratio_scipy_over_batched"] = out["per_bin_scipy_ms"] / out["per_bin_batched_ms"]
    out["max_eff_diff_in_sigma"] = float(max(diffs)) if diffs else None
    for k, v in out.items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
