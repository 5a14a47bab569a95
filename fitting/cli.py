"""Command line: ``python -m wremnants_dask.fit INPUT.hdf5 -o OUTDIR [options]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from wremnants_dask.utils.provenance import make_metadata

from .fitinput import GAUSS, FitInputError, read_fit_input
from .fitter import FitError, Fitter, check_names
from .output import FIT_SUMMARY_FIELDS, write_results
from .pyhf_io import apply_patches, from_pyhf, is_workspace_path, read_patch, read_workspace


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
    p.add_argument("--scan", action="append", default=[], help="1D scan of a parameter")
    p.add_argument("--scan2d", action="append", default=[], metavar="A,B", help="2D scan")
    p.add_argument("--scan-points", type=int, default=21)
    p.add_argument("--scan-range", type=float, default=3.0, help="in post-fit sigmas")
    p.add_argument("--bb", choices=["none", "lite", "full"], default=None, help="override BB mode")
    p.add_argument("--minimizer", choices=["gn", "exact"], default="gn")
    p.add_argument("--tol-edm", type=float, default=1e-8)
    return p.parse_args(argv)


def run_fit(args: argparse.Namespace) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """Run everything the options ask for; returns (results, fit input, input metadata)."""
    if is_workspace_path(args.input):
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
    fitter = Fitter(
        fi,
        bb_mode=args.bb,
        mode=args.minimizer,
        tol_edm=args.tol_edm,
        freeze=args.freeze,
        pois=args.poi,
    )
    x0 = fitter.model.x0.copy()
    for s in args.set:
        n, v = s.split("=")
        x0[fi.param_index(n)] = float(v)
    obs = fitter.asimov_obs(x0) if args.toys == -1 else fitter.obs
    res = fitter.fit(obs=obs, x0=x0, hessian=not args.no_hessian)
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
    out["prefit"] = fitter.postfit_yields(None)
    if res.cov is not None:
        out["covariance"], out["correlation"] = res.cov, res.correlation
        out["postfit"] = fitter.postfit_yields(res)
        out["gof"] = fitter.gof_saturated(res)
        if args.impacts:
            out["impacts"] = fitter.impacts_covariance(res)
        if args.impacts_refit:
            out["impacts_refit"] = fitter.impacts_refit(res)
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
    out["_result"], out["_fitter"] = res, fitter
    return out, fi, in_meta


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
    if "toys" in out:
        lines.append(
            f"  toys: {len(out['toys']['x'])} fitted, "
            f"{int(np.sum(out['toys']['status'] == 0))} converged"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    try:
        out, fi, in_meta = run_fit(args)
    except (FitInputError, FitError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    meta = make_metadata(
        vars(args),
        input_files=[args.input],
        inputs_metadata=[in_meta],
        stage="fit",
        wall_time=time.perf_counter() - t0,
    )
    outpath = Path(args.outdir) / args.output_name
    write_results(outpath, fi, {k: v for k, v in out.items() if not k.startswith("_")}, meta)
    print(summary(out, fi))
    print(f"written {outpath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
