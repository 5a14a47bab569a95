"""Run the peer fitters (rabbit, pyhf+JAX) on the synthetic W-mass model, one subprocess each.

Why subprocesses: wall time must include each fitter's own start-up and its peak RSS must be
its own (TensorFlow and JAX never give memory back), and a runaway fit (pyhf at 1000+
systematics) must be killable at a time or memory limit without taking the benchmark down.

Each worker prints one line ``RESULT_JSON {...}`` with its internal phase times (``fit_s``,
``cov_s``) and its peak RSS after each phase (``getrusage``); the parent adds the process wall
time and the peak RSS of the whole process tree (``/usr/bin/time -v`` where available, else the
psutil poll). Inputs are written by the parent first, so the workers only load their own input.

Peers:

* rabbit (``rabbit-fit``, TensorFlow): input written with ``rabbit.tensorwriter.TensorWriter``
  (dense, log-normal, asymmetric); the fit is rabbit's own ``Fitter.minimize`` (scipy
  trust-krylov) and the covariance its ``loss_val_grad_hess`` + ``edmval_cov``, i.e. exactly
  what ``rabbit_fit INPUT -t 0 --POIMode none`` does, minus the output file. Or, with
  ``cli=True``, the real ``rabbit_fit`` CLI (then only process wall and peak RSS).
* pyhf (JAX backend): a HistFactory workspace with one ``histosys`` per (systematic,
  process), ``normsys`` for the norms, ``staterror`` for MC stat (pyhf's Barlow-Beeston lite,
  2880 extra Gaussian-constrained parameters, where rabbit profiles them analytically);
  interpolation code4p (histosys) and code4 (normsys). pyhf cannot leave a constrained
  modifier unconstrained, so the mass histosys carries ``MASS_SCALE`` times the +-100 MeV
  variation (its unit Gaussian constraint is then 1 GeV wide, negligible next to the data).
  Fit with ``pyhf.infer.mle.fit`` (scipy SLSQP by default, or iminuit); covariance = inverse of
  the JAX Hessian of ``-logpdf`` at the minimum (scipy), or Minuit's HESSE (minuit).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.synthetic_fit_model import SHAPE, SyntheticFitModel, _hist  # noqa: E402

MASS_SCALE = 10.0  # pyhf mass histosys = 10 x (+-100 MeV) templates: constraint width 1 GeV
RESULT_TAG = "RESULT_JSON "


# ------------------------------------------------------------------ process runner
def _peak_rss_gb() -> float:
    """Peak RSS of this process so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _emit(result: dict[str, Any]) -> None:
    print(RESULT_TAG + json.dumps(result, default=float), flush=True)


def run_limited(
    cmd: list[str],
    *,
    timeout_s: float,
    mem_limit_gb: float,
    log_path: Path,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``cmd`` niced, killing its process group past ``timeout_s`` or ``mem_limit_gb``.

    Returns wall_s, peak_rss_gb (max of /usr/bin/time -v and a 0.2 s psutil poll of the tree),
    rc, status ("ok", "failed", "> limit (time)", "> limit (memory)") and the worker's JSON."""
    import psutil

    log_path.parent.mkdir(parents=True, exist_ok=True)
    timev = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    full = ["nice", "-n", "10", *([timev, "-v"] if timev else []), *cmd]
    t0 = time.perf_counter()
    status, peak = "ok", 0.0
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            full,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                rss = sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)]) / 1024**3
            except psutil.Error:
                rss = 0.0
            peak = max(peak, rss)
            over_t = time.perf_counter() - t0 > timeout_s
            over_m = rss > mem_limit_gb
            if over_t or over_m:
                status = "> limit (time)" if over_t else "> limit (memory)"
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.2)
    wall = time.perf_counter() - t0
    text = log_path.read_text(errors="replace")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if m:
        peak = max(peak, int(m.group(1)) / 1024**2)
    if status == "ok" and proc.returncode != 0:
        status = "failed"
    worker: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith(RESULT_TAG):
            worker = json.loads(line[len(RESULT_TAG) :])
    out = {"status": status, "rc": proc.returncode, "wall_s": wall, "peak_rss_gb": peak}
    out.update(worker)
    if status != "ok":
        lines = [ln for ln in text.splitlines() if ln.strip() and "\t" not in ln[:1]]
        out["error"] = " | ".join(lines[-3:])[-400:]
    out["log"] = str(log_path)
    return out


# ------------------------------------------------------------------ rabbit
def write_rabbit_input(model: SyntheticFitModel, path: Path, sparse: bool = False) -> Path:
    """Write the model with rabbit's own ``TensorWriter`` (log-normal, asymmetric up/down).

    Norm systematics go through ``add_systematic`` with constant up/down templates: rabbit
    0.2.5's ``add_norm_systematic`` passes the process list where one name is expected for
    asymmetric kappas (unhashable-list error); a constant log-ratio is the same model."""
    from rabbit import tensorwriter

    w = tensorwriter.TensorWriter(sparse=sparse, systematic_type="log_normal")
    axes = _hist(model.data).axes
    ch = "ch0"
    w.add_channel(axes, ch)
    w.add_data(model.data.reshape(SHAPE), ch)
    for p, name in enumerate(model.processes):
        w.add_process(
            model.nominal[:, p].reshape(SHAPE),
            name,
            ch,
            signal=False,
            variances=model.sumw2[:, p].reshape(SHAPE),
        )
    nom = model.nominal

    def add(name: str, p: int, lu: np.ndarray, ld: np.ndarray, **kw: Any) -> None:
        up = (nom[:, p] * np.exp(lu)).reshape(SHAPE)
        if np.allclose(ld, -lu, rtol=0, atol=1e-15):
            w.add_systematic(up, name, model.processes[p], ch, **kw)
        else:
            dn = (nom[:, p] * np.exp(ld)).reshape(SHAPE)
            w.add_systematic([up, dn], name, model.processes[p], ch, symmetrize=None, **kw)

    for p in np.nonzero(np.any(model.mass_logup != 0, axis=0))[0]:
        add(
            model.mass_name,
            int(p),
            model.mass_logup[:, p],
            model.mass_logdown[:, p],
            constrained=False,
            noi=True,
        )
    for k, sname in enumerate(model.syst_names):
        for p in model.syst_processes(k):
            add(sname, p, model.syst_logup[:, p, k], model.syst_logdown[:, p, k])
    for j, nname in enumerate(model.norm_names):
        for p in np.nonzero(model.norm_logkup[:, j] != 0)[0]:
            lu = np.full(model.nbins, model.norm_logkup[p, j])
            ld = np.full(model.nbins, model.norm_logkdown[p, j])
            add(nname, int(p), lu, ld)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w.write(outfolder=str(path.parent), outfilename=path.name)
    return path


def _rabbit_worker(ns: argparse.Namespace) -> None:
    """Rabbit's own fit (+ Hessian covariance) on a rabbit input file; prints RESULT_JSON."""
    t_start = time.perf_counter()
    from bin.rabbit_fit import make_parser  # rabbit-fit installs its CLI as package ``bin``
    from rabbit import fitter, inputdata
    from rabbit.tfhelpers import edmval_cov

    sys.argv = ["rabbit_fit", ns.input, "-t", "0", "--POIMode", "none", "--unblind"]
    args = make_parser()
    indata = inputdata.FitInputData(args.filename)
    f = fitter.Fitter(indata, args, do_blinding=False)
    f.defaultassign()
    f.set_nobs(indata.data_obs)
    t_load = time.perf_counter()
    f.minimize()
    t_fit = time.perf_counter()
    res: dict[str, Any] = {
        "load_s": t_load - t_start,
        "fit_s": t_fit - t_load,
        "peak_fit_gb": _peak_rss_gb(),
        "npar": int(len(f.parms)),
        "nll": float(f.reduced_nll().numpy()),
    }
    parms = [p.decode() if isinstance(p, bytes) else str(p) for p in f.parms]
    imass = parms.index(ns.mass_name)
    res["mass"] = float(f.x.numpy()[imass])
    if ns.cov:
        _val, grad, hess = f.loss_val_grad_hess()
        edm, cov = edmval_cov(grad, hess)
        t_cov = time.perf_counter()
        res.update(
            cov_s=t_cov - t_fit,
            peak_cov_gb=_peak_rss_gb(),
            edm=float(edm),
            mass_err=float(np.sqrt(np.asarray(cov)[imass, imass])),
        )
    _emit(res)


def run_rabbit(
    input_path: Path,
    workdir: Path,
    *,
    mass_name: str,
    covariance: bool = True,
    cli: bool = False,
    timeout_s: float = 600,
    mem_limit_gb: float = 18.0,
) -> dict[str, Any]:
    """Rabbit in a subprocess: our phase-timed driver, or (``cli``) the real ``rabbit_fit``."""
    tag = "cli" if cli else "drv"
    if cli:
        cmd = [shutil.which("rabbit_fit") or "rabbit_fit", str(input_path), "-o", str(workdir)]
        cmd += ["-t", "0", "--POIMode", "none", "--unblind"]
        cmd += [] if covariance else ["--noHessian"]
    else:
        cmd = [sys.executable, "-m", "bench.fit_peers", "rabbit-worker", str(input_path)]
        cmd += ["--mass-name", mass_name] + (["--cov"] if covariance else [])
    out = run_limited(
        cmd,
        timeout_s=timeout_s,
        mem_limit_gb=mem_limit_gb,
        log_path=workdir / f"rabbit_{tag}{'_cov' if covariance else ''}.log",
        env={"TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    out.update(peer="rabbit" + (" (CLI)" if cli else ""), mode="fit+cov" if covariance else "fit")
    return out


# ------------------------------------------------------------------ pyhf
def pyhf_workspace(
    model: SyntheticFitModel, *, staterror: bool = True, mass_scale: float = MASS_SCALE
) -> dict[str, Any]:
    """HistFactory spec of the model (one channel of 2880 bins, one sample per process)."""
    nom = model.nominal
    samples = []
    for p, pname in enumerate(model.processes):
        mods: list[dict[str, Any]] = []
        if np.any(model.mass_logup[:, p] != 0):
            hi = nom[:, p] + mass_scale * (nom[:, p] * np.exp(model.mass_logup[:, p]) - nom[:, p])
            lo = nom[:, p] + mass_scale * (nom[:, p] * np.exp(model.mass_logdown[:, p]) - nom[:, p])
            mods.append(
                {
                    "name": model.mass_name,
                    "type": "histosys",
                    "data": {"hi_data": hi.tolist(), "lo_data": lo.tolist()},
                }
            )
        touched = np.nonzero(
            np.any(model.syst_logup[:, p, :] != 0, axis=0)
            | np.any(model.syst_logdown[:, p, :] != 0, axis=0)
        )[0]
        for k in touched:
            hi = nom[:, p] * np.exp(model.syst_logup[:, p, k])
            lo = nom[:, p] * np.exp(model.syst_logdown[:, p, k])
            mods.append(
                {
                    "name": model.syst_names[k],
                    "type": "histosys",
                    "data": {"hi_data": hi.tolist(), "lo_data": lo.tolist()},
                }
            )
        for j in np.nonzero(model.norm_logkup[p, :] != 0)[0]:
            mods.append(
                {
                    "name": model.norm_names[j],
                    "type": "normsys",
                    "data": {
                        "hi": float(np.exp(model.norm_logkup[p, j])),
                        "lo": float(np.exp(model.norm_logkdown[p, j])),
                    },
                }
            )
        if staterror:
            mods.append(
                {"name": "mcstat", "type": "staterror", "data": np.sqrt(model.sumw2[:, p]).tolist()}
            )
        samples.append({"name": pname, "data": nom[:, p].tolist(), "modifiers": mods})
    return {
        "version": "1.0.0",
        "channels": [{"name": "ch0", "samples": samples}],
        "observations": [{"name": "ch0", "data": model.data.tolist()}],
        "measurements": [{"name": "meas", "config": {"poi": model.mass_name, "parameters": []}}],
    }


def write_pyhf_workspace(model: SyntheticFitModel, path: Path, **kw: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(pyhf_workspace(model, **kw)))
    return path


def _pyhf_worker(ns: argparse.Namespace) -> None:
    """pyhf (JAX) fit of a workspace file (+ covariance); prints RESULT_JSON."""
    t_start = time.perf_counter()
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import pyhf

    opt = pyhf.optimize.minuit_optimizer() if ns.optimizer == "minuit" else None
    pyhf.set_backend("jax", opt) if opt else pyhf.set_backend("jax")
    ws = pyhf.Workspace(json.loads(Path(ns.input).read_text()))
    model = ws.model(
        modifier_settings={
            "normsys": {"interpcode": "code4"},
            "histosys": {"interpcode": "code4p"},
        }
    )
    data = jnp.asarray(ws.data(model))
    t_load = time.perf_counter()
    res: dict[str, Any] = {"load_s": t_load - t_start, "npar": int(model.config.npars)}
    imass = model.config.par_slice(model.config.poi_name).start
    want_unc = ns.cov and ns.optimizer == "minuit"
    out = pyhf.infer.mle.fit(data, model, return_uncertainties=want_unc, return_fitted_val=True)
    t_fit = time.perf_counter()
    (best, nll2) = out
    best = jnp.asarray(best)
    res.update(fit_s=t_fit - t_load, peak_fit_gb=_peak_rss_gb(), nll=float(nll2) / 2)
    pars = best[:, 0] if want_unc else best
    res["mass"] = float(pars[imass]) * MASS_SCALE
    if ns.cov:
        if want_unc:
            err = float(best[imass, 1])
        else:
            nll = lambda p: -model.logpdf(p, data)[0]  # noqa: E731
            hess = jax.jit(jax.hessian(nll))(pars)
            cov = np.linalg.inv(np.asarray(hess))
            err = float(np.sqrt(cov[imass, imass]))
        res.update(
            cov_s=time.perf_counter() - t_fit,
            peak_cov_gb=_peak_rss_gb(),
            mass_err=err * MASS_SCALE,
        )
    _emit(res)


def run_pyhf(
    ws_path: Path,
    workdir: Path,
    *,
    optimizer: str = "scipy",
    covariance: bool = True,
    timeout_s: float = 600,
    mem_limit_gb: float = 18.0,
) -> dict[str, Any]:
    """pyhf+JAX in a subprocess (fit, then covariance, timed separately)."""
    cmd = [sys.executable, "-m", "bench.fit_peers", "pyhf-worker", str(ws_path)]
    cmd += ["--optimizer", optimizer] + (["--cov"] if covariance else [])
    out = run_limited(
        cmd,
        timeout_s=timeout_s,
        mem_limit_gb=mem_limit_gb,
        log_path=workdir / f"pyhf_{optimizer}.log",
        env={"XLA_FLAGS": os.environ.get("XLA_FLAGS", "")},
    )
    label = "SLSQP" if optimizer == "scipy" else "minuit"
    out.update(peer=f"pyhf jax+{label}", mode="fit+cov" if covariance else "fit")
    return out


# ------------------------------------------------------------------ our fitter
def _ours_worker(ns: argparse.Namespace) -> None:
    """Our fitter on a FitInput file (public API when it exists, else the internal pieces)."""
    t_start = time.perf_counter()
    from wremnants_dask import fitting

    fi, _meta = fitting.read_fit_input(ns.input)
    t_load = time.perf_counter()
    res: dict[str, Any] = {"load_s": t_load - t_start, "npar": fi.npar}
    imass = fi.param_index(ns.mass_name)
    public = getattr(fitting, "fit", None)
    if callable(public):  # the fitter's public entry point, once it exists
        r = public(fi, covariance=ns.cov)
        x = np.asarray(r["x"] if isinstance(r, dict) else r.x)
        total = time.perf_counter() - t_load
        res.update(api="fitting.fit", mass=float(x[imass]), fitcov_s=total)
        t_fit, t_hess = getattr(r, "time_fit", None), getattr(r, "time_hessian", None)
        if t_fit:  # the fitter's own phase timers (FitResult.time_fit / time_hessian)
            res.update(fit_s=t_fit, cov_s=t_hess if ns.cov else None)
        else:
            res["fit_s"] = total
        res.update(fit_status=getattr(r, "status", None), niter=getattr(r, "niter", None))
        cov = r.get("cov") if isinstance(r, dict) else getattr(r, "cov", None)
        if cov is not None:
            res["mass_err"] = float(np.sqrt(np.asarray(cov)[imass, imass]))
        res["peak_cov_gb" if ns.cov else "peak_fit_gb"] = _peak_rss_gb()
        _emit(res)
        return
    import jax
    import jax.numpy as jnp

    from wremnants_dask.fitting.minimizer import make_minimizer
    from wremnants_dask.fitting.model import FitModel

    model = FitModel(fi)
    minimize = make_minimizer(model)
    free = jnp.asarray(1.0 - fi.param_fixed.astype(np.float64))
    r = minimize(jnp.asarray(model.x0), model.obs, free)
    x = r["x"].block_until_ready()
    t_fit = time.perf_counter()
    res.update(
        api="internal FitModel+make_minimizer",
        fit_s=t_fit - t_load,
        peak_fit_gb=_peak_rss_gb(),
        mass=float(x[imass]),
        nll=float(r["nll"]),
        fit_status=int(r["status"]),
        niter=int(r["niter"]),
    )
    if ns.cov:
        hess = jax.jit(jax.hessian(lambda v: model.nll(v, model.obs)))(x)
        cov = np.linalg.inv(np.asarray(hess))
        res.update(
            cov_s=time.perf_counter() - t_fit,
            peak_cov_gb=_peak_rss_gb(),
            mass_err=float(np.sqrt(cov[imass, imass])),
        )
    _emit(res)


def run_ours_file(
    input_path: Path,
    workdir: Path,
    *,
    mass_name: str,
    covariance: bool = True,
    timeout_s: float = 600,
    mem_limit_gb: float = 18.0,
) -> dict[str, Any]:
    """Our fitter in a subprocess on a FitInput HDF5 written by ``to_fit_input``."""
    cmd = [sys.executable, "-m", "bench.fit_peers", "ours-worker", str(input_path)]
    cmd += ["--mass-name", mass_name] + (["--cov"] if covariance else [])
    out = run_limited(
        cmd, timeout_s=timeout_s, mem_limit_gb=mem_limit_gb, log_path=workdir / "ours.log"
    )
    out.update(peer="wremnants_dask", mode="fit+cov" if covariance else "fit")
    return out


def main(argv: list[str] | None = None) -> None:
    """Worker entry points (run by the parent in a fresh process)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("rabbit-worker", "pyhf-worker", "ours-worker"):
        s = sub.add_parser(name)
        s.add_argument("input")
        s.add_argument("--cov", action="store_true")
        s.add_argument("--mass-name", default="massShift100MeV")
        s.add_argument("--optimizer", choices=["scipy", "minuit"], default="scipy")
    ns = ap.parse_args(argv)
    {"rabbit-worker": _rabbit_worker, "pyhf-worker": _pyhf_worker, "ours-worker": _ours_worker}[
        ns.cmd
    ](ns)


if __name__ == "__main__":
    main()
