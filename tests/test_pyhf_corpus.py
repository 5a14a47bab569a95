"""Published ATLAS likelihoods (pyhf JSON from HEPData, tests/data/pyhf/SOURCES.md) fitted
with default settings and compared with pyhf's own fit of the same workspace.

pyhf's results are stored in tests/data/pyhf/reference.json (``make_reference.py``: pyhf's
model, MLE fit and autodiff Hessian; a full pyhf fit of the larger workspaces takes 10-200 s).
``test_reference_is_pyhfs_minimum`` checks every stored minimum against pyhf's own likelihood
(numpy backend: the NLL there, stationarity by finite differences, names, fixed flags, bounds),
and ``test_reference_is_pyhf`` re-derives the smallest with pyhf's fit (all of them with
``WREMNANTS_PYHF_FULL_REFERENCE=1``), so the stored numbers stay pyhf's.
"""

from __future__ import annotations

import importlib.util
import json
import os
from functools import cache
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pyhf
import pytest

from wremnants_dask.fitting.fitinput import FitInput
from wremnants_dask.fitting.fitter import FitResult, Fitter
from wremnants_dask.fitting.pyhf_io import apply_patches, from_pyhf, to_pyhf

DATA = Path(__file__).parent / "data" / "pyhf"
REFERENCE = json.loads((DATA / "reference.json").read_text())


def _make_reference():
    spec = importlib.util.spec_from_file_location("make_reference", DATA / "make_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CORPUS_FILES = _make_reference()  # which files make each corpus entry (and pyhf's reference)
CORPUS = CORPUS_FILES.corpus_names()
EPS = np.finfo(np.float64).eps

# Tolerances of the issue: our minimum at least as deep as pyhf's (1e-6 in the NLL), the
# parameters within 1e-3 sigma, the uncertainties within 1 %.
TOL_NLL, TOL_SIGMA, TOL_ERR = 1e-6, 1e-3, 0.01


def load(name: str) -> dict:
    """The published workspace of entry ``name`` (background-only)."""
    return CORPUS_FILES.load(name)


def workspace(name: str) -> dict:
    """Entry ``name`` as fitted: the published workspace with its signal patch, if any, applied
    by our ``apply_patches`` (pyhf's reference applies it with its own)."""
    return apply_patches(load(name), CORPUS_FILES.patches(name))


@cache
def imported(name: str) -> FitInput:
    """The import of ``name``, shared by the tests that do not modify it."""
    return from_pyhf(workspace(name))


@cache
def fitted(name: str) -> tuple[Fitter, FitResult]:
    fitter = Fitter(imported(name))
    return fitter, fitter.fit()


def compare(fitter: Fitter, res: FitResult, ref: dict) -> dict[str, float]:
    """Our fit against pyhf's: ``dnll`` our NLL at our minimum minus our NLL at pyhf's (the
    same function, so the constants cancel), ``dpar`` the largest parameter difference in
    pyhf's sigma, ``derr`` the largest relative uncertainty difference, ``convention`` our
    full NLL at pyhf's minimum minus pyhf's ``-logpdf`` there, ``rounding`` the rounding
    scale of pyhf's sum (see ``rounding_scale``)."""
    names = fitter.names
    perm = [ref["par_names"].index(n) for n in names]
    bf = np.asarray(ref["bestfit"])[perm]
    err = np.asarray(ref["errors"])[perm]
    ours_at_ref = float(fitter._nll(jnp.asarray(bf), res.obs))
    floating = err > 0
    dpar = np.abs(res.x - bf)[floating] / err[floating]
    derr = np.abs(res.errors[floating] / err[floating] - 1.0)
    return {
        "dnll": res.nll - ours_at_ref,
        "dpar": float(dpar.max(initial=0.0)),
        "derr": float(derr.max(initial=0.0)),
        "convention": ours_at_ref + fitter._const(res.obs) - ref["nll"],
        "rounding": rounding_scale(fitter.fi),
    }


def rounding_scale(fi: FitInput) -> float:
    """Rounding of pyhf's -logpdf: it adds terms like ``n log(nu)`` and ``lgamma(n + 1)`` whose
    sizes, not the sum, set the absolute error (ATLAS shapesys with tau ~ 2e11 make terms of
    ~5e12, so pyhf's value there is only good to ~1e-3). 16 ulp of the largest sizes."""
    n = np.concatenate([fi.data, fi.param_center[fi.param_constraint == 2]])
    size = np.abs(n * np.log(np.where(n > 0, n, 1.0))).sum()
    return 16 * EPS * max(size, 1.0)


def failures(c: dict[str, float]) -> list[str]:
    out = []
    if not c["dnll"] <= TOL_NLL:
        out.append(f"NLL {c['dnll']:.3g} above pyhf's minimum")
    if not c["dpar"] <= TOL_SIGMA:
        out.append(f"parameter {c['dpar']:.3g} sigma from pyhf's best fit")
    if not c["derr"] <= TOL_ERR:
        out.append(f"uncertainty {c['derr']:.3g} (relative) from pyhf's")
    if not abs(c["convention"]) <= 1e-9 + c["rounding"]:
        out.append(f"NLL differs from pyhf's -logpdf by {c['convention']:.3g}")
    return out


def test_corpus_is_five_analyses_or_more():
    sources = (DATA / "SOURCES.md").read_text()
    assert len(CORPUS) >= 5 and set(CORPUS) <= set(REFERENCE)
    for name in CORPUS:
        suffix = ".patch.json.gz" if CORPUS_FILES.patches(name) else ".json.gz"
        assert f"`{name}{suffix}`" in sources


@pytest.mark.parametrize("name", CORPUS)
def test_corpus_fit_matches_pyhf(name):
    fitter, res = fitted(name)
    ref = REFERENCE[name]
    assert res.status.startswith("converged"), res.status
    assert fitter.pois == ([ref["poi"]] if ref.get("poi") else [])
    assert res.edm <= fitter.opts.tol_edm
    pyhf_fixed = {n for n, f in zip(ref["par_names"], ref["fixed"]) if f}
    assert {n for n, f in zip(fitter.names, fitter.fi.param_fixed) if f} == pyhf_fixed
    pyhf_at_bound = [n for n, b in zip(ref["par_names"], ref["at_bound"]) if b]
    assert sorted(res.at_bounds) == sorted(pyhf_at_bound)
    assert failures(compare(fitter, res, ref)) == []


def test_import_like_pyhf():
    """Background-only workspaces: no POI (pyhf's poi_name=None), settings of absent
    parameters noted, one parameter for a normsys and a histosys of the same name."""
    spec = load("sbottom_regionA_bkgonly")
    fi = from_pyhf(spec)
    assert fi.pois == []
    assert any("'mu_SIG' is not a parameter" in n for n in fi.metadata["notes"])
    shared = set(fi.norm_param.tolist()) & set(fi.add_param.tolist())
    assert len(shared) > 10
    model = pyhf.Workspace(spec).model(poi_name=None)
    assert sorted(fi.param_names) == sorted(model.config.par_names)
    # the measurement's lumi settings (auxdata, sigma, fixed) as pyhf reads them
    fi2 = from_pyhf(load("ewk3l_rjmimic_bkgonly"))
    i = fi2.param_index("lumi")
    assert fi2.param_fixed[i] and fi2.param_width[i] == pytest.approx(0.017)
    assert any("'mu_BG'" in n and "ignored" in n for n in fi2.metadata["notes"])


def test_comparison_catches_a_wrong_fit():
    """The comparison fails for a fit of different data and for a parameter moved by 2e-3
    sigma, so the corpus test can fail."""
    name = "ewk3l_rjmimic_bkgonly"
    ref = REFERENCE[name]
    fitter, res = fitted(name)
    assert failures(compare(fitter, res, ref)) == []
    moved = FitResult(**{**res.__dict__, "x": res.x.copy()})
    k = int(np.argmax(res.errors))
    moved.x[k] += 2e-3 * res.errors[k]
    moved.nll = float(fitter._nll(jnp.asarray(moved.x), res.obs))
    assert any("sigma" in f for f in failures(compare(fitter, moved, ref)))
    # one more count in the first bin: another likelihood, fitted by the same compiled fitter
    data = np.asarray(res.obs["data"]).copy()
    data[0] += 3.0
    other = fitter.fit(obs={"data": jnp.asarray(data), "aux": res.obs["aux"]})
    assert any("sigma" in f for f in failures(compare(fitter, other, ref)))


def _pyhf_fit(spec: dict, modifier_settings: dict | None = None) -> tuple:
    """pyhf's (parameter names, best fit, fixed parameters), numpy backend."""
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer())
    ws = pyhf.Workspace(spec)
    poi = ws.get_measurement()["config"]["poi"]
    mods = {m["name"] for c in spec["channels"] for s in c["samples"] for m in s["modifiers"]}
    # background-only workspaces: the measurement POI is absent from the model
    kw = {"modifier_settings": modifier_settings} if modifier_settings else {}
    model = ws.model(poi_name=poi if poi in mods else None, **kw)
    bf, twice_nll = pyhf.infer.mle.fit(ws.data(model), model, return_fitted_val=True)
    fixed = [n for n, f in zip(model.config.par_names, model.config.suggested_fixed()) if f]
    return model.config.par_names, np.asarray(bf), sorted(fixed), float(twice_nll) / 2


def test_export_roundtrip_keeps_fixed_parameters():
    """A pyhf fit of our export equals a pyhf fit of the original; the measurement's fixed
    lumi stays fixed and a parameter fixed in the fit input is written as fixed."""
    spec = load("ewk3l_rjmimic_bkgonly")
    fi = from_pyhf(spec)
    k = fi.param_index("JET_GroupedNP_1")
    fi.param_fixed[k], fi.param_init[k] = True, 0.3
    spec_out, ms, notes = to_pyhf(fi)
    assert notes == []
    conf = {p["name"]: p for p in spec_out["measurements"][0]["config"]["parameters"]}
    assert conf["lumi"]["fixed"] is True and conf["lumi"]["sigmas"] == [0.017]
    assert conf["JET_GroupedNP_1"] == {"name": "JET_GroupedNP_1", "inits": [0.3], "fixed": True}
    spec_in = json.loads(json.dumps(spec))
    pconf = spec_in["measurements"][0]["config"]["parameters"]
    pconf.append({"name": "JET_GroupedNP_1", "inits": [0.3], "fixed": True})
    names_a, bf_a, fixed_a, nll_a = _pyhf_fit(spec_in)
    names_b, bf_b, fixed_b, nll_b = _pyhf_fit(spec_out, ms)
    assert fixed_a == fixed_b and "lumi" in fixed_a and "JET_GroupedNP_1" in fixed_a
    perm = [names_b.index(n) for n in names_a]
    # two runs of pyhf's SLSQP on one likelihood written two ways agree to its stopping
    # tolerance (~1e-3 in the nuisance parameters here); a dropped fixed flag or a changed
    # constraint moves the minimum by more than that (lumi floating: 0.05 in lumi)
    assert nll_b == pytest.approx(nll_a, abs=1e-6)
    np.testing.assert_allclose(bf_b[perm], bf_a, atol=5e-3)


# pyhf's full re-derivation of a reference (its JAX model, MLE fit at tolerance 1e-12, Newton
# steps with its autodiff Hessian) takes 10-200 s per workspace on 2 cores, most of it pyhf's
# model set-up and compilation: by default only the smallest; all with this variable set.
FULL_REFERENCE = os.environ.get("WREMNANTS_PYHF_FULL_REFERENCE") == "1"


@pytest.mark.parametrize(
    "name",
    [
        n
        if n == "dvmuon_srmet_bkgonly"
        else pytest.param(
            n,
            marks=pytest.mark.skipif(
                not FULL_REFERENCE, reason="set WREMNANTS_PYHF_FULL_REFERENCE=1 (10-200 s each)"
            ),
        )
        for n in CORPUS
    ],
)
def test_reference_is_pyhf(name):
    """The stored reference is what pyhf computes now (same minimum and uncertainties)."""
    old = pyhf.get_backend()
    try:
        new = _make_reference().reference(name)
    finally:
        pyhf.set_backend(*old)
    ref = REFERENCE[name]
    assert new["par_names"] == ref["par_names"]
    err = np.asarray(ref["errors"])
    fl = err > 0
    dx = np.abs(np.asarray(new["bestfit"]) - ref["bestfit"])[fl] / err[fl]
    assert dx.max(initial=0) < 1e-4
    np.testing.assert_allclose(np.asarray(new["errors"])[fl], err[fl], rtol=1e-4)
    assert new["nll"] == pytest.approx(ref["nll"], abs=1e-6)


# finite-difference step of the stationarity check, in units of each parameter's uncertainty:
# the truncation error of a central difference is ~t^2/6 of the curvature (1e-7 sigma), its
# rounding error eps |NLL| / t
FD_STEP = 1e-3


def reference_check(name: str, bestfit: np.ndarray) -> list[str]:
    """What is wrong with ``bestfit`` as pyhf's minimum of workspace ``name``, judged by pyhf's
    own ``-logpdf`` (numpy backend, no compilation): parameter names, fixed flags and bounds
    as pyhf's model has them, the stored NLL equal to pyhf's there, and stationarity: along
    each free parameter not at a bound, the central-difference slope over the square root of
    the curvature (the Newton step in units of the conditional sigma) below 1e-4, unless
    pyhf's sum rounds too coarsely to tell (``rounding_scale`` / FD_STEP above 1e-5: the
    shapesys gammas of the 3L RJ-mimic workspace, tau ~ 2e11)."""
    ref = REFERENCE[name]
    spec = load(name)
    old = pyhf.get_backend()
    pyhf.set_backend("numpy")
    try:
        ws = pyhf.Workspace(spec, validate=False)  # our import validates the same file
        fixed = np.asarray(ref["fixed"], bool)
        use = ~fixed & ~np.asarray(ref["at_bound"], bool)
        idx = np.nonzero(use)[0]
        n = 2 * len(idx) + 1
        model = ws.model(
            patches=CORPUS_FILES.patches(name),
            poi_name=ref.get("poi"),
            validate=False,
            batch_size=n,
        )
        data = np.asarray(ws.data(model), np.float64)
        out = []
        if model.config.par_names != ref["par_names"]:
            return ["parameter names differ from pyhf's"]
        if list(model.config.suggested_fixed()) != list(fixed):
            out.append("fixed parameters differ from pyhf's")
        bounds = np.asarray(model.config.suggested_bounds(), np.float64)
        at_bound = np.asarray(ref["at_bound"], bool)
        if not np.all((bestfit == bounds[:, 0]) | (bestfit == bounds[:, 1]) | ~at_bound):
            out.append("a parameter stored at a bound is not at pyhf's bound")
        h = FD_STEP * np.asarray(ref["errors"])[idx]
        pts = np.tile(bestfit, (n, 1))
        pts[1 + np.arange(len(idx)), idx] += h
        pts[1 + len(idx) + np.arange(len(idx)), idx] -= h
        f = -np.asarray(model.logpdf(pts, data), np.float64)
    finally:
        pyhf.set_backend(*old)
    rounding = rounding_scale(imported(name))
    if not abs(f[0] - ref["nll"]) <= TOL_NLL + rounding:
        out.append(f"stored NLL {ref['nll']!r} is not pyhf's {f[0]!r}")
    fp, fm = f[1 : 1 + len(idx)], f[1 + len(idx) :]
    slope = (fp - fm) / (2 * h)
    curv = (fp + fm - 2 * f[0]) / h**2
    step = np.abs(slope) / np.sqrt(np.where(curv > 0, curv, np.nan))
    if rounding / FD_STEP <= 1e-5 and not np.nanmax(step, initial=0.0) < 1e-4:
        worst = ref["par_names"][idx[int(np.nanargmax(step))]]
        out.append(f"not pyhf's minimum: Newton step {np.nanmax(step):.2g} sigma along {worst}")
    if rounding / FD_STEP <= 1e-5 and np.any(curv <= 0):
        out.append("pyhf's curvature not positive at the stored minimum")
    return out


@pytest.mark.parametrize("name", CORPUS)
def test_reference_is_pyhfs_minimum(name):
    """Every stored reference is pyhf's minimum of pyhf's likelihood now (see reference_check;
    ~0.1-9 s each with pyhf's numpy backend, where its full re-derivation takes 10-200 s)."""
    assert reference_check(name, np.asarray(REFERENCE[name]["bestfit"])) == []


def test_reference_check_catches_a_moved_minimum():
    """The check fails for pyhf's minimum moved by 2e-3 sigma in one parameter."""
    name = "sbottom_regionA_bkgonly"
    ref = REFERENCE[name]
    x = np.asarray(ref["bestfit"]).copy()
    err = np.asarray(ref["errors"])
    k = int(np.argmax(err))
    x[k] += 2e-3 * err[k]
    assert any("not pyhf's minimum" in m for m in reference_check(name, x))


def test_status_names_parameters_at_bounds():
    """A bin without events pulls its staterror gamma to pyhf's lower bound (nu sigma^2 > 1):
    converged, that parameter named in the status, the rest as pyhf's fit."""
    spec = {
        "channels": [
            {
                "name": "c",
                "samples": [
                    {
                        "name": "bkg",
                        "data": [6.0, 50.0, 40.0],
                        "modifiers": [
                            {"name": "norm", "type": "normfactor", "data": None},
                            {"name": "st", "type": "staterror", "data": [3.0, 5.0, 4.0]},
                        ],
                    }
                ],
            }
        ],
        "observations": [{"name": "c", "data": [0.0, 55.0, 38.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }
    fitter = Fitter(from_pyhf(spec))
    res = fitter.fit()
    assert res.status == "converged with parameters at bounds: st[0]"
    assert res.x[fitter.fi.param_index("st[0]")] == 1e-10
    assert res.errors[fitter.fi.param_index("st[0]")] == 0.0
    names, bf, _, nll = _pyhf_fit(spec)
    perm = [names.index(n) for n in fitter.names]
    assert res.nll_full <= nll + 1e-9
    np.testing.assert_allclose(res.x, bf[perm], atol=1e-4)  # pyhf's SLSQP stopping tolerance


def test_cli_fits_a_published_workspace(tmp_path, capsys):
    """``wremnants-fit BkgOnly.json.gz -o out``: the notes of the import are printed,
    the fit without POI runs and writes its results."""
    from wremnants_dask.fitting.cli import main

    rc = main([str(DATA / "dvmuon_srmet_bkgonly.json.gz"), "-o", str(tmp_path)])
    assert rc == 0
    assert "note: measurement POI 'mu_Sig' is not a parameter" in capsys.readouterr().err
    assert (tmp_path / "fitresults.hdf5").exists()
