"""Benchmark of our fitter on the deterministic W-mass-like synthetic model.

2880 bins, 10 processes, N shape systematics + 20 log-normal + 1 unconstrained mass parameter
(``wremnants_dask.fitting.synthmodel``). Each size runs in its own subprocess so that peak RSS
is per size. Reports build, fit (compiled, i.e. second call), compile overhead, covariance
(exact Hessian, structured or chunked) and peak RSS. Peer fitters (rabbit, pyhf) on the same model:
``python -m bench.bench_fit_peers``.

    python -m bench.bench_fit --sizes 100 1000 [5000] [--sparse] [--mode gn|exact]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def worker(nsyst: int, sparse: bool, mode: str) -> dict:

    from wremnants_dask.fitting.fitter import Fitter
    from wremnants_dask.fitting.synthmodel import MASS_NAME, build_synthetic

    t0 = time.perf_counter()
    fi, truth, _ = build_synthetic(nsyst, sparse=sparse)
    t1 = time.perf_counter()
    f = Fitter(fi, mode=mode)
    r = f.fit(hessian=False)  # includes compilation
    t2 = time.perf_counter()
    r = f.fit(hessian=False)
    t3 = time.perf_counter()
    f._covariance(r)
    t4 = time.perf_counter()
    i = fi.param_index(MASS_NAME)
    return {
        "nsyst": nsyst,
        "npar": fi.npar,
        "sparse": sparse,
        "mode": mode,
        "build_s": t1 - t0,
        "first_fit_s": t2 - t1,
        "fit_s": t3 - t2,
        "cov_s": t4 - t3,
        "fit_plus_cov_s": t4 - t2 - (t2 - t1) + (t3 - t2),  # compiled fit + covariance (1st)
        "niter": r.niter,
        "ncg": r.ncg,
        "edm": r.edm,
        "mass": float(r.x[i]),
        "mass_err": float(r.errors[i]),
        "mass_true": float(truth[i]),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--sparse", action="store_true")
    p.add_argument("--mode", default="gn", choices=["gn", "exact"])
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.worker is not None:
        print(json.dumps(worker(a.worker, a.sparse, a.mode)))
        return
    rows = []
    for n in a.sizes:
        cmd = [sys.executable, __file__, "--worker", str(n), "--mode", a.mode]
        cmd += ["--sparse"] if a.sparse else []
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"nsyst={n}: failed\n{out.stderr[-2000:]}")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["wall_s"] = time.perf_counter() - t
        rows.append(row)
        print(
            f"nsyst={n:5d} npar={row['npar']:5d} {'sparse' if a.sparse else 'dense'} {a.mode}: "
            f"fit {row['fit_s']:.1f} s ({row['niter']} it, {row['ncg']} solves), "
            f"cov {row['cov_s']:.1f} s, compile+1st fit {row['first_fit_s']:.1f} s, "
            f"peak RSS {row['peak_rss_gb']:.2f} GB, mass {row['mass']:.3f}+-{row['mass_err']:.3f} "
            f"(true {row['mass_true']})",
            flush=True,
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
