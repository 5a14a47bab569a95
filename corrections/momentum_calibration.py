"""Muon momentum calibration from Z -> mu mu: fit, closure, payload.

Input (read by ``cli.mucalib.read_inputs``): the histmaker output of ``mz_mucalib``
(processors/mucalib.py): per category (eta bin of the positive muon, of the negative muon,
event-number parity) the mll histogram of data, the normalised simulation's per-event
expectation model and its changes for each calibration parameter (+- one step), and the
simulation's realised mll. Parameters: the relative momentum scale of data relative to
simulation in each eta bin (delta_i: data pT = (1 + delta_i) x simulated pT) and the resolution
ratio data/simulation in each |eta| region (k_r), fitted as k_r^2 - 1: the data resolution is
the simulation's with extra smearing added in quadrature, so the template is nearly linear in
k^2; k and its covariance follow (first-order propagation).

The prediction in category c, mll bin b is n_c s_cb(x) with a free normalisation n_c per
category (only the mll shapes are used: efficiency differences do not bias the calibration) and
s(x) = nominal + sum_p [x_p (U_p - D_p) / 2 + x_p^2 (U_p + D_p) / 2], x_p the parameter in
units of its template step (U, D: the up/down changes), exact to second order per parameter.
Fit: iteratively reweighted least squares with variance n s + n^2 var_MC (the Poisson score
equations, with the simulation's statistical variance added; without it the multinomial
maximum likelihood), the normalisations profiled exactly in each Gauss-Newton step (Schur
complement), steps damped when they stop shrinking; covariance of the parameters = the inverse
of that profiled information at the minimum.

Template-noise bias, removed by a split-sample (jackknife) extrapolation: the templates are
sums over a finite set of simulated events, and their noise biases the estimates by b / N_MC
(to first order; the expectation of a noisy template is right, the fit is not linear in it): a
wider response smooths the template's fluctuations, which the independent data do not share,
and the resolution derivative (the curvature of each event's Gaussian, summed) is the noisiest
template. Measured on 8 pseudo-data samples against the generator truth: resolution-ratio pulls
+0.61 on average with 150k simulated events for ~11k data (+0.08 with 600k). The fit is
therefore repeated with the templates of each event-number half alone (bias 2 b / N_MC) and the
estimate is x = 2 x_all - (x_even + x_odd) / 2, whose bias is of order 1 / N_MC^2 (same samples:
-0.09 and -0.04); the covariance is the full sample's.

Closure (of the method): the even half of the simulation makes the templates, the realised
odd half (reweighted to effective unit-weight counts) is the pseudo-data, whose true scale is
that of the simulation; one residual scale per resolution region is fitted. Everything the
method does not model (template noise, the selection on reconstructed pT at the 26 GeV
threshold, the mll window, the Gaussian approximation of the response) shows up there. The
closure uncertainty of region r is max(|residual|, its error): a residual consistent with zero
is bounded by what the closure sample resolves.

The payload (``write_payload``) is a correctionlib CorrectionSet written atomically, with the
fit's provenance, covariance and closure in its description; ``MomentumCalibration`` reads it.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wremnants_dask.corrections.payload import CorrectionError

#: correction names of the calibration payload -> inputs
CALIB_CORRECTIONS: dict[str, tuple[str, ...]] = {
    "muon_calib_scale": ("eta",),
    "muon_calib_resolution_ratio": ("abseta",),
    "muon_calib_scale_eigen": ("eigen", "eta"),
    "muon_calib_resolution_eigen": ("eigen", "abseta"),
    "muon_calib_closure": ("abseta",),
}
FORMAT = "wremnants_dask.momentum_calibration/1"
#: Categories with fewer data events than this are left out of the fit (their free
#: normalisation would only absorb noise).
MIN_CATEGORY_EVENTS = 5.0
#: Floor of the bin variance (events^2): keeps the weights finite where the prediction is ~0.
VAR_FLOOR = 0.1
#: mll bins merged for the fit (the histograms have 0.5 GeV bins: 2 GeV).
REBIN = 4
#: Template steps beyond which a non-converged fit is reported as an extrapolation (the CI
#: chain's ~800 data Z leave the barrel resolution ratio at ~10 steps, k^2 ~ 3).
EXTRAPOLATION_STEPS = 3.0


class CalibrationError(CorrectionError):
    """Bad calibration input or payload (the message names the file and the item); a
    CorrectionError, so the histmaker reports it as one line."""


# ----------------------------------------------------------------------------- inputs
@dataclass
class CalibInputs:
    """Arrays of the calibration fit: categories (etaPlus, etaMinus, oddEvent) x mll bins."""

    eta_edges: np.ndarray
    res_edges: np.ndarray
    scale_step: float
    res_step: float
    data: np.ndarray  # (nP, nM, 2, B)
    mc: np.ndarray  # (nP, nM, 2, B): the expectation model, normalised to the data luminosity
    mc_var: np.ndarray
    mc_real: np.ndarray  # (nP, nM, 2, B): realised simulated events, normalised
    mc_real_var: np.ndarray
    delta: np.ndarray  # (nP, nM, 2, B, 3 * n_params): [up, down, nominal] of affected events
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_scale(self) -> int:
        return self.eta_edges.size - 1

    @property
    def n_res(self) -> int:
        return self.res_edges.size - 1

    def param_names(self) -> list[str]:
        e, r = self.eta_edges, self.res_edges
        return [f"scale_eta{e[i]:+.2f}_{e[i + 1]:+.2f}" for i in range(self.n_scale)] + [
            f"resolution_abseta{r[i]:.2f}_{r[i + 1]:.2f}" for i in range(self.n_res)
        ]

    def region_of_scale_bins(self) -> np.ndarray:
        """Resolution region of each scale bin (by the bin centre's |eta|)."""
        c = np.abs(0.5 * (self.eta_edges[1:] + self.eta_edges[:-1]))
        return np.clip(np.searchsorted(self.res_edges, c, side="right") - 1, 0, self.n_res - 1)


# ----------------------------------------------------------------------------- fit
@dataclass
class LinearTemplates:
    """Flattened fit problem: categories x bins with quadratic per-parameter templates."""

    data: np.ndarray  # (C, B)
    nominal: np.ndarray  # (C, B)
    nominal_var: np.ndarray  # (C, B)
    lin: np.ndarray  # (C, B, P): (U - D) / 2
    quad: np.ndarray  # (C, B, P): (U + D) / 2
    # the template's own statistical variance as a function of x, per parameter:

    def shape(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """s(x) and ds/dx."""
        s = self.nominal + self.lin @ x + self.quad @ (x * x)
        return s, self.lin + 2.0 * self.quad * x


@dataclass
class FitResult:
    x: np.ndarray  # parameters in template-step units
    cov_x: np.ndarray
    norms: np.ndarray
    chi2: float
    ndf: int
    iterations: int


def fit_templates(t: LinearTemplates, *, max_iter: int = 300, tol: float = 1e-6) -> FitResult:
    """IRLS Gauss-Newton with the per-category normalisations profiled (see module doc);
    converged when no parameter (template-step units) moves by more than ``tol``, nor any
    category's predicted yield by more than ``tol`` of its statistical error."""
    n_par = t.lin.shape[-1]
    x = np.zeros(n_par)
    s0 = t.nominal.sum(axis=1)
    norms = np.where(s0 > 0, t.data.sum(axis=1) / np.where(s0 > 0, s0, 1.0), 0.0)
    info = np.zeros((n_par, n_par))
    damping, last_size = 1.0, np.inf
    n_iter = 0
    converged = False
    while n_iter < max_iter:
        n_iter += 1
        s, ds = t.shape(x)
        pred = norms[:, None] * s
        var = np.maximum(pred + norms[:, None] ** 2 * t.nominal_var, VAR_FLOOR)
        r = (t.data - pred) / np.sqrt(var)  # residuals
        w = 1.0 / np.sqrt(var)
        jn = s * w  # d pred / d n_c, weighted (C, B)
        jx = norms[:, None, None] * ds * w[..., None]  # (C, B, P)
        a = np.einsum("cb,cb->c", jn, jn)
        anx = np.einsum("cb,cbp->cp", jn, jx)
        axx = np.einsum("cbp,cbq->pq", jx, jx)
        gn = np.einsum("cb,cb->c", jn, r)
        gx = np.einsum("cbp,cb->p", jx, r)
        # information of the parameters with the normalisations profiled (Schur complement)
        inv_a = np.where(a > 0, 1.0 / np.where(a > 0, a, 1.0), 0.0)
        info = axx - anx.T @ (anx * inv_a[:, None])
        rhs = gx - anx.T @ (gn * inv_a)
        try:
            dx = np.linalg.solve(info, rhs)
        except np.linalg.LinAlgError:
            raise CalibrationError(
                "calibration fit: singular information matrix (a parameter without events?)"
            ) from None
        if np.any(np.linalg.eigvalsh(info) <= 0):
            raise CalibrationError(
                "calibration fit: information matrix not positive definite (too few events?)"
            )
        dn = (gn - anx @ dx) * inv_a
        # under-relax when the steps stop shrinking: the reweighting (V from the prediction)
        # can cycle where templates with negative weights have bins <= 0
        size = float(np.max(np.abs(dx)))
        if size >= last_size:
            damping = max(damping / 2.0, 1.0 / 64.0)
        last_size = size
        x = x + damping * dx
        norms = norms + damping * dn
        # a category's normalisation has converged when its predicted yield moves by less than
        # tol of its statistical error (relative changes of near-empty categories may not settle)
        moved = np.abs(dn) * s.sum(axis=1) / np.sqrt(t.data.sum(axis=1) + 1.0)
        if np.max(np.abs(dx)) < tol and np.max(moved) < tol:
            converged = True
            break
    if not converged:
        far = float(np.max(np.abs(x)))
        hint = (
            f" (a parameter at {far:.1f} template steps, {t.data.sum():.0f} data events: the "
            "quadratic templates extrapolated far beyond their step turn negative)"
            if far > EXTRAPOLATION_STEPS
            else ""
        )
        raise CalibrationError(f"calibration fit: no convergence in {max_iter} iterations{hint}")
    s, _ = t.shape(x)
    pred = norms[:, None] * s
    var = np.maximum(pred + norms[:, None] ** 2 * t.nominal_var, VAR_FLOOR)
    chi2 = float(np.sum((t.data - pred) ** 2 / var))
    ndf = int(t.data.size - n_par - np.count_nonzero(norms))
    return FitResult(x, np.linalg.inv(info), norms, chi2, ndf, n_iter)


def _rebin(a: np.ndarray, factor: int) -> np.ndarray:
    """Sum groups of ``factor`` adjacent bins of the last axis (its size must be a multiple)."""
    return a.reshape(*a.shape[:-1], a.shape[-1] // factor, factor).sum(axis=-1)


def _templates(inp: CalibInputs, rebin: int = 1) -> tuple[LinearTemplates, np.ndarray]:
    """Flatten the categories of ``inp`` (both event-number halves together) and drop the
    empty ones. Returns the templates and the kept category mask."""
    arrays = (inp.data, inp.mc, inp.mc_var, inp.delta)
    data, mc, var, delta = (a.sum(axis=2) for a in arrays)
    if rebin > 1:
        data, mc, var = (_rebin(a, rebin) for a in (data, mc, var))
        delta = np.moveaxis(_rebin(np.moveaxis(delta, -1, 0), rebin), 0, -1)
    nb = data.shape[-1]
    data, mc, var = data.reshape(-1, nb), mc.reshape(-1, nb), var.reshape(-1, nb)
    delta = delta.reshape(-1, nb, delta.shape[-1])
    base = delta[..., 2::3]
    up, down = delta[..., 0::3] - base, delta[..., 1::3] - base
    keep = (data.sum(axis=1) >= MIN_CATEGORY_EVENTS) & (mc.sum(axis=1) > 0)
    t = LinearTemplates(
        data[keep],
        mc[keep],
        var[keep],
        0.5 * (up - down)[keep],
        0.5 * (up + down)[keep],
    )
    return t, keep


@dataclass
class Calibration:
    """The measured calibration: parameters, covariance, closure (see the module docstring)."""

    eta_edges: np.ndarray
    res_edges: np.ndarray
    scale: np.ndarray  # delta_i (relative), data relative to simulation
    resolution_ratio: np.ndarray  # k_r
    cov: np.ndarray  # over [scale..., resolution_ratio...]
    closure_residual: np.ndarray  # per resolution region (relative scale)
    closure_error: np.ndarray
    chi2: float
    ndf: int

    @property
    def values(self) -> np.ndarray:
        return np.r_[self.scale, self.resolution_ratio]

    @property
    def errors(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov))

    @property
    def closure(self) -> np.ndarray:
        """Closure uncertainty per resolution region: max(|residual|, its error)."""
        return np.maximum(np.abs(self.closure_residual), self.closure_error)

    def eigen_shifts(self) -> np.ndarray:
        """(n_eigen, n_params) shifts v_k with sum_k v_k v_k^T = cov, each signed so that its
        largest-|component| is positive (the convention of corrections/sf_eigen.py)."""
        vals, vecs = np.linalg.eigh(self.cov)
        vals = np.clip(vals, 0.0, None)
        shifts = (vecs * np.sqrt(vals)).T
        idx = np.argmax(np.abs(shifts), axis=1)
        sign = np.sign(shifts[np.arange(shifts.shape[0]), idx])
        return shifts * np.where(sign == 0, 1.0, sign)[:, None]


def template_half(inp: CalibInputs, half: int) -> CalibInputs:
    """The inputs with the templates of one event-number half (0 even, 1 odd) and all data."""
    sl = slice(half, half + 1)
    return dataclasses.replace(
        inp,
        data=inp.data.sum(axis=2, keepdims=True),
        mc=inp.mc[:, :, sl],
        mc_var=inp.mc_var[:, :, sl],
        delta=inp.delta[:, :, sl],
    )


def jackknife_fit(inp: CalibInputs) -> FitResult:
    """The fit with its template-noise bias removed (module doc): x = 2 x_all - mean of the
    fits with each half's templates; covariance, chi2 and normalisations of the full fit."""
    full = fit_templates(_templates(inp, REBIN)[0])
    halves = [fit_templates(_templates(template_half(inp, h), REBIN)[0]) for h in (0, 1)]
    x = 2.0 * full.x - 0.5 * (halves[0].x + halves[1].x)
    return dataclasses.replace(full, x=x)


def calibrate(inp: CalibInputs) -> Calibration:
    """Fit the calibration on all categories (template-noise bias removed), then the closure
    on the simulation's halves."""
    res = jackknife_fit(inp)
    scale = res.x[: inp.n_scale] * inp.scale_step
    k2 = 1.0 + res.x[inp.n_scale :] * inp.res_step  # squared resolution ratio
    if np.any(k2 <= 0):
        raise CalibrationError(f"{inp.source}: fitted squared resolution ratios {k2} <= 0")
    k = np.sqrt(k2)
    jac = np.r_[np.full(inp.n_scale, inp.scale_step), inp.res_step / (2.0 * k)]
    cov = res.cov_x * np.outer(jac, jac)
    resid, err = closure(inp)
    return Calibration(
        eta_edges=inp.eta_edges,
        res_edges=inp.res_edges,
        scale=scale,
        resolution_ratio=k,
        cov=cov,
        closure_residual=resid,
        closure_error=err,
        chi2=res.chi2,
        ndf=res.ndf,
    )


def closure(inp: CalibInputs) -> tuple[np.ndarray, np.ndarray]:
    """Residual scale per resolution region of the realised odd half of the simulation fitted
    with the even half's templates (true residual: 0), and its error."""
    even = dataclasses.replace(
        inp,
        data=_effective_counts(inp.mc_real[:, :, 1:], inp.mc_real_var[:, :, 1:]),
        mc=inp.mc[:, :, :1],
        mc_var=inp.mc_var[:, :, :1],
        delta=inp.delta[:, :, :1],
    )
    t, _ = _templates(even, REBIN)
    regions = inp.region_of_scale_bins()

    def per_region(a: np.ndarray) -> np.ndarray:
        a = a[..., : inp.n_scale]
        return np.stack([a[..., regions == r].sum(axis=-1) for r in range(inp.n_res)], axis=-1)

    # one residual scale per region: the regions' scale templates summed (to first order)
    lin = per_region(t.lin)
    sub = LinearTemplates(t.data, t.nominal, t.nominal_var, lin, np.zeros_like(lin))
    res = fit_templates(sub)
    return res.x * inp.scale_step, np.sqrt(np.diag(res.cov_x)) * inp.scale_step


def _effective_counts(values: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """Weighted histogram scaled to unit-weight-equivalent counts (sum w / sum w^2 overall),
    so that its fluctuations are Poisson-like, as the fit assumes for data."""
    total, total_var = values.sum(), variances.sum()
    return values * (total / total_var if total_var > 0 else 1.0)


# ----------------------------------------------------------------------------- payload
def _corr(name: str, desc: str, inputs: list[tuple[str, str]], data: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": desc,
        "version": 1,
        "inputs": [
            {"name": n, "type": "int" if n == "eigen" else "real", "description": d}
            for n, d in inputs
        ],
        "output": {"name": "value", "type": "real"},
        "data": data,
    }


def _binning(inp: str, edges: np.ndarray, content: Any) -> dict[str, Any]:
    return {
        "nodetype": "binning",
        "input": inp,
        "edges": [float(e) for e in edges],
        "content": [float(c) for c in content],
        "flow": "clamp",
    }


def payload_dict(cal: Calibration, provenance: dict[str, Any]) -> dict[str, Any]:
    """The calibration as a correctionlib CorrectionSet (JSON-able dict)."""
    n_s = cal.scale.size
    eig = cal.eigen_shifts()

    def per_eigen(inp: str, edges: np.ndarray, part: slice) -> dict[str, Any]:
        return {
            "nodetype": "category",
            "input": "eigen",
            "content": [
                {"key": k, "value": _binning(inp, edges, eig[k, part])} for k in range(len(eig))
            ],
        }

    corrs = [
        _corr(
            "muon_calib_scale",
            "relative momentum scale of data w.r.t. simulation: data pT / (1 + value)",
            [("eta", "muon eta")],
            _binning("eta", cal.eta_edges, cal.scale),
        ),
        _corr(
            "muon_calib_resolution_ratio",
            "pT resolution of data / simulation: simulation smeared to it",
            [("abseta", "muon |eta|")],
            _binning("abseta", cal.res_edges, cal.resolution_ratio),
        ),
        _corr(
            "muon_calib_scale_eigen",
            "scale part of eigenvector k of the calibration covariance (+1 sigma)",
            [("eigen", "eigenvector"), ("eta", "muon eta")],
            per_eigen("eta", cal.eta_edges, slice(0, n_s)),
        ),
        _corr(
            "muon_calib_resolution_eigen",
            "resolution-ratio part of eigenvector k of the calibration covariance (+1 sigma)",
            [("eigen", "eigenvector"), ("abseta", "muon |eta|")],
            per_eigen("abseta", cal.res_edges, slice(n_s, None)),
        ),
        _corr(
            "muon_calib_closure",
            "closure uncertainty (relative scale) per |eta| region: max(|residual|, error) of "
            "the residual scale of the simulation's odd half fitted with its even half",
            [("abseta", "muon |eta|")],
            _binning("abseta", cal.res_edges, cal.closure),
        ),
    ]
    desc = {
        "format": FORMAT,
        "n_eigen": int(len(eig)),
        "eta_edges": cal.eta_edges.tolist(),
        "res_abseta_edges": cal.res_edges.tolist(),
        "scale": cal.scale.tolist(),
        "resolution_ratio": cal.resolution_ratio.tolist(),
        "covariance": cal.cov.tolist(),
        "closure_residual": cal.closure_residual.tolist(),
        "closure_error": cal.closure_error.tolist(),
        "chi2": cal.chi2,
        "ndf": cal.ndf,
        "provenance": provenance,
    }
    return {
        "schema_version": 2,
        "description": json.dumps(desc, default=str),
        "corrections": corrs,
    }


def write_payload(cal: Calibration, path: str | os.PathLike, provenance: dict[str, Any]) -> Path:
    """Write the payload atomically (``.gz`` suffix: gzip-compressed JSON)."""
    from wremnants_dask.utils.atomic import atomic_write_bytes

    text = json.dumps(payload_dict(cal, provenance), default=str).encode()
    path = Path(path)
    data = gzip.compress(text, mtime=0) if path.suffix == ".gz" else text
    return atomic_write_bytes(path, data)


def calibration_from_payload(path: str | os.PathLike) -> Calibration:
    """The Calibration recorded in a payload's description."""
    d = MomentumCalibration(path).description
    return Calibration(
        eta_edges=np.asarray(d["eta_edges"]),
        res_edges=np.asarray(d["res_abseta_edges"]),
        scale=np.asarray(d["scale"]),
        resolution_ratio=np.asarray(d["resolution_ratio"]),
        cov=np.asarray(d["covariance"]),
        closure_residual=np.asarray(d["closure_residual"]),
        closure_error=np.asarray(d["closure_error"]),
        chi2=float(d["chi2"]),
        ndf=int(d["ndf"]),
    )


# ----------------------------------------------------------------------------- reading
_CACHE: dict[tuple[str, int], tuple[Any, dict[str, Any]]] = {}


class MomentumCalibration:
    """A calibration payload, validated on construction; pickles as its path."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._get()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = Path(state["path"])

    def _get(self) -> tuple[Any, dict[str, Any]]:
        import correctionlib

        try:
            key = (str(self.path), self.path.stat().st_mtime_ns)
        except FileNotFoundError:
            raise CalibrationError(
                f"momentum calibration payload {self.path} not found; make one with "
                "`python -m wremnants_dask.mucalib`"
            ) from None
        if key in _CACHE:
            return _CACHE[key]
        try:
            raw = self.path.read_bytes()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            doc = json.loads(raw)
            desc = json.loads(doc.get("description") or "{}")
        except (OSError, ValueError, EOFError) as exc:
            raise CalibrationError(f"momentum calibration payload {self.path}: {exc}") from None
        if desc.get("format") != FORMAT:
            raise CalibrationError(
                f"momentum calibration payload {self.path}: format {desc.get('format')!r}, "
                f"expected {FORMAT!r}"
            )
        by_name = {c.get("name"): c for c in doc.get("corrections", [])}
        for name, inputs in CALIB_CORRECTIONS.items():
            got = tuple(i["name"] for i in by_name.get(name, {}).get("inputs", []))
            if got != inputs:
                raise CalibrationError(
                    f"momentum calibration payload {self.path}: correction '{name}' "
                    f"{'missing' if name not in by_name else f'has inputs {got}'}, "
                    f"expected inputs {inputs}"
                )
        try:
            cset = correctionlib.CorrectionSet.from_string(json.dumps(doc))
        except Exception as exc:
            raise CalibrationError(
                f"momentum calibration payload {self.path} fails correctionlib validation: {exc}"
            ) from None
        _CACHE[key] = (cset, desc)
        return cset, desc

    @property
    def description(self) -> dict[str, Any]:
        return self._get()[1]

    @property
    def n_eigen(self) -> int:
        return int(self.description["n_eigen"])

    def _eval(self, name: str, *args: Any) -> np.ndarray:
        arrays = [a if isinstance(a, int) else np.ascontiguousarray(a, np.float64) for a in args]
        return np.asarray(self._get()[0][name].evaluate(*arrays), dtype=np.float64)

    def scale(self, eta: np.ndarray) -> np.ndarray:
        return self._eval("muon_calib_scale", eta)

    def resolution_ratio(self, eta: np.ndarray) -> np.ndarray:
        return self._eval("muon_calib_resolution_ratio", np.abs(eta))

    def scale_eigen(self, eta: np.ndarray) -> np.ndarray:
        """(n_muons, n_eigen) scale shifts of the eigen-variations."""
        return np.stack(
            [self._eval("muon_calib_scale_eigen", k, eta) for k in range(self.n_eigen)], axis=-1
        ).reshape(np.shape(eta) + (self.n_eigen,))

    def resolution_eigen(self, eta: np.ndarray) -> np.ndarray:
        """(n_muons, n_eigen) resolution-ratio shifts of the eigen-variations."""
        a = np.abs(eta)
        return np.stack(
            [self._eval("muon_calib_resolution_eigen", k, a) for k in range(self.n_eigen)],
            axis=-1,
        ).reshape(np.shape(eta) + (self.n_eigen,))

    def closure(self, eta: np.ndarray) -> np.ndarray:
        return self._eval("muon_calib_closure", np.abs(eta))

    def closure_regions(self) -> np.ndarray:
        return np.asarray(self.description["res_abseta_edges"], dtype=np.float64)
