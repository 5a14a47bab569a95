"""Fitter benchmark: rabbit, pyhf (JAX) and our fitter on the same synthetic W-mass model.

The issue's target is "fit + covariance in at most half of rabbit's time and memory at every
size, in the same run", so every fitter runs here, one after the other (never concurrently:
2 cores), each in its own niced subprocess on inputs written from one ``build_model`` call.

Usage::

    python -m bench.bench_fit_peers                       # sizes 100 1000, all peers
    python -m bench.bench_fit_peers --sizes 100 --peers rabbit ours
    python -m bench.bench_fit_peers --sizes 5000 --pyhf-timeout 60 --json out.json

Columns: wall = whole subprocess (imports, input loading, fit[, covariance]); fit / cov = the
fitter's own phases; RSS = peak resident memory of the process tree. "> limit" = killed at
``--timeout``/``--mem-limit``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench import fit_peers
from wremnants_dask.fitting.synthmodel import SyntheticFitModel, build_model, to_fit_input

PEERS = ("rabbit", "pyhf", "pyhf-minuit", "ours")


def run_ours(
    model: SyntheticFitModel,
    workdir: Path | str = "/tmp/fit_peers_bench/ours",
    *,
    covariance: bool = True,
    timeout_s: float = 600,
    mem_limit_gb: float = 18.0,
) -> dict[str, Any]:
    """Our fitter on ``model``, as a row of the peers' table (the hook for our benchmark).

    Writes the FitInput with ``to_fit_input`` (FitInputWriter) and fits it in a subprocess:
    ``fitting.fit(fi, covariance=...)`` once the fitter exposes it, until then its internal
    ``FitModel`` + ``make_minimizer`` and an exact JAX Hessian for the covariance."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "fitinput.hdf5"
    t0 = time.perf_counter()
    to_fit_input(model, path=path)
    write_s = time.perf_counter() - t0
    row = fit_peers.run_ours_file(
        path,
        workdir,
        mass_name=model.mass_name,
        covariance=covariance,
        timeout_s=timeout_s,
        mem_limit_gb=mem_limit_gb,
    )
    row["write_s"] = write_s
    return row


def run_size(nsyst: int, ns: argparse.Namespace) -> list[dict[str, Any]]:
    """All requested fitters on one model size."""
    truth = {"massShift100MeV": ns.truth_mass}
    model = build_model(nsyst, seed=ns.seed, asimov=ns.asimov, truth=truth)
    work = Path(ns.workdir) / f"nsyst{nsyst}"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for peer in ns.peers:
        print(f"[nsyst={nsyst}] {peer} ...", flush=True)
        t0 = time.perf_counter()
        if peer == "rabbit":
            inp = fit_peers.write_rabbit_input(model, work / "rabbit_input.hdf5")
            w = time.perf_counter() - t0
            for cov in [False, True] if ns.fit_only_too else [True]:
                r = fit_peers.run_rabbit(
                    inp,
                    work,
                    mass_name=model.mass_name,
                    covariance=cov,
                    cli=ns.rabbit_cli,
                    timeout_s=ns.timeout,
                    mem_limit_gb=ns.mem_limit,
                )
                rows.append({**r, "write_s": w})
        elif peer.startswith("pyhf"):
            inp = fit_peers.write_pyhf_workspace(
                model, work / "pyhf_workspace.json", staterror=not ns.pyhf_no_staterror
            )
            w = time.perf_counter() - t0
            r = fit_peers.run_pyhf(
                inp,
                work,
                optimizer="minuit" if peer == "pyhf-minuit" else "scipy",
                covariance=True,
                timeout_s=ns.pyhf_timeout or ns.timeout,
                mem_limit_gb=ns.mem_limit,
            )
            rows.append({**r, "write_s": w})
        elif peer == "ours":
            rows.append(run_ours(model, work, timeout_s=ns.timeout, mem_limit_gb=ns.mem_limit))
        rows[-1]["nsyst"] = nsyst
        print("   " + format_row(rows[-1]), flush=True)
    return rows


def _f(v: Any, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def format_row(r: dict[str, Any]) -> str:
    """One table line; phase times only where the worker reported them."""
    status = r.get("status", "?")
    wall = _f(r.get("wall_s"))
    if status.startswith(">"):
        wall = f">{r.get('wall_s', 0):.0f}"
    m, e = r.get("mass"), r.get("mass_err")
    mass = f"{m:+.3f}+-{e:.3f}" if m is not None and e is not None else _f(m, "{:+.3f}")
    return (
        f"{r.get('nsyst', ''):>6} {r.get('peer', ''):<18} {r.get('mode', ''):<8} "
        f"{wall:>8} {_f(r.get('fit_s')):>8} {_f(r.get('cov_s')):>8} "
        f"{_f(r.get('peak_rss_gb'), '{:.2f}'):>7} {_f(r.get('npar'), '{:d}'):>6} "
        f"{mass:>16} {status}"
    )


HEADER = (
    f"{'nsyst':>6} {'fitter':<18} {'mode':<8} {'wall[s]':>8} {'fit[s]':>8} {'cov[s]':>8} "
    f"{'RSS[GB]':>7} {'npar':>6} {'mass[100MeV]':>16} status"
)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--peers", nargs="+", choices=PEERS, default=["rabbit", "pyhf", "ours"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--asimov", action="store_true", help="Asimov data (default: Poisson)")
    ap.add_argument("--truth-mass", type=float, default=0.5, help="true mass shift, 100 MeV")
    ap.add_argument("--timeout", type=float, default=600, help="per fitter run, seconds")
    ap.add_argument("--pyhf-timeout", type=float, default=None)
    ap.add_argument("--mem-limit", type=float, default=18.0, help="GB, kill above")
    ap.add_argument("--fit-only-too", action="store_true", help="also rabbit --noHessian run")
    ap.add_argument("--rabbit-cli", action="store_true", help="real rabbit_fit CLI, not driver")
    ap.add_argument("--pyhf-no-staterror", action="store_true")
    ap.add_argument("--workdir", default="/tmp/fit_peers_bench")
    ap.add_argument("--json", default=None, help="write all rows here")
    ns = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for n in ns.sizes:
        rows += run_size(n, ns)
        if ns.json:
            Path(ns.json).write_text(json.dumps(rows, indent=1, default=float))
    print("\n" + HEADER)
    for r in rows:
        print(format_row(r))
    for r in rows:
        if r.get("status") != "ok":
            print(f"[{r.get('peer')} {r.get('nsyst')}] {r.get('status')}: {r.get('error', '')}")


if __name__ == "__main__":
    main()
