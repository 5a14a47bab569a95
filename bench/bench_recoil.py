"""Cost of the recoil calibration in the W histmaker: mw with and without ``recoil_calibration``.

One W+ sample (generated once into a temporary folder), the mw processor with systematics, run
synchronously in this process; best-of-N wall times of the run without the calibration (the
reference), with it (corrected mT + the ``nominal_recoil`` eigen-variations), and their ratio.

    python -m bench.bench_recoil [--events 60000] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from wremnants_dask import engine
from wremnants_dask.corrections.recoil_calibration import RecoilCalibration
from wremnants_dask.inputs.datasets import Dataset
from wremnants_dask.processors.registry import get_processor
from wremnants_dask.synth import PROCESSES, generate_sample


def calibration(degree: int = 1) -> RecoilCalibration:
    """A calibration with the generator's ratios and 3 (degree + 1) non-zero eigen-shifts."""
    n = degree + 1
    params = np.zeros((3, n))
    params[:, 0] = [0.94 / 0.95, 1.05, 1.05]
    eigen = np.eye(3 * n).reshape(3 * n, 3, n) * 0.01
    mc = np.zeros(n)
    mc[0] = 0.95
    return RecoilCalibration(degree, params, mc, eigen, 50.0)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=60_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        files = generate_sample("wplus_munu", args.events, Path(tmp) / "w", seed=5)
        ds = Dataset("w", "Wmunu", tuple(map(str, files)), False,
                     PROCESSES["wplus_munu"].xsec_pb, "2018")  # fmt: skip
        cal = calibration().save(Path(tmp) / "recoil.json")
        plain = get_processor("mw")
        with_recoil = get_processor("mw", recoil_calibration=str(cal))
        engine.run([ds], plain)  # warm caches (file metadata, kernels)
        t_ref = best(lambda: engine.run([ds], plain), args.repeat)
        t_rec = best(lambda: engine.run([ds], with_recoil), args.repeat)
    out = {"events": args.events, "mw_s": t_ref, "mw_recoil_s": t_rec, "ratio": t_rec / t_ref}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
