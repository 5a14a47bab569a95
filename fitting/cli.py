"""Command line: ``python -m wremnants_dask.fit INPUT.hdf5 -o OUTDIR [options]``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from wremnants_dask.utils.provenance import make_metadata

from .compile_cache import enable_compile_cache
from .fitinput import GAUSS, FitInputError, read_fit_input
from .fitter import FitError, Fitter, check_names
from .output import FIT_SUMMARY_FIELDS, write_results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="wremnants_dask.fit", description=__doc__)
    p.add_argument(
        "input", help="fit input HDF5 (FitInputWriter), or a pyhf workspace (.json, .json.gz)"
    )
    p.add_argument("-o", "--outdir", required=True)
    p.add_argument(
        "-p",
        "--patch",
        action="append",
        default=[],
        help="pyhf workspace input: a signal patch (JSON patch, or patchset.json:NAME) to apply",
    )
    p.add_argument("--output-name", default="fitresults.hdf5")
    p.add_argument("--poi", action="append", default=None, help="POI(s) (default: from input)")
    p.add_argument("-t", "--toys", type=int, default=0, help="-1: Asimov fit; N>0: N toys")
    p.add_argument("--seed", type=int, default=123456)
    p.add_argument("--toys-no-data", action="store_true", help="toys: no Poisson data fluctuation")
    p.add_argument("--toys-no-constraints", action="store_true", help="toys: no aux randomisation")
    p.add_argument(
        "--toys-no-mcstat",
        action="store_true",
        help="toys: keep the MC-statistics (Barlow-Beeston) auxiliary counts at their nominal",
    )
    p.add_argument("--freeze", action="append", default=[], help="freeze a parameter")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="starting/frozen value of a parameter",
    )
    p.add_argument("--no-hessian", action="store_true", help="skip covariance and derived results")
    p.add_argument("--impacts", action="store_true", help="covariance (global, grouped) impacts")
    p.add_argument("--impacts-refit", action="store_true", help="impacts by refitting +-1 sigma")
    p.add_argument(
        "--global-impacts",
        action="store_true",
        help="global impacts (rabbit's): d POI / d observable x its uncertainty, per parameter, "
        "group, data and MC statistics",
    )
    p.add_argument("--scan", action="append", default=[], help="1D scan of a parameter")
    p.add_argument("--scan2d", action="append", default=[], metavar="A,B", help="2D scan")
    p.add_argument("--scan-points", type=int, default=21)
    p.add_argument("--scan-range", type=float, default=3.0, help="in post-fit sigmas")
    p.add_argument("--bb", choices=["none", "lite", "full"], default=None, help="override BB mode")
    p.add_argument("--minimizer", choices=["gn", "exact"], default="gn")
    p.add_argument("--tol-edm", type=float, default=1e-8)
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "gpu"],
        default="auto",
        help="where the fit runs (auto: JAX's default backend, a GPU when JAX has one)",
    )
    p.add_argument(
        "--linalg",
        choices=["auto", "host", "device"],
        default="auto",
        help="dense linear algebra in numpy/LAPACK (host) or in XLA on the device (device); "
        "auto: device on an accelerator, host on a CPU",
    )
    p.add_argument(
        "--device-memory",
        type=float,
        default=None,
        metavar="GIB",
        help="device memory the fit may use, in GiB (default: what the device reports free)",
    )
    p.add_argument(
        "--compile-cache",
        default=None,
        metavar="DIR",
        help="JAX persistent compilation cache (default: $WREMNANTS_DASK_JAX_CACHE, else "
        "<user cache dir>/wremnants_dask/jax; 'none' disables)",
    )
    return p.parse_args(argv)


def run_fit(
    args: argparse.Namespace,
    timings: dict[str, float] | None = None,
    cpu_timings: dict[str, float] | None = None,
) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """Run everything the options ask for; returns (results, fit input, input metadata).
    ``timings`` receives the wall time of each phase (read, setup, fit, covariance, yields:
    pre- and post-fit yields with their uncertainties, derived: everything else asked for)."""
    timings = {} if timings is None else timings
    cpu = {} if cpu_timings is None else cpu_timings
    clock = _Clock(timings, cpu)
    if is_workspace_path(args.input):
        # pyhf is a 3 s import: only for workspace inputs
        from .pyhf_io import apply_patches, from_pyhf, read_patch, read_workspace

        spec = apply_patches(read_workspace(args.input), [read_patch(p) for p in args.patch])
        fi = from_pyhf(spec)
        in_meta = dict(fi.metadata)
        for note in fi.metadata["notes"]:
            print(f"note: {note}", file=sys.stderr)
    else:
        if args.patch:
            raise FitInputError("--patch applies to a pyhf workspace input only")
        fi, in_meta = read_fit_input(args.input)
    check_names(fi, args.freeze + [s.split("=")[0] for s in args.set] + list(args.scan))
    clock("read")
    fitter = Fitter(
        fi,
        bb_mode=args.bb,
        mode=args.minimizer,
        tol_edm=args.tol_edm,
        freeze=args.freeze,
        pois=args.poi,
        device=args.device,
        linalg=args.linalg,
        device_memory=None if args.device_memory is None else args.device_memory * 2**30,
        covariance=not args.no_hessian,
    )
    clock("setup")
    x0 = fitter.model.x0.copy()
    for s in args.set:
        n, v = s.split("=")
        x0[fi.param_index(n)] = float(v)
    obs = fitter.asimov_obs(x0) if args.toys == -1 else fitter.obs
    res = fitter.fit(obs=obs, x0=x0, hessian=not args.no_hessian)
    clock("fit")
    timings["covariance"] = res.time_hessian
    timings["fit"] -= res.time_hessian
    cpu["covariance"] = res.extra.get("cpu_hessian", 0.0)
    cpu["fit"] -= cpu["covariance"]
    out: dict[str, Any] = {"data": np.asarray(obs["data"])}
    out["fit"] = {k: getattr(res, k) for k in FIT_SUMMARY_FIELDS}
    c = fi.param_constraint
    prefit_err = np.where(c == GAUSS, fi.param_width, np.nan)
    err = res.errors if res.cov is not None else np.full(fi.npar, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        pull = np.where(c == GAUSS, (res.x - np.asarray(obs["aux"])) / fi.param_width, np.nan)
        constraint = np.where(c == GAUSS, err / fi.param_width, np.nan)
    out["parameters"] = {
        "name": fi.param_names,
        "value": res.x,
        "error": err,
        "prefit": x0,
        "prefit_error": prefit_err,
        "pull": pull,
        "constraint": constraint,
        "free": res.free,
    }
    clock("derived")
    out["prefit"] = fitter.postfit_yields(None)
    if res.cov is not None:
        out["postfit"] = fitter.postfit_yields(res, data=out["data"])
    clock("yields")
    if res.cov is not None:
        out["covariance"], out["correlation"] = res.cov, res.correlation
        out["gof"] = fitter.gof_saturated(res)
        if args.impacts:
            out["impacts"] = fitter.impacts_covariance(res)
        if args.impacts_refit:
            out["impacts_refit"] = fitter.impacts_refit(res)
        if args.global_impacts:
            out["global_impacts"] = fitter.impacts_global(res)
        scans: dict[str, np.ndarray] = {}
        for n in args.scan:
            i = fi.param_index(n)
            grid = res.x[i] + np.linspace(-1, 1, args.scan_points) * args.scan_range * err[i]
            scans[n] = np.stack([grid, fitter.scan(res, [n], grid[:, None])])
        for pair in args.scan2d:
            a, b = pair.split(",")
            ia, ib = fi.param_index(a), fi.param_index(b)
            ga = res.x[ia] + np.linspace(-1, 1, args.scan_points) * args.scan_range * err[ia]
            gb = res.x[ib] + np.linspace(-1, 1, args.scan_points) * args.scan_range * err[ib]
            A, B = np.meshgrid(ga, gb, indexing="ij")
            q = fitter.scan(res, [a, b], np.stack([A.ravel(), B.ravel()], 1))
            scans[f"{a},{b}"] = np.stack([A, B, q.reshape(A.shape)])
        if scans:
            out["scans"] = scans
    if args.toys > 0:
        t = fitter.toys(
            args.toys,
            x0,
            seed=args.seed,
            data=not args.toys_no_data,
            constraints=not args.toys_no_constraints,
            mcstat=not args.toys_no_mcstat,
            errors=res.cov is not None and fi.npar <= 500,
        )
        out["toys"] = {
            k: v for k, v in t.items() if k in ("x", "nll", "status", "edm", "poi_errors")
        }
    clock("derived")
    out["_result"], out["_fitter"] = res, fitter
    out["_device"] = fitter.device_info
    return out, fi, in_meta


class _Clock:
    """Wall and CPU time (this process, all threads) between successive calls, accumulated
    in ``timings[phase]`` and ``cpu[phase]``. CPU time shows where the work goes when the
    machine is shared and wall times stretch with its load."""

    def __init__(self, timings: dict[str, float], cpu: dict[str, float]) -> None:
        self.timings, self.cpu = timings, cpu
        self.t, self.c = time.perf_counter(), time.process_time()

    def __call__(self, phase: str) -> None:
        t, c = time.perf_counter(), time.process_time()
        self.timings[phase] = self.timings.get(phase, 0.0) + t - self.t
        self.cpu[phase] = self.cpu.get(phase, 0.0) + c - self.c
        self.t, self.c = t, c


def summary(out: dict[str, Any], fi: Any) -> str:
    """Readable summary: fit status, POIs, most pulled nuisances, GOF, impacts."""
    f, p = out["fit"], out["parameters"]
    lines = [
        f"fit converged: -logL = {f['nll_full']:.6f} (offset {f['nll']:.6f}), edm {f['edm']:.2e}, "
        f"{f['niter']} iterations, {f['ncg']} linear solves, {f['newton_steps']} exact Newton "
        f"steps, fit {f['time_fit']:.2f} s, "
        f"hessian {f['time_hessian']:.2f} s"
    ]
    for poi in out["_fitter"].pois:
        i = fi.param_index(poi)
        lines.append(f"  POI {poi:20s} = {p['value'][i]:.6f} +- {p['error'][i]:.6f}")
    pull = np.nan_to_num(p["pull"])
    for i in np.argsort(-np.abs(pull))[:5]:
        if fi.param_constraint[i] == GAUSS:
            lines.append(
                f"  pull {fi.param_names[i]:20s} {pull[i]:+.3f}  constraint {p['constraint'][i]:.3f}"
            )
    if "gof" in out:
        g = out["gof"]
        lines.append(f"  saturated GOF: q = {g['q']:.3f}, ndf = {g['ndf']}, p = {g['p_value']:.4f}")
    if "impacts" in out:
        imp = out["impacts"]
        for j, grp in enumerate(imp["groups"]):
            lines.append(f"  impact group {grp:16s} {imp['grouped'][0, j]:.6f}")
        lines.append(f"  stat {imp['stat'][0]:.6f}, total {imp['total'][0]:.6f}")
    if "global_impacts" in out:
        gi = out["global_impacts"]
        for j, grp in enumerate(gi["groups"]):
            lines.append(f"  global impact group {grp:16s} {gi['grouped'][0, j]:.6f}")
        lines.append(
            f"  global: stat {gi['stat'][0]:.6f}, binByBinStat {gi['binByBinStat'][0]:.6f}, "
            f"total {gi['total'][0]:.6f}"
        )
    if "toys" in out:
        lines.append(
            f"  toys: {len(out['toys']['x'])} fitted, "
            f"{int(np.sum(out['toys']['status'] == 0))} converged"
        )
    return "\n".join(lines)


def is_workspace_path(path: str | Path) -> bool:
    """A pyhf workspace by its name (``.json``/``.json.gz``), without importing pyhf."""
    return str(path).endswith((".json", ".json.gz"))


def _process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``; None elsewhere): the interpreter's
    start and the imports before ``main``."""
    try:
        with open("/proc/self/stat") as f:
            start = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            up = float(f.read().split()[0])
        return max(0.0, up - start / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def main(argv: list[str] | None = None) -> int:
    age = _process_age() if argv is None else None  # the command, not an in-process call
    args = parse_args(argv)
    t0 = time.perf_counter()
    cache_dir = enable_compile_cache(args.compile_cache)
    timings: dict[str, float] = {} if age is None else {"startup": age}
    cpu: dict[str, float] = {}
    if age is not None:  # the interpreter's start and the imports
        cpu["startup"] = time.process_time()
    try:
        out, fi, in_meta = run_fit(args, timings, cpu)
    except (FitInputError, FitError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    t1, c1 = time.perf_counter(), time.process_time()
    meta = make_metadata(
        vars(args),
        input_files=[args.input],
        inputs_metadata=[in_meta],
        stage="fit",
        wall_time=t1 - t0,
        device=out["_device"],
        compile_cache=None if cache_dir is None else str(cache_dir),
        timings=timings,
        cpu_timings=cpu,
    )
    outpath = Path(args.outdir) / args.output_name
    write_results(outpath, fi, {k: v for k, v in out.items() if not k.startswith("_")}, meta)
    timings["write"] = time.perf_counter() - t1
    cpu["write"] = time.process_time() - c1
    print(summary(out, fi))
    dev = out["_device"]
    print(
        f"device {dev['device']} (linalg {dev['linalg']}, {dev['steps']} steps): model arrays "
        f"{dev['model_bytes'] / 2**30:.2f} GiB, estimated peak "
        f"{dev['estimated_bytes']['total'] / 2**30:.2f} GiB"
    )
    print("time: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    print("cpu time: " + ", ".join(f"{k} {v:.2f} s" for k, v in cpu.items()))
    print(f"written {outpath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
