"""Fit + Hessian of the published-likelihood corpus (tests/data/pyhf) against pyhf, same process.

Per workspace: ours (``Fitter().fit()``, default settings: minimiser, exact Hessian and
covariance) on its first call (import, compilation and fit) and warm (best of 2); pyhf's MLE fit
with the JAX backend (JAX gradients, SciPy optimiser) and pyhf's autodiff Hessian
(``jax.hessian`` of its ``-logpdf``), on their first call (model, compilation, fit, Hessian)
and warm (best of 2); optionally pyhf's numpy backend (SciPy SLSQP, slow). The accuracy columns compare our
minimum with the stored pyhf reference (``reference.json``): dNLL is pyhf's ``-logpdf`` at our
minimum minus at its own (pyhf's function at both points), max dpar the largest parameter
difference in pyhf's sigma, max dsigma/sigma the largest relative uncertainty difference.
Prints a markdown table.

    python -m bench.bench_pyhf_corpus [names...] [--no-numpy]

Latest table and the figures before the closed-form derivatives: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pyhf

from wremnants_dask.fitting.fitter import Fitter
from wremnants_dask.fitting.pyhf_io import apply_patches, from_pyhf

jax.config.update("jax_enable_x64", True)
DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "pyhf"


def corpus_files():
    """tests/data/pyhf/make_reference.py: which files make each corpus entry (workspace and
    signal patch) and how pyhf builds its model of it."""
    spec = importlib.util.spec_from_file_location("make_reference", DATA / "make_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CORPUS = corpus_files()


def best_of(fn, n: int = 2) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def pyhf_model(name: str):
    """pyhf's model and data of corpus entry ``name`` (its signal patch applied by pyhf)."""
    _, model, data = CORPUS.pyhf_model(CORPUS.load(name), CORPUS.patches(name))
    return model, data


def bench(name: str, numpy_backend: bool) -> dict:
    spec = CORPUS.load(name)
    ref = json.loads((DATA / "reference.json").read_text())[name]
    row: dict = {"name": name}
    t0 = time.perf_counter()
    fi = from_pyhf(apply_patches(spec, CORPUS.patches(name)))
    row["import"] = "ok"
    fitter = Fitter(fi)
    res = fitter.fit()
    row["ours_first"] = time.perf_counter() - t0
    row["ours"], res = best_of(fitter.fit)
    row["ours_hessian"], _ = best_of(lambda: fitter._hessian(jnp.asarray(res.x), res.obs))
    row["npar"], row["status"] = fi.npar, res.status
    row["newton"] = res.newton_steps

    pyhf.set_backend("jax", pyhf.optimize.scipy_optimizer())
    t0 = time.perf_counter()
    model, data = pyhf_model(name)
    d = jnp.asarray(data)
    bf = np.asarray(pyhf.infer.mle.fit(d, model))  # compiles
    hess = jax.jit(jax.hessian(lambda p: -model.logpdf(p, d)[0]))
    hess(jnp.asarray(bf)).block_until_ready()  # compiles
    row["pyhf_first"] = time.perf_counter() - t0
    row["pyhf_jax_fit"], bf = best_of(lambda: np.asarray(pyhf.infer.mle.fit(d, model)))
    row["pyhf_jax_hessian"], _ = best_of(lambda: hess(jnp.asarray(bf)).block_until_ready())
    nll = jax.jit(lambda p: -model.logpdf(p, d)[0])
    perm = [fitter.names.index(n) for n in model.config.par_names]
    row["dnll"] = float(nll(jnp.asarray(res.x[perm]))) - ref["nll"]
    err = np.asarray(ref["errors"])
    fl = err > 0
    row["dpar"] = float((np.abs(res.x[perm] - ref["bestfit"])[fl] / err[fl]).max())
    row["derr"] = float((np.abs(res.errors[perm][fl] / err[fl] - 1)).max())
    if numpy_backend:
        pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer())
        model_np, data_np = pyhf_model(name)
        row["pyhf_numpy_fit"], _ = best_of(lambda: pyhf.infer.mle.fit(data_np, model_np), 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--no-numpy", action="store_true", help="skip pyhf's numpy backend (slow)")
    args = ap.parse_args()
    names = args.names or CORPUS.corpus_names()
    print(
        "| workspace | params | status | dNLL vs pyhf | max dpar (sigma) | max dsigma/sigma "
        "| ours first call | pyhf JAX first call | ratio | ours warm fit+Hessian "
        "| pyhf JAX warm fit + Hessian | ratio | our Hessian / pyhf's | pyhf numpy fit | ratio |"
    )
    print("|" + "---|" * 15)
    for n in names:
        r = bench(n, not args.no_numpy)
        pj = r["pyhf_jax_fit"] + r["pyhf_jax_hessian"]
        pn = r.get("pyhf_numpy_fit", np.nan)
        print(
            f"| {n} | {r['npar']} | {r['status']} | {r['dnll']:.1e} | {r['dpar']:.1e} "
            f"| {r['derr']:.1e} | {r['ours_first']:.1f} s | {r['pyhf_first']:.1f} s "
            f"| {r['ours_first'] / r['pyhf_first']:.2f} | {r['ours']:.3f} s "
            f"| {r['pyhf_jax_fit']:.3f} + {r['pyhf_jax_hessian']:.3f} s | {r['ours'] / pj:.2f} "
            f"| {r['ours_hessian']:.4f} / {r['pyhf_jax_hessian']:.4f} s "
            f"= {r['ours_hessian'] / r['pyhf_jax_hessian']:.2f} | {pn:.1f} s | {r['ours'] / pn:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
