"""Hadronic-recoil calibration from Z -> mu mu: measure data/simulation ratios, correct simulation.

The recoil is u = -(MET + the prompt muons), projected on the boson direction: u_par (along
qT; its mean is -response x qT) and u_perp. In each qT bin the processor ``mz_recoil`` fills
weighted raw moments of v = u_par + qT and of u_perp (``MOMENTS``). Here:

- ``bin_stats`` turns those sums into the response -<u_par>/<qT> and the resolutions (standard
  deviations) of u_par and u_perp, with statistical errors (from the fourth moments, so they
  hold for non-Gaussian tails too);
- ``measure`` subtracts the simulated backgrounds from the data (sums of moments are additive)
  and fits each data/simulation ratio (response, sigma_par, sigma_perp) with a polynomial in
  t = qT / ``QT_SCALE`` (weighted least squares with the errors of both samples);
- ``RecoilCalibration.correct`` applies it to a simulated event, given the generator boson qT:
  u_par -> k_r m + k_par (u_par - m) with m = -R_mc qT the simulation's mean, u_perp -> k_perp
  u_perp; the statistical uncertainty of the fitted ratios is propagated as eigen-variations
  (``eigen``: one +-1 sigma shift of all parameters per eigenvector of their covariance).

The file (JSON, ``FORMAT``) holds the per-bin measurements, the fitted parameters, their
covariance and eigen-shifts, so the W histmaker applies it without re-reading the Z histograms.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wremnants_dask.inputs.normalization import NormalizationError, info_scale

FORMAT = "wremnants_dask.recoil/1"
#: Raw moments filled per qT bin (tensor axis ``moment``): v = u_par + qT, p = u_perp.
MOMENTS = ("w", "qt", "v1", "v2", "v3", "v4", "p1", "p2", "p3", "p4")
#: qT bins (GeV) of the measurement.
QT_EDGES = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0, 30.0, 40.0, 50.0, 70.0, 100.0)
#: qT (GeV) that the polynomial variable t = qT / QT_SCALE is measured in.
QT_SCALE = 50.0
#: The three measured data/simulation ratios, in parameter order.
QUANTITIES = ("response", "sigma_par", "sigma_perp")
#: Bins with fewer effective events than this in data or simulation are not fitted.
MIN_NEFF = 20.0
#: Group of the Z -> mu mu simulation (synth.GROUPS) and of the data.
SIGNAL_GROUP = "Zmumu"


class RecoilCalibrationError(ValueError):
    """A recoil calibration cannot be measured or read (the message names the file or key)."""


# ----------------------------------------------------------------------------- moments
@dataclass
class BinStats:
    """Per qT bin: response, resolutions and their errors (arrays over the bins)."""

    n_eff: np.ndarray
    qt: np.ndarray  # mean qT
    response: np.ndarray
    response_err: np.ndarray
    sigma_par: np.ndarray
    sigma_par_err: np.ndarray
    sigma_perp: np.ndarray
    sigma_perp_err: np.ndarray

    def to_json(self) -> dict[str, list[float]]:
        return {k: [float(x) for x in v] for k, v in self.__dict__.items()}


def _central(s: np.ndarray, w: np.ndarray, k0: int) -> tuple[np.ndarray, ...]:
    """Mean, variance and 4th central moment from raw sums s[..., k0:k0+4] / w."""
    with np.errstate(divide="ignore", invalid="ignore"):
        e1, e2, e3, e4 = (s[:, k0 + j] / w for j in range(4))
    var = e2 - e1**2
    m4 = e4 - 4 * e1 * e3 + 6 * e1**2 * e2 - 3 * e1**4
    return e1, var, m4


def bin_stats(sums: np.ndarray, n_eff: np.ndarray) -> BinStats:
    """Response and resolutions per bin from the weighted raw moments ``sums`` (bins, MOMENTS).

    Errors: sigma(mean) = sd / sqrt(n_eff), sigma(variance) = sqrt((m4 - var^2) / n_eff),
    sigma(sd) = sigma(variance) / (2 sd) (large-sample, any distribution).
    """
    sums = np.asarray(sums, dtype=np.float64)
    w = sums[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        qt = sums[:, 1] / w
        v1, v_var, v_m4 = _central(sums, w, 2)
        _, p_var, p_m4 = _central(sums, w, 6)
        ne = np.maximum(n_eff, 1e-300)
        upar = v1 - qt
        sd_v, sd_p = np.sqrt(np.maximum(v_var, 0)), np.sqrt(np.maximum(p_var, 0))
        return BinStats(
            n_eff=np.asarray(n_eff, dtype=np.float64),
            qt=qt,
            response=-upar / qt,
            response_err=sd_v / np.sqrt(ne) / qt,
            sigma_par=sd_v,
            sigma_par_err=_sd_error(sd_v, v_var, v_m4, ne),
            sigma_perp=sd_p,
            sigma_perp_err=_sd_error(sd_p, p_var, p_m4, ne),
        )


def _sd_error(sd: np.ndarray, var: np.ndarray, m4: np.ndarray, n_eff: np.ndarray) -> np.ndarray:
    """Error of a standard deviation from the 4th central moment, at least the Gaussian
    sd / sqrt(2 n_eff): after a background subtraction m4 - var^2 can come out small or
    negative in a sparse bin, and a zero error would give the bin all the weight of the fit."""
    with np.errstate(divide="ignore", invalid="ignore"):
        moments = np.sqrt(np.maximum(m4 - var**2, 0) / n_eff) / (2 * sd)
        return np.maximum(moments, sd / np.sqrt(2 * n_eff))


# ----------------------------------------------------------------------------- ratio fit
def design(qt: np.ndarray, degree: int) -> np.ndarray:
    """Polynomial basis t^j (j = 0..degree), t = qT / QT_SCALE."""
    t = np.asarray(qt, dtype=np.float64) / QT_SCALE
    return t[..., None] ** np.arange(degree + 1)


def fit_ratio(
    qt: np.ndarray,
    num: np.ndarray,
    num_err: np.ndarray,
    den: np.ndarray,
    den_err: np.ndarray,
    degree: int,
    iterations: int = 4,
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Fit num ~ k(qT) den with k a polynomial in t: returns (params, covariance, chi2, ndf).

    Minimises sum (num - k den)^2 / (num_err^2 + k^2 den_err^2), the errors of both samples,
    by weighted least squares with the weights re-evaluated at the previous k (no bias from a
    ratio of noisy numbers in the low-qT bins)."""
    x = design(qt, degree) * den[:, None]
    k = np.ones_like(num)
    for _ in range(iterations):
        wgt = 1.0 / (num_err**2 + k**2 * den_err**2)
        a = x.T @ (wgt[:, None] * x)
        params = np.linalg.solve(a, x.T @ (wgt * num))
        k = design(qt, degree) @ params
    wgt = 1.0 / (num_err**2 + k**2 * den_err**2)
    cov = np.linalg.inv(x.T @ (wgt[:, None] * x))
    chi2 = float(np.sum(wgt * (num - k * den) ** 2))
    return params, cov, chi2, int(num.size - degree - 1)


def eigen_shifts(cov: np.ndarray) -> np.ndarray:
    """(K, P) shifts s_k with sum_k s_k s_k^T = cov, each signed so that its largest-|component|
    is positive (LAPACK's signs are arbitrary: nuisance signs must not change between runs)."""
    val, vec = np.linalg.eigh(cov)
    val = np.clip(val, 0.0, None)
    big = np.argmax(np.abs(vec), axis=0)
    vec = vec * np.sign(vec[big, np.arange(vec.shape[1])])
    return (vec * np.sqrt(val)).T


# ----------------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class RecoilFrame:
    """Per event: boson direction (cx, cy), polynomial basis x, simulation mean m of u_par,
    u_par - m and u_perp."""

    cx: np.ndarray
    cy: np.ndarray
    x: np.ndarray
    mean: np.ndarray
    dpar: np.ndarray
    uperp: np.ndarray


@dataclass(frozen=True)
class RecoilCalibration:
    """Fitted data/simulation ratios of the recoil and how to correct simulated events.

        ``params``: (3, degree + 1) polynomial coefficients of k_response, k_sigma_par,
        k_sigma_perp in t = qT / QT_SCALE; ``mc_response``: coefficients of the simulation's response
        R_mc(qT) (recoil projected on the generator boson); ``eigen``: (K, 3, degree + 1) +-1 sigma
        shifts of ``params``; ``qt_max``: qT beyond which the functions are held constant (the mean qT
    of the last fitted bin: a polynomial is not extrapolated).
    """

    degree: int
    params: np.ndarray
    mc_response: np.ndarray
    eigen: np.ndarray
    qt_max: float
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def n_eigen(self) -> int:
        return int(self.eigen.shape[0])

    def ratios(self, qt: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
        """(3, n) k_response, k_sigma_par, k_sigma_perp at ``qt`` (parameters + ``shift``)."""
        p = self.params if shift is None else self.params + shift
        x = design(np.clip(qt, 0.0, self.qt_max), self.degree)
        return p @ x.T

    def frame(self, ux: np.ndarray, uy: np.ndarray, qx: np.ndarray, qy: np.ndarray) -> RecoilFrame:
        """What the correction needs per event, computed once for all eigen-variations."""
        qt = np.hypot(qx, qy)
        safe = qt > 0
        cx = np.where(safe, qx / np.where(safe, qt, 1.0), 1.0)
        cy = np.where(safe, qy / np.where(safe, qt, 1.0), 0.0)
        x = design(np.clip(qt, 0.0, self.qt_max), self.degree)
        m = -(x @ self.mc_response) * qt
        upar = ux * cx + uy * cy
        return RecoilFrame(cx, cy, x, m, upar - m, -ux * cy + uy * cx)

    def correct_frame(
        self, f: RecoilFrame, shift: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Corrected (ux, uy) of a ``frame``, with the parameters moved by ``shift``."""
        p = self.params if shift is None else self.params + shift
        k_r, k_par, k_perp = p @ f.x.T
        upar = k_r * f.mean + k_par * f.dpar
        uperp = k_perp * f.uperp
        return upar * f.cx - uperp * f.cy, upar * f.cy + uperp * f.cx

    def correct(
        self,
        ux: np.ndarray,
        uy: np.ndarray,
        qx: np.ndarray,
        qy: np.ndarray,
        shift: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Corrected recoil (ux, uy) of simulated events with generator boson qT (qx, qy)."""
        return self.correct_frame(self.frame(ux, uy, qx, qy), shift)

    def eigen_shift(self, k: int, sign: float) -> np.ndarray:
        return sign * self.eigen[k]

    # ---------------------------------------------------------------- file
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "degree": self.degree,
            "qt_scale": QT_SCALE,
            "qt_max": self.qt_max,
            "quantities": list(QUANTITIES),
            "params": self.params.tolist(),
            "mc_response": self.mc_response.tolist(),
            "eigen": self.eigen.tolist(),
            **self.info,
        }

    def save(self, path: str | Path) -> Path:
        from wremnants_dask.utils.atomic import atomic_write_text

        return atomic_write_text(path, json.dumps(self.to_json(), indent=1) + "\n")


def load_calibration(path: str | Path) -> RecoilCalibration:
    """Read a calibration file; a wrong file gives one line naming it and the key."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise RecoilCalibrationError(
            f"{path}: cannot read the recoil calibration ({err})"
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise RecoilCalibrationError(f"{path}: not a recoil calibration (format != {FORMAT!r})")
    try:
        degree = int(raw["degree"])
        if float(raw["qt_scale"]) != QT_SCALE:
            raise RecoilCalibrationError(f"{path}: qt_scale {raw['qt_scale']} != {QT_SCALE}")
        params = np.asarray(raw["params"], dtype=np.float64)
        mc = np.asarray(raw["mc_response"], dtype=np.float64)
        eigen = np.asarray(raw["eigen"], dtype=np.float64)
        qt_max = float(raw["qt_max"])
    except KeyError as err:
        raise RecoilCalibrationError(f"{path}: key {err.args[0]!r} missing") from None
    n = degree + 1
    if params.shape != (3, n) or mc.shape != (n,) or eigen.shape[1:] != (3, n):
        raise RecoilCalibrationError(
            f"{path}: params {params.shape}, mc_response {mc.shape}, eigen {eigen.shape} do not "
            f"match degree {degree}"
        )
    info = {k: v for k, v in raw.items() if k in ("bins", "fit", "provenance")}
    return RecoilCalibration(degree, params, mc, eigen, qt_max, info)


# ----------------------------------------------------------------------------- measurement
@dataclass
class Measurement:
    """Per-bin statistics of background-subtracted data and of the simulation."""

    data: BinStats
    mc: BinStats
    mc_gen: BinStats  # simulation projected on the generator boson, in generator qT bins
    edges: np.ndarray


def _sums(hf: Any, ds: str, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h = hf.get(ds, name)
    if [a.name for a in h.axes][-1] != "moment" or len(h.axes[-1]) != len(MOMENTS):
        raise RecoilCalibrationError(f"{hf.path}: {ds}/{name} has no 'moment' axis {MOMENTS}")
    vals = h.values(flow=False)
    var = h.variances(flow=False)
    if var is None:
        raise RecoilCalibrationError(f"{hf.path}: {ds}/{name} lacks sums of squared weights")
    return vals, var, np.asarray(h.axes[0].edges)


def collect(hf: Any, name: str = "recoil_moments") -> Measurement:
    """Moments of data minus simulated backgrounds, and of the Z -> mu mu simulation.

    Simulation is normalised to the data luminosity with xsec x lumi / sum of generator weights
    (as the fit setup does); n_eff = (sum w)^2 / sum w^2 with the backgrounds' variance added.
    """
    infos = {ds: hf.info(ds) for ds in hf.datasets}
    data = [d for d, i in infos.items() if i["is_data"]]
    sig = [d for d, i in infos.items() if not i["is_data"] and i["group"] == SIGNAL_GROUP]
    if not data or not sig:
        raise RecoilCalibrationError(
            f"{hf.path}: needs data and {SIGNAL_GROUP} simulation (found data {data}, "
            f"{SIGNAL_GROUP} {sig})"
        )
    lumi = sum(float(infos[d].get("lumi_pb") or 0.0) for d in data)
    if lumi <= 0:
        raise RecoilCalibrationError(f"{hf.path}: data without luminosity (lumi_pb)")
    d_val = d_var = s_val = s_var = g_val = g_var = None
    edges = None
    for ds, info in infos.items():
        vals, var, edges = _sums(hf, ds, name)
        if info["is_data"]:
            d_val = vals if d_val is None else d_val + vals
            d_var = var if d_var is None else d_var + var
            continue
        try:
            f = info_scale(info, lumi)
        except NormalizationError as err:
            raise RecoilCalibrationError(f"{hf.path}: dataset {ds!r} {err}") from None
        if ds in sig:
            s_val = vals * f if s_val is None else s_val + vals * f
            s_var = var * f * f if s_var is None else s_var + var * f * f
            gv, gvar, _ = _sums(hf, ds, f"{name}_gen")
            g_val = gv * f if g_val is None else g_val + gv * f
            g_var = gvar * f * f if g_var is None else g_var + gvar * f * f
        else:  # background: subtracted from data, its variance added
            d_val = d_val - vals * f if d_val is not None else -vals * f
            d_var = d_var + var * f * f if d_var is not None else var * f * f
    with np.errstate(divide="ignore", invalid="ignore"):
        ne_d = np.where(d_var[:, 0] > 0, d_val[:, 0] ** 2 / d_var[:, 0], 0.0)
        ne_s = np.where(s_var[:, 0] > 0, s_val[:, 0] ** 2 / s_var[:, 0], 0.0)
        ne_g = np.where(g_var[:, 0] > 0, g_val[:, 0] ** 2 / g_var[:, 0], 0.0)
    return Measurement(
        bin_stats(d_val, ne_d), bin_stats(s_val, ne_s), bin_stats(g_val, ne_g), edges
    )


def calibrate(meas: Measurement, degree: int = 1, where: str = "?") -> RecoilCalibration:
    """Fit the three data/simulation ratios and the simulation's response (see module doc)."""
    if degree < 0:
        raise RecoilCalibrationError(f"degree must be >= 0, got {degree}")
    d, m = meas.data, meas.mc
    ok = (d.n_eff >= MIN_NEFF) & (m.n_eff >= MIN_NEFF)
    for b in (d, m):  # a background subtraction can leave a sparse bin without a width
        for q in QUANTITIES:
            v, e = getattr(b, q), getattr(b, f"{q}_err")
            ok &= np.isfinite(v) & np.isfinite(e) & (e > 0)
        ok &= (b.sigma_par > 0) & (b.sigma_perp > 0)
    if ok.sum() <= degree + 1:
        raise RecoilCalibrationError(
            f"{where}: {int(ok.sum())} qT bins with >= {MIN_NEFF:g} events in data and "
            f"simulation; the degree-{degree} fit needs more"
        )
    qt = m.qt[ok]
    params, covs, fit = [], [], {}
    for q in QUANTITIES:
        p, c, chi2, ndf = fit_ratio(
            qt,
            getattr(d, q)[ok],
            getattr(d, f"{q}_err")[ok],
            getattr(m, q)[ok],
            getattr(m, f"{q}_err")[ok],
            degree,
        )
        params.append(p)
        covs.append(c)
        fit[q] = {
            "chi2": chi2,
            "ndf": ndf,
            "params": p.tolist(),
            "errors": np.sqrt(np.diag(c)).tolist(),
        }
    n = degree + 1
    cov = np.zeros((3 * n, 3 * n))
    for i, c in enumerate(covs):
        cov[i * n : (i + 1) * n, i * n : (i + 1) * n] = c
    g = meas.mc_gen
    okg = (g.n_eff >= MIN_NEFF) & np.isfinite(g.response)
    if okg.sum() <= degree:
        raise RecoilCalibrationError(f"{where}: too few generator-qT bins for the MC response")
    mc_resp, _, _, _ = fit_ratio(
        g.qt[okg], g.response[okg], g.response_err[okg], np.ones(okg.sum()),
        np.zeros(okg.sum()), degree,
    )  # fmt: skip
    info = {
        "bins": {
            "qt_edges": [float(x) for x in meas.edges],
            "data": d.to_json(),
            "mc": m.to_json(),
            "mc_gen": g.to_json(),
        },
        "fit": {**fit, "covariance": cov.tolist()},
    }
    return RecoilCalibration(
        degree,
        np.array(params),
        mc_resp,
        eigen_shifts(cov).reshape(-1, 3, n),
        float(qt.max()),  # beyond the fitted bins the ratios are held constant
        info,
    )
