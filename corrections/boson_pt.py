"""Boson-pT (qT) modelling: the Z qT spectrum of data reweights the W and Z simulation.

Measurement (``measure``): data minus the simulated backgrounds, in bins of reconstructed
dilepton pT (``QT_EDGES``), is fitted with the Z (and any W) simulation weighted at the
*generator* qT by a smooth function r(qT) = sum_k theta_k phi_k(qT) (``basis``: powers of
t = ln(1 + qT / QT_SCALE) / ln(1 + QT_MAX / QT_SCALE), constant beyond QT_MAX). The processor
``mz_bosonpt`` fills, per reconstructed bin, the simulation's sums of w phi_k(qT_gen) (tensor
``basis``); the prediction is linear in theta, so the fit is a weighted linear least squares
through the simulation's response (forward folding): no unfolding matrix to invert or
regularise, migrations and acceptance as the simulation has them, and the result is the
generator-level function the W simulation needs. r is normalised so that the selected signal
simulation keeps its yield (a shape correction; normalisations belong to other nuisances).

Uncertainties: the covariance of the normalised theta (rank P - 1) as eigen-variations
(``eigen``, one per non-zero eigenvalue, signed largest component positive), plus theory
modes (``THEORY_MODES``): exact reweightings within the qT family
p(qT; b, n) = 2 (n - 1) / b^2 qT (1 + qT^2 / b^2)^-n (normalised on [0, inf)): ``np``, the
non-perturbative / intrinsic-kT scale b of the peak, and ``resum``, the power n of the fall-off
(the resummed / matched region), each up/down; they cover what the Z -> W transfer assumes.

The file (JSON, ``FORMAT``) holds the per-bin inputs, the fit, covariance, eigen-shifts, the
theory modes and provenance, so the W histmaker applies it without the Z histograms.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wremnants_dask.inputs.normalization import NormalizationError, info_scale

FORMAT = "wremnants_dask.bosonpt/1"
#: Reconstructed dilepton-pT bins (GeV) of the measurement; the overflow bin is fitted too.
QT_EDGES = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0,
            23.0, 26.0, 30.0, 35.0, 40.0, 50.0, 60.0, 80.0, 100.0)  # fmt: skip
#: Generator-qT bins (GeV) of the diagnostic generator histograms (1 GeV to 100, overflow kept).
GEN_EDGES = tuple(float(x) for x in range(101))
#: qT scale (GeV) of the basis variable t and the qT beyond which r is held constant.
QT_SCALE = 5.0
QT_MAX = 100.0
#: Highest basis power the processor fills (the measurement's degree is at most this).
MAX_DEGREE = 5
#: Reference qT family of the theory modes: b (GeV) and n of p(qT; b, n).
FAMILY_B = 6.0
FAMILY_N = 2.4
#: Theory modes: name -> (family parameter, default up/down shift: relative for b, additive n).
THEORY_MODES: dict[str, tuple[str, float]] = {"np": ("b", 0.05), "resum": ("n", 0.1)}
#: Eigenvalues below this fraction of the largest are the normalisation's null direction.
EIGEN_CUTOFF = 1e-10


class BosonPtError(ValueError):
    """A boson-pT measurement cannot be made or read (the message names the file or key)."""


# ----------------------------------------------------------------------------- functions
def basis(qt: np.ndarray, degree: int) -> np.ndarray:
    """(n, degree + 1) basis t^k, t = ln(1 + qT / QT_SCALE) / ln(1 + QT_MAX / QT_SCALE) in [0, 1]
    (qT clipped to [0, QT_MAX]): a log variable resolves the peak and the tail alike."""
    q = np.clip(np.asarray(qt, dtype=np.float64), 0.0, QT_MAX)
    t = np.log1p(q / QT_SCALE) / np.log1p(QT_MAX / QT_SCALE)
    return t[..., None] ** np.arange(degree + 1)


def family_density(qt: np.ndarray, b: float, n: float) -> np.ndarray:
    """p(qT; b, n) = 2 (n - 1) / b^2 qT (1 + qT^2/b^2)^-n, normalised on [0, inf) (n > 1)."""
    q = np.asarray(qt, dtype=np.float64)
    return 2.0 * (n - 1.0) / b**2 * q * (1.0 + (q / b) ** 2) ** (-n)


def family_ratio(qt: np.ndarray, b: float, n: float) -> np.ndarray:
    """p(qT; b, n) / p(qT; FAMILY_B, FAMILY_N): a normalised reweighting of the family (the qT
    factor cancels, so it is finite at qT = 0)."""
    q = np.asarray(qt, dtype=np.float64)
    log = (
        np.log((n - 1.0) / b**2)
        - n * np.log1p((q / b) ** 2)
        - np.log((FAMILY_N - 1.0) / FAMILY_B**2)
        + FAMILY_N * np.log1p((q / FAMILY_B) ** 2)
    )
    return np.exp(log)


def eigen_shifts(cov: np.ndarray, cutoff: float = EIGEN_CUTOFF) -> np.ndarray:
    """(K, P) shifts s_k with sum_k s_k s_k^T = cov (eigenvalues above ``cutoff`` x the largest),
    each signed so that its largest-|component| is positive (stable nuisance signs)."""
    val, vec = np.linalg.eigh(cov)
    keep = val > cutoff * max(float(val.max()), 0.0)
    val, vec = val[keep], vec[:, keep]
    big = np.argmax(np.abs(vec), axis=0)
    vec = vec * np.sign(vec[big, np.arange(vec.shape[1])])
    return (vec * np.sqrt(val)).T[::-1]  # largest first


# ----------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class BosonPtWeights:
    """The measured r(qT) (``params`` over ``basis``), its eigen-shifts (K, P) and the theory
    modes ({name: {"parameter", "shift"}}), applied at the generator boson qT."""

    degree: int
    params: np.ndarray
    eigen: np.ndarray
    theory: dict[str, dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def n_eigen(self) -> int:
        return int(self.eigen.shape[0])

    @property
    def theory_names(self) -> list[str]:
        return list(self.theory)

    def weight(self, qt: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
        """r(qT) with the parameters moved by ``shift``; never negative (a weight)."""
        p = self.params if shift is None else self.params + shift
        return np.maximum(basis(qt, self.degree) @ p, 0.0)

    def eigen_tensor(self, qt: np.ndarray) -> np.ndarray:
        """(n, K, 2) relative weights r(theta -+ s_k) / r(theta) (down, up)."""
        x = basis(qt, self.degree)
        nom = x @ self.params
        shifts = x @ self.eigen.T  # (n, K)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.stack([nom[:, None] - shifts, nom[:, None] + shifts], axis=-1)
            rel = np.maximum(rel, 0.0) / nom[:, None, None]
        return np.where(nom[:, None, None] > 0, rel, 1.0)

    def theory_tensor(self, qt: np.ndarray) -> np.ndarray:
        """(n, M, 2) relative weights of the theory modes (down, up)."""
        out = []
        for spec in self.theory.values():
            pair = []
            for sign in (-1.0, 1.0):
                if spec["parameter"] == "b":
                    b, n = FAMILY_B * (1.0 + sign * spec["shift"]), FAMILY_N
                else:
                    b, n = FAMILY_B, FAMILY_N + sign * spec["shift"]
                pair.append(family_ratio(qt, b, n))
            out.append(np.stack(pair, axis=-1))
        return np.stack(out, axis=1) if out else np.ones((np.size(qt), 0, 2))

    # ---------------------------------------------------------------- file
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "basis": {"qt_scale": QT_SCALE, "qt_max": QT_MAX,
                      "formula": "r = sum_k params[k] t^k, t = ln(1 + qT/qt_scale) / "
                                 "ln(1 + qt_max/qt_scale), qT clipped to [0, qt_max]"},
            "family": {"b": FAMILY_B, "n": FAMILY_N,
                       "formula": "p(qT; b, n) = 2 (n-1)/b^2 qT (1 + qT^2/b^2)^-n"},
            "degree": self.degree,
            "params": self.params.tolist(),
            "eigen": self.eigen.tolist(),
            "theory": self.theory,
            **self.info,
        }  # fmt: skip

    def save(self, path: str | Path) -> Path:
        from wremnants_dask.utils.atomic import atomic_write_text

        return atomic_write_text(path, json.dumps(self.to_json(), indent=1) + "\n")


def theory_modes(np_shift: float, resum_shift: float) -> dict[str, dict[str, Any]]:
    """The theory modes with their shifts: b by +-np_shift (relative), n by +-resum_shift."""
    if not 0 < np_shift < 1 or not 0 < resum_shift < FAMILY_N - 1:
        raise BosonPtError(
            f"theory shifts must be in (0, 1) for np and (0, {FAMILY_N - 1:g}) for resum, got "
            f"{np_shift}, {resum_shift}"
        )
    return {"np": {"parameter": "b", "shift": float(np_shift)},
            "resum": {"parameter": "n", "shift": float(resum_shift)}}  # fmt: skip


def load_weights(path: str | Path) -> BosonPtWeights:
    """Read a boson-pT file; a wrong file gives one line naming it and the key."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise BosonPtError(f"{path}: cannot read the boson-pT weights ({err})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BosonPtError(f"{path}: not a boson-pT weights file (format != {FORMAT!r})")
    try:
        degree = int(raw["degree"])
        b = raw["basis"]
        if float(b["qt_scale"]) != QT_SCALE or float(b["qt_max"]) != QT_MAX:
            raise BosonPtError(f"{path}: basis {b} is not this version's ({QT_SCALE}, {QT_MAX})")
        fam = raw["family"]
        if float(fam["b"]) != FAMILY_B or float(fam["n"]) != FAMILY_N:
            raise BosonPtError(f"{path}: family {fam} is not this version's")
        params = np.asarray(raw["params"], dtype=np.float64)
        eigen = np.asarray(raw["eigen"], dtype=np.float64).reshape(-1, degree + 1)
        theory = dict(raw["theory"])
    except KeyError as err:
        raise BosonPtError(f"{path}: key {err.args[0]!r} missing") from None
    if params.shape != (degree + 1,):
        raise BosonPtError(f"{path}: params {params.shape} do not match degree {degree}")
    for name, spec in theory.items():
        if not isinstance(spec, dict) or spec.get("parameter") not in ("b", "n"):
            raise BosonPtError(f"{path}: theory.{name}: needs parameter 'b' or 'n'")
        if not isinstance(spec.get("shift"), (int, float)):
            raise BosonPtError(f"{path}: theory.{name}.shift: a number is needed")
    info = {k: v for k, v in raw.items() if k in ("bins", "fit", "provenance")}
    return BosonPtWeights(degree, params, eigen, theory, info)


# ----------------------------------------------------------------------------- measurement
@dataclass
class Measurement:
    """Per reconstructed bin (overflow last): data minus backgrounds and its variance, the
    signal simulation's basis sums ``fold`` (bins, MAX_DEGREE + 1) and the variance of their
    column 0 (the plain yield)."""

    edges: np.ndarray
    data: np.ndarray
    data_var: np.ndarray
    fold: np.ndarray
    fold_var0: np.ndarray
    background: np.ndarray


def _hist_or_none(hf: Any, ds: str, name: str) -> Any:
    try:
        return hf.get(ds, name)
    except KeyError:
        return None


def collect(hf: Any, reco: str = "bosonpt_reco", fold: str = "bosonpt_fold") -> Measurement:
    """Data minus the simulated backgrounds, and the folding sums of the boson simulation.

    Simulation (W and Z samples: those with a ``fold`` histogram) is normalised with
    xsec x lumi / sum of generator weights (as the fit setup does)."""
    infos = {ds: hf.info(ds) for ds in hf.datasets}
    data = [d for d, i in infos.items() if i["is_data"]]
    if not data:
        raise BosonPtError(f"{hf.path}: no data dataset")
    lumi = sum(float(infos[d].get("lumi_pb") or 0.0) for d in data)
    if lumi <= 0:
        raise BosonPtError(f"{hf.path}: data without luminosity (lumi_pb)")
    d_val = d_var = a_val = a_var = bkg = None
    edges = None
    for ds, info in infos.items():
        h = _hist_or_none(hf, ds, reco)
        if h is None:
            raise BosonPtError(f"{hf.path}: dataset {ds!r} has no histogram {reco!r}")
        if h.axes[0].traits.underflow or not h.axes[0].traits.overflow:
            raise BosonPtError(f"{hf.path}: {ds}/{reco}: axis 0 needs overflow, no underflow")
        vals, var = h.values(flow=True), h.variances(flow=True)
        if var is None:
            raise BosonPtError(f"{hf.path}: {ds}/{reco} lacks sums of squared weights")
        edges = np.asarray(h.axes[0].edges)
        if info["is_data"]:
            d_val = vals if d_val is None else d_val + vals
            d_var = var if d_var is None else d_var + var
            continue
        try:
            f = info_scale(info, lumi)
        except NormalizationError as err:
            raise BosonPtError(f"{hf.path}: dataset {ds!r} {err}") from None
        hfold = _hist_or_none(hf, ds, fold)
        if hfold is not None:
            if hfold.axes[-1].name != "basis" or len(hfold.axes[-1]) != MAX_DEGREE + 1:
                raise BosonPtError(
                    f"{hf.path}: {ds}/{fold} has no 'basis' axis of {MAX_DEGREE + 1}"
                )
            fv, fvar = hfold.values(flow=True), hfold.variances(flow=True)
            if fvar is None:
                raise BosonPtError(f"{hf.path}: {ds}/{fold} lacks sums of squared weights")
            a_val = fv * f if a_val is None else a_val + fv * f
            v0 = fvar[:, 0] * f * f
            a_var = v0 if a_var is None else a_var + v0
        else:  # background: subtracted from data, its variance added
            bkg = vals * f if bkg is None else bkg + vals * f
            d_var = d_var + var * f * f if d_var is not None else var * f * f
    if d_val is None or a_val is None:
        raise BosonPtError(f"{hf.path}: needs data and W/Z simulation with {fold!r}")
    bkg = np.zeros_like(d_val) if bkg is None else bkg
    d_var = d_var if d_var is not None else np.zeros_like(d_val)
    return Measurement(edges, d_val - bkg, d_var, a_val, a_var, bkg)


def fit_ratio(meas: Measurement, degree: int, iterations: int = 5) -> dict[str, Any]:
    """Weighted linear least squares of data - background = fold @ theta (module doc), the
    variance of the simulation (column 0 scaled by the fitted ratio) re-evaluated per pass."""
    a = meas.fold[:, : degree + 1]
    y, vy, v0 = meas.data, meas.data_var, meas.fold_var0
    a0 = meas.fold[:, 0]
    ok = (a0 > 0) & ((vy + v0) > 0)
    if ok.sum() <= degree + 1:
        raise BosonPtError(
            f"{int(ok.sum())} filled dilepton-pT bins; a degree-{degree} fit needs more"
        )
    a, y, vy, v0, a0 = a[ok], y[ok], vy[ok], v0[ok], a0[ok]
    theta = np.zeros(degree + 1)
    theta[0] = y.sum() / a0.sum()
    for _ in range(iterations):
        k = (a @ theta) / a0
        w = 1.0 / (vy + k * k * v0)
        m = a.T @ (w[:, None] * a)
        theta = np.linalg.solve(m, a.T @ (w * y))
    k = (a @ theta) / a0
    w = 1.0 / (vy + k * k * v0)
    cov = np.linalg.inv(a.T @ (w[:, None] * a))
    chi2 = float(np.sum(w * (y - a @ theta) ** 2))
    return {"params": theta, "cov": cov, "chi2": chi2, "ndf": int(ok.sum() - degree - 1),
            "bins_used": ok}  # fmt: skip


def normalise(theta: np.ndarray, cov: np.ndarray, fold: np.ndarray) -> tuple[np.ndarray, ...]:
    """theta / c with c = sum(fold @ theta) / sum(fold[:, 0]) (the signal yield kept), and its
    covariance J cov J^T (rank P - 1: the normalisation is fixed)."""
    tot = fold.sum(axis=0)[: theta.size]
    c = float(tot @ theta) / float(tot[0])
    grad = tot / tot[0]
    jac = np.eye(theta.size) / c - np.outer(theta, grad) / c**2
    return theta / c, jac @ cov @ jac.T


def measure(
    meas: Measurement,
    degree: int = 3,
    theory: dict[str, dict[str, Any]] | None = None,
    where: str = "?",
) -> BosonPtWeights:
    """Fit, normalise and decompose (module doc)."""
    if not 0 <= degree <= MAX_DEGREE:
        raise BosonPtError(f"{where}: degree must be in 0..{MAX_DEGREE}, got {degree}")
    try:
        res = fit_ratio(meas, degree)
    except BosonPtError as err:
        raise BosonPtError(f"{where}: {err}") from None
    params, cov = normalise(res["params"], res["cov"], meas.fold)
    eig = eigen_shifts(cov) if degree > 0 else np.zeros((0, 1))
    theory = (
        theory_modes(*(THEORY_MODES[k][1] for k in ("np", "resum"))) if theory is None else theory
    )
    a = meas.fold[:, : degree + 1]
    info = {
        "bins": {
            "qt_edges": [float(x) for x in meas.edges],
            "overflow": True,
            "data_minus_background": meas.data.tolist(),
            "data_variance": meas.data_var.tolist(),
            "background": meas.background.tolist(),
            "simulation": meas.fold[:, 0].tolist(),
            "fitted": (a @ res["params"]).tolist(),
            "used": [bool(x) for x in res["bins_used"]],
        },
        "fit": {
            "chi2": res["chi2"],
            "ndf": res["ndf"],
            "params_unnormalised": res["params"].tolist(),
            "covariance": cov.tolist(),
            "errors": np.sqrt(np.clip(np.diag(cov), 0, None)).tolist(),
            "method": "forward folding: data - bkg = sum_k theta_k sum_sim w t^k(qT_gen), per "
            "reconstructed dilepton-pT bin; normalised to the selected signal yield",
        },
    }
    return BosonPtWeights(degree, params, eig, theory, info)


def function_covariance(w: BosonPtWeights, qt: np.ndarray) -> np.ndarray:
    """Covariance of r at the points ``qt`` from the eigen-shifts (sum_k s_k s_k^T = cov)."""
    x = basis(qt, w.degree)
    s = x @ w.eigen.T
    return s @ s.T
