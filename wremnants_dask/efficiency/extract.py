"""Efficiencies of data and simulation by both methods, flags, and data/simulation scale factors.

``extract(config, data, mc)`` runs the counting and the batched fit on every bin and returns an
``Extraction``: per method and sample the efficiency, its error and a ``flagged`` mask with the
reason. A flagged bin is never used silently: the scale factors of flagged bins fall back to the
other method if that one is good, else they are NaN and the payload writer refuses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wremnants_dask.efficiency.counting import count_efficiency
from wremnants_dask.efficiency.fit import FitResult, fit_efficiencies
from wremnants_dask.efficiency.spectra import Spectra
from wremnants_dask.processors.tnp_config import TnPConfig

METHODS = ("count", "fit")
SAMPLES = ("data", "mc")


@dataclass
class Measurement:
    """One method on one sample: per bin efficiency, error, flags (bit reasons) and counts."""

    eff: np.ndarray
    err: np.ndarray
    flags: np.ndarray  # 0: good; else an OR of FLAG bits
    n_probes: np.ndarray
    fit: FitResult | None = None

    @property
    def good(self) -> np.ndarray:
        return self.flags == 0


FLAGS = {
    1: "too few probes",
    2: "not converged (EDM) or Hessian not positive definite",
    4: "chi2 probability below threshold",
    8: "efficiency outside [0, 1] beyond its error",
    16: "zero or undefined uncertainty",
}


def flag_names(bits: int) -> list[str]:
    return [v for k, v in FLAGS.items() if bits & k]


def _common_flags(eff: np.ndarray, err: np.ndarray, n_probes: np.ndarray, cfg: TnPConfig):
    flags = np.zeros(eff.shape, dtype=np.int64)
    flags |= np.where(n_probes < cfg.min_probes, 1, 0)
    outside = (eff < -np.nan_to_num(err, nan=0)) | (eff > 1 + np.nan_to_num(err, nan=0))
    flags |= np.where(outside | ~np.isfinite(eff), 8, 0)
    flags |= np.where(~np.isfinite(err) | (err <= 0), 16, 0)
    return flags


def measure(spec: Spectra, cfg: TnPConfig, templates: Spectra, *, is_template: bool) -> dict:
    """Both methods on one sample; ``templates`` is the simulation (templates of the fit)."""
    cnt = count_efficiency(
        spec.passing,
        spec.failing,
        spec.passing_var,
        spec.failing_var,
        spec.mass_edges,
        cfg.signal_window,
        cfg.sidebands,
    )
    i0, i1 = np.searchsorted(spec.mass_edges, cfg.fit_range)
    n_fit = spec.passing[:, i0:i1].sum(axis=1) + spec.failing[:, i0:i1].sum(axis=1)
    count = Measurement(
        cnt.eff, cnt.err, _common_flags(cnt.eff, cnt.err, cnt.n_probes, cfg), cnt.n_probes
    )
    # one signal shape per bin for pass and fail: the step's probes of the bin in simulation
    # (the mass line shape does not depend on the probe passing; twice the template statistics)
    tmpl = templates.passing + templates.failing
    res = fit_efficiencies(
        spec.passing,
        spec.failing,
        tmpl,
        tmpl,
        spec.mass_edges,
        cfg.fit_range,
        own_sample=is_template,
    )
    fflags = _common_flags(res.eff, res.err, n_fit, cfg)
    fflags |= np.where(res.converged, 0, 2)
    fflags |= np.where(res.chi2_prob < cfg.chi2_prob_min, 4, 0)
    fit = Measurement(res.eff, res.err, fflags, n_fit, fit=res)
    return {"count": count, "fit": fit}


@dataclass
class Extraction:
    config: TnPConfig
    spectra: dict[str, Spectra]
    results: dict[str, dict[str, Measurement]]  # sample -> method -> measurement
    sf: dict[str, np.ndarray] = field(default_factory=dict)

    def shape(self) -> tuple[int, ...]:
        return self.spectra["mc"].shape

    def summary(self) -> dict[str, Any]:
        """Counts of good and flagged bins per sample/method, and every flagged bin's reason."""
        idx = self.spectra["mc"].bin_index()
        steps = self.spectra["mc"].steps
        out: dict[str, Any] = {}
        for s, by_m in self.results.items():
            for m, meas in by_m.items():
                bad = np.flatnonzero(meas.flags)
                bound = meas.fit.at_bound if meas.fit is not None else None
                out[f"{s}/{m}"] = {
                    "bins": int(meas.flags.size),
                    "flagged": int(bad.size),
                    # eff held at 0 or 1 (error from the likelihood rise there, one-sided)
                    "at_bound": [] if bound is None else [int(b) for b in np.flatnonzero(bound)],
                    "flagged_bins": [
                        {
                            "step": steps[idx["step"][b]],
                            "pt_bin": int(idx["pt"][b]),
                            "eta_bin": int(idx["eta"][b]),
                            "charge_bin": int(idx["charge"][b]),
                            "reasons": flag_names(int(meas.flags[b])),
                            "eff": float(meas.eff[b]),
                            "err": float(meas.err[b]),
                        }
                        for b in bad
                    ],
                }
        return out


def scale_factors(results: dict[str, dict[str, Measurement]], nominal: str = "fit") -> dict:
    """SF = eff_data / eff_mc of the ``nominal`` method, stat error from both (independent
    samples), syst = |SF(nominal) - SF(other method)|. Bins whose nominal measurement is flagged
    take the other method's if good; bins with neither are NaN (``ok`` False)."""
    other = "count" if nominal == "fit" else "fit"

    def sf_of(method: str):
        d, m = results["data"][method], results["mc"][method]
        with np.errstate(divide="ignore", invalid="ignore"):
            sf = d.eff / m.eff
            err = sf * np.hypot(d.err / d.eff, m.err / m.eff)
        return sf, err, d.good & m.good

    sf_n, err_n, ok_n = sf_of(nominal)
    sf_o, err_o, ok_o = sf_of(other)
    sf = np.where(ok_n, sf_n, np.where(ok_o, sf_o, np.nan))
    err = np.where(ok_n, err_n, np.where(ok_o, err_o, np.nan))
    syst = np.where(ok_n & ok_o, np.abs(sf_n - sf_o), 0.0)
    return {"sf": sf, "stat": err, "syst": syst, "ok": ok_n | ok_o, "from_nominal": ok_n}


def extract(cfg: TnPConfig, data: Spectra, mc: Spectra, nominal: str = "fit") -> Extraction:
    """Counting and fits on data and simulation, then the scale factors."""
    if data.shape != mc.shape or not np.array_equal(data.mass_edges, mc.mass_edges):
        raise ValueError(f"data and simulation binning differ: {data.shape} vs {mc.shape}")
    results = {
        "data": measure(data, cfg, mc, is_template=False),
        "mc": measure(mc, cfg, mc, is_template=True),
    }
    ex = Extraction(cfg, {"data": data, "mc": mc}, results)
    ex.sf = scale_factors(results, nominal)
    return ex
