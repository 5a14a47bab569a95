"""pyhf's own fit of each corpus workspace, the reference that tests/test_pyhf_corpus.py
compares the fitter with (written to reference.json next to this script).

Everything here is pyhf: its model (``Workspace.model``, ``poi_name=None`` where the
measurement POI is absent), its MLE fit (JAX backend, SciPy optimiser, JAX gradients), then
up to a few Newton steps with the autodiff Hessian of pyhf's own ``-logpdf`` over the free
parameters not at a bound, so that the reference is the minimum of pyhf's likelihood to
numerical precision rather than to the optimiser's stopping tolerance (how far pyhf's optimiser
stopped from it, in sigma, is recorded as ``pyhf_raw_dpar_sigma``). Uncertainties: the inverse
of that Hessian. Run: ``python tests/data/pyhf/make_reference.py [names...]``.
"""

from __future__ import annotations

import gzip
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jsonpatch
import numpy as np
import pyhf

jax.config.update("jax_enable_x64", True)
HERE = Path(__file__).parent


# signal+background workspaces: a published background-only workspace and a signal patch
# (``<name>.patch.json.gz``, a JSON patch) applied by pyhf itself (``Workspace.model(patches=)``)
PATCHED = {"ewk3l_rjmimic_ERJR_200p0_100p0": "ewk3l_rjmimic_bkgonly"}


def corpus_names() -> list[str]:
    """Every corpus entry: the background-only workspaces and the patched ones."""
    return sorted(
        [p.name[: -len(".json.gz")] for p in HERE.glob("*_bkgonly.json.gz")] + list(PATCHED)
    )


def _read(path: Path):
    with gzip.open(path, "rt") as f:
        return json.load(f)


def load(name: str) -> dict:
    """The workspace ``name`` as published (a patched entry: its background-only workspace)."""
    return _read(HERE / f"{PATCHED.get(name, name)}.json.gz")


def patches(name: str) -> list[list[dict]]:
    """The signal patches of corpus entry ``name`` (none for a background-only workspace)."""
    return [_read(HERE / f"{name}.patch.json.gz")] if name in PATCHED else []


def pyhf_model(
    spec: dict, patch_list: list | None = None
) -> tuple[pyhf.Workspace, pyhf.pdf.Model, np.ndarray]:
    ws = pyhf.Workspace(spec)
    patch_list = patch_list or []
    poi = ws.get_measurement()["config"]["poi"]
    # the POI is absent from a background-only model: pyhf's poi_name=None then
    chans = {"channels": ws["channels"]}
    for patch in patch_list:
        chans = jsonpatch.JsonPatch(patch).apply(chans)
    mods = {m["name"] for c in chans["channels"] for s in c["samples"] for m in s["modifiers"]}
    model = ws.model(patches=patch_list, poi_name=poi if poi in mods else None)
    return ws, model, np.asarray(ws.data(model), np.float64)


def reference(name: str) -> dict:
    spec = load(name)
    pyhf.set_backend("jax", pyhf.optimize.scipy_optimizer(tolerance=1e-12, maxiter=100000))
    ws, model, data = pyhf_model(spec, patches(name))
    d = jnp.asarray(data)
    nll = jax.jit(lambda p: -model.logpdf(p, d)[0])
    grad = jax.jit(jax.grad(lambda p: -model.logpdf(p, d)[0]))
    hess = jax.jit(jax.hessian(lambda p: -model.logpdf(p, d)[0]))
    t0 = time.perf_counter()
    bf = np.asarray(pyhf.infer.mle.fit(d, model), np.float64)
    t_fit = time.perf_counter() - t0
    raw = bf.copy()
    fixed = np.array(model.config.suggested_fixed(), bool)
    bounds = np.array(model.config.suggested_bounds(), np.float64)
    steps = 0
    for steps in range(10):  # noqa: B007  (Newton steps with pyhf's autodiff Hessian)
        g = np.asarray(grad(jnp.asarray(bf)))
        # SciPy stops a hair inside a bound the gradient pushes against (1.0000004e-10 for a
        # staterror gamma of a bin without events): such a parameter is at the bound
        near = 1e-9 * (bounds[:, 1] - bounds[:, 0])
        bf = np.where(~fixed & (bf - bounds[:, 0] <= near) & (g > 0), bounds[:, 0], bf)
        bf = np.where(~fixed & (bounds[:, 1] - bf <= near) & (g < 0), bounds[:, 1], bf)
        g = np.asarray(grad(jnp.asarray(bf)))
        at_lo = (bf <= bounds[:, 0]) & (g > 0)
        at_hi = (bf >= bounds[:, 1]) & (g < 0)
        use = ~fixed & ~at_lo & ~at_hi
        H = np.asarray(hess(jnp.asarray(bf)))[np.ix_(use, use)]
        step = np.linalg.solve(H, g[use])
        edm = 0.5 * float(g[use] @ step)
        if edm < 1e-14:
            break
        trial = bf.copy()
        trial[use] = bf[use] - step
        # a parameter the step takes across its bound goes to the bound (projected Newton);
        # there its gradient decides whether it stays (an active bound)
        trial = np.clip(trial, bounds[:, 0], bounds[:, 1])
        f0 = float(nll(jnp.asarray(bf)))
        for _ in range(30):  # backtracking where the quadratic model overshoots
            if float(nll(jnp.asarray(trial))) <= f0:
                break
            trial = 0.5 * (trial + bf)
        else:
            break
        bf = trial
    cov = np.linalg.inv(H)
    err = np.zeros_like(bf)
    err[use] = np.sqrt(np.diag(cov))
    with np.errstate(divide="ignore", invalid="ignore"):
        raw_sig = np.where(err > 0, np.abs(raw - bf) / err, 0.0)
    return {
        "par_names": model.config.par_names,
        "poi": model.config.poi_name,
        "bestfit": bf.tolist(),
        "errors": err.tolist(),
        "fixed": fixed.tolist(),
        "at_bound": (~fixed & ~use).tolist(),
        "nll": float(nll(jnp.asarray(bf))),
        "edm": edm,
        "newton_steps": steps,
        "pyhf_raw_nll": float(nll(jnp.asarray(raw))),
        "pyhf_raw_dpar_sigma": float(raw_sig.max()),
        "pyhf_fit_seconds": t_fit,
        "versions": {"pyhf": pyhf.__version__, "jax": jax.__version__},
    }


def main() -> None:
    names = sys.argv[1:] or corpus_names()
    out_path = HERE / "reference.json"
    ref = json.loads(out_path.read_text()) if out_path.exists() else {}
    for n in names:
        ref[n] = reference(n)
        r = ref[n]
        print(n, len(r["par_names"]), r["nll"], r["edm"], r["pyhf_raw_dpar_sigma"], flush=True)
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(ref, indent=1, sort_keys=True))
        tmp.replace(out_path)


if __name__ == "__main__":
    main()
