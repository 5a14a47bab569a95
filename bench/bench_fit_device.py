"""Fit + covariance + impacts on whatever device JAX has, with the host path on the same
machine as the reference (issue 19).

For each N (shape systematics of the synthetic W-mass-like model, 2880 bins, 10 processes)
one subprocess builds the model once and fits it with

* ``device``: ``Fitter(device=--device, linalg="device")``, the XLA path (a GPU when present);
* ``host``: ``Fitter(device="cpu", linalg="host")``, numpy/LAPACK on the CPU cores (today's
  path), only up to ``--host-max`` parameters (its N = 10000 did not finish in 10 minutes).

Each path: a first fit (compiles), then the timed fit, covariance (exact Hessian, Newton
polish, inverse) and covariance impacts; the results of the two paths are compared
(parameters in units of their uncertainty, relative uncertainties). With ``nvidia-smi`` on the
PATH the GPU utilisation and memory are sampled every 200 ms and summarised per phase. Sizes
that the remaining ``--budget`` cannot hold (estimated from the previous size, N^3 scaling) are
skipped and reported.

    python -m bench.bench_fit_device --sizes 1000 5000 20000 [--budget 600] [--json out.json]

``--command``: the whole fit command instead (issue 19, "whole-command time"). For each N the
synthetic input is written once (``write_fit_input``), then ``python -m wremnants_dask.fit``
runs twice on it with a fresh persistent compile cache: cold (empty cache) and warm (the
programs the first run stored). Reported per run: wall time (measured outside the command),
the command's own phase timings, and the share of the wall time outside fit + covariance.

    python -m bench.bench_fit_device --command --sizes 2000 5000 [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import threading
import time
from typing import Any


class GpuSampler:
    """``nvidia-smi`` utilisation (%) and memory (MiB) samples with their times."""

    def __init__(self, period_ms: int = 200) -> None:
        self.samples: list[tuple[float, float, float]] = []
        self.proc = None
        if shutil.which("nvidia-smi") is None:
            return
        cmd = [
            "nvidia-smi",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
            f"-lms={period_ms}",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                u, m = (float(v) for v in line.split(",")[:2])
            except ValueError:
                continue
            self.samples.append((time.perf_counter(), u, m))

    def window(self, t0: float, t1: float) -> dict[str, float] | None:
        s = [(u, m) for t, u, m in self.samples if t0 <= t <= t1]
        if not s:
            return None
        us = [u for u, _ in s]
        return {
            "util_max": max(us),
            "util_mean": sum(us) / len(us),
            "mem_max_mib": max(m for _, m in s),
        }

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()


def run_path(fi: Any, device: str, linalg: str, gpu: GpuSampler) -> dict[str, Any]:
    from wremnants_dask.fitting.fitter import Fitter

    t0 = time.perf_counter()
    f = Fitter(fi, device=device, linalg=linalg)
    f.fit(hessian=False)  # compiles the minimiser
    t1 = time.perf_counter()
    res = f.fit(hessian=False)
    t2 = time.perf_counter()
    f._covariance(res)  # first call compiles the Hessian programs
    t3 = time.perf_counter()
    imp = f.impacts_covariance(res)
    t4 = time.perf_counter()
    res2 = f.fit(hessian=False)  # covariance again, compiled
    t5 = time.perf_counter()
    f._covariance(res2)
    t6 = time.perf_counter()
    return {
        "device": f.device_info["device"],
        "linalg": f.device_info["linalg"],
        "model_gib": f.device_info["model_bytes"] / 2**30,
        "setup_first_fit_s": t1 - t0,
        "fit_s": t2 - t1,
        "cov_first_s": t3 - t2,
        "cov_s": t6 - t5,
        "impacts_s": t4 - t3,
        "fit_cov_s": (t2 - t1) + (t6 - t5),
        "niter": res.niter,
        "newton_steps": res.newton_steps,
        "edm": res.edm,
        "gpu_fit": gpu.window(t1, t2),
        "gpu_cov": gpu.window(t5, t6),
        "_res": res,
        "_imp": imp,
    }


def worker(nsyst: int, device: str, host_max: int) -> dict[str, Any]:
    import numpy as np

    from wremnants_dask.fitting.synthmodel import build_synthetic

    gpu = GpuSampler()
    t0 = time.perf_counter()
    fi, _, _ = build_synthetic(nsyst)
    row: dict[str, Any] = {"nsyst": nsyst, "npar": fi.npar, "build_s": time.perf_counter() - t0}
    try:
        paths = {"device": run_path(fi, device, "device", gpu)}
        if fi.npar <= host_max:
            paths["host"] = run_path(fi, "cpu", "host", gpu)
    finally:
        gpu.stop()
    if "host" in paths:
        a, b = paths["host"]["_res"], paths["device"]["_res"]
        e = a.errors
        ok = a.free & (e > 0)
        ia, ib = paths["host"]["_imp"], paths["device"]["_imp"]
        row["agreement"] = {
            "x_over_sigma": float(np.max(np.abs(a.x - b.x)[ok] / e[ok])),
            "errors_rel": float(np.max(np.abs(b.errors[ok] / e[ok] - 1))),
            "impacts_rel": float(
                np.max(np.abs(ia["impacts"] - ib["impacts"]) / np.asarray(ia["total"])[:, None])
            ),
        }
        row["speedup_fit_cov"] = paths["host"]["fit_cov_s"] / paths["device"]["fit_cov_s"]
    for k, p in paths.items():
        row[k] = {kk: v for kk, v in p.items() if not kk.startswith("_")}
    row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return row


def parse_times(stdout: str, label: str = "time: ") -> dict[str, float]:
    """The phase timings of the fit command's ``time: read 1.00 s, fit 2.00 s, ...`` line
    (``label="cpu time: "``: the CPU times of the same phases)."""
    for line in stdout.splitlines():
        if line.startswith(label):
            return {
                k: float(v.split()[0])
                for k, v in (part.split(" ", 1) for part in line[len(label) :].split(", "))
            }
    raise RuntimeError(f"no {label!r} line in the fit command's output:\n{stdout[-2000:]}")


def command_runs(nsyst: int, device: str, workdir: str, extra: list[str]) -> dict[str, Any]:
    """Cold and warm runs of the fit command on the synthetic input of ``nsyst``."""
    import os

    import h5py

    from wremnants_dask.fitting import write_fit_input
    from wremnants_dask.fitting.synthmodel import build_synthetic

    path = os.path.join(workdir, f"fitinput_{nsyst}.hdf5")
    if not os.path.exists(path):  # deterministic: an input of an earlier run is reused
        fi, _, _ = build_synthetic(nsyst)
        write_fit_input(fi, path, {"bench": "bench_fit_device --command", "nsyst": nsyst})
        del fi
    with h5py.File(path, "r") as f:
        npar = len(json.loads(f.attrs["param_names"]))
        tensor = f["shape_avg"].size * 8 if "shape_avg" in f else 0
    row: dict[str, Any] = {
        "nsyst": nsyst,
        "npar": npar,
        "input_mb": os.path.getsize(path) / 1e6,
        "tensor_mb": tensor / 1e6,
    }
    cache = os.path.join(workdir, f"jax_cache_{nsyst}")
    shutil.rmtree(cache, ignore_errors=True)  # the cold run starts from an empty cache
    for run in ("cold", "warm"):
        cmd = [sys.executable, "-m", "wremnants_dask.fit", path, "-o", workdir]
        cmd += ["--device", device, "--compile-cache", cache, *extra]
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if out.returncode != 0:
            raise RuntimeError(f"fit command failed ({' '.join(cmd)}):\n{out.stderr[-3000:]}")
        ph = parse_times(out.stdout)
        cpu = parse_times(out.stdout, "cpu time: ")
        inside = ph.get("fit", 0.0) + ph.get("covariance", 0.0)
        cpu_inside = cpu.get("fit", 0.0) + cpu.get("covariance", 0.0)
        row[run] = {
            "wall_s": wall,
            "phases": ph,
            "fit_cov_s": inside,
            "outside_s": wall - inside,
            "outside_share": (wall - inside) / wall,
            # what the phases do not cover: interpreter exit, the parts of start-up before
            # the process clock (none on Linux) and whatever runs after the last phase
            "unaccounted_s": wall - sum(ph.values()),
            # CPU time of the process (all threads) per phase: where the work goes, less
            # sensitive to the load of a shared machine than the wall times
            "cpu_phases": cpu,
            "cpu_outside_share": 1.0 - cpu_inside / sum(cpu.values()),
        }
    return row


def command_main(a: argparse.Namespace) -> None:
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_fit_command_") as tmp:
        d = a.workdir or tmp
        for n in sorted(a.sizes):
            row = command_runs(n, a.device, d, a.fit_args)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(
        "| N | npar | run | wall s | fit s | cov s | outside s | outside share | CPU share "
        "outside | outside phases (wall s) |"
    )
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        for run in ("cold", "warm"):
            x = r[run]
            ph = x["phases"]
            rest = {k: v for k, v in ph.items() if k not in ("fit", "covariance")}
            top = ", ".join(f"{k} {v:.1f}" for k, v in sorted(rest.items(), key=lambda kv: -kv[1]))
            print(
                f"| {r['nsyst']} | {r['npar']} | {run} | {x['wall_s']:.1f} | "
                f"{ph.get('fit', 0):.1f} | {ph.get('covariance', 0):.1f} | {x['outside_s']:.1f} | "
                f"{100 * x['outside_share']:.0f}% | {100 * x['cpu_outside_share']:.0f}% | "
                f"{top} |"
            )
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"command_rows": rows}, f, indent=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--host-max", type=int, default=6000, help="host reference up to this npar")
    p.add_argument("--budget", type=float, default=600.0, help="seconds for the whole run")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None)
    p.add_argument("--command", action="store_true", help="whole fit command, cold and warm")
    p.add_argument(
        "--workdir",
        default=None,
        help="--command: folder for the inputs (kept and reused: fitinput_N.hdf5), the "
        "compile caches and outputs (default: a temporary folder)",
    )
    p.add_argument(
        "--fit-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="--command: further options of the fit command (last on the line)",
    )
    a = p.parse_args()
    if a.command:
        command_main(a)
        return
    if a.worker is not None:
        print(json.dumps(worker(a.worker, a.device, a.host_max)))
        return
    t_start = time.perf_counter()
    rows, skipped, last = [], [], None
    for n in sorted(a.sizes):
        left = a.budget - (time.perf_counter() - t_start)
        if last is not None:
            est = last[1] * (n / last[0]) ** 3 if n > last[0] else last[1]
            if est > left:
                skipped.append({"nsyst": n, "estimated_s": est, "left_s": left})
                print(f"N={n}: skipped (estimated {est:.0f} s, {left:.0f} s left)", flush=True)
                continue
        cmd = [sys.executable, "-m", "bench.bench_fit_device", "--worker", str(n)]
        cmd += ["--device", a.device, "--host-max", str(a.host_max)]
        t = time.perf_counter()
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=max(left, 1.0))
        except subprocess.TimeoutExpired:
            print(f"N={n}: out of budget after {time.perf_counter() - t:.0f} s", flush=True)
            skipped.append({"nsyst": n, "timed_out_s": time.perf_counter() - t})
            break
        wall = time.perf_counter() - t
        if out.returncode != 0:
            print(f"N={n}: failed\n{out.stderr[-3000:]}", flush=True)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["wall_s"] = wall
        rows.append(row)
        last = (n, wall)
        print(json.dumps(row), flush=True)
    print()
    print(
        "| N | npar | path | device | fit s | cov s | impacts s | fit+cov s | GPU util max/mean |"
    )
    print("| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        for k in ("device", "host"):
            if k not in r:
                continue
            x = r[k]
            g = x.get("gpu_cov") or x.get("gpu_fit")
            gs = f"{g['util_max']:.0f}% / {g['util_mean']:.0f}%" if g else "-"
            print(
                f"| {r['nsyst']} | {r['npar']} | {x['linalg']} | {x['device']} | "
                f"{x['fit_s']:.2f} | {x['cov_s']:.2f} | {x['impacts_s']:.2f} | "
                f"{x['fit_cov_s']:.2f} | {gs} |"
            )
        if "agreement" in r:
            print(f"|  |  | agreement | {json.dumps(r['agreement'])} |  |  |  |  |  |")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s; skipped: {skipped or 'none'}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": rows, "skipped": skipped}, f, indent=1)


if __name__ == "__main__":
    main()
