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
from wremnants_dask.efficiency.fit import BIN_FIELDS, FitResult, fit_efficiencies
from wremnants_dask.efficiency.spectra import Spectra
from wremnants_dask.efficiency.splot import splot_efficiencies
from wremnants_dask.processors.tnp_config import TnPConfig

METHODS = ("count", "fit", "splot")
# data-only alternative fits: name -> (signal, background) of fit_efficiencies
ALTERNATIVE_MODELS = {
    "voigt": ("voigt", "exp"),
    "cb": ("cb", "exp"),
    "linear": ("template", "linear"),
}
# systematic groups: the alternatives of one group are one source (largest shift taken)
SYST_GROUPS = {
    "signal_model": ("fit_voigt", "fit_cb"),
    "background_model": ("fit_linear",),
    "method": ("count", "splot"),
}
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
    sp = splot_efficiencies(
        spec.passing, spec.failing, tmpl, spec.mass_edges, cfg.fit_range, own_sample=is_template
    )
    sflags = _common_flags(sp.eff, sp.err, n_fit, cfg)
    sflags |= np.where(sp.fit.converged, 0, 2)
    out = {"count": count, "fit": fit, "splot": Measurement(sp.eff, sp.err, sflags, n_fit, sp.fit)}
    if not is_template:
        for name in cfg.alternatives:
            out[f"fit_{name}"] = fit_measurement(spec, cfg, tmpl, *ALTERNATIVE_MODELS[name])
    return out


def fit_measurement(
    spec: Spectra,
    cfg: TnPConfig,
    tmpl: np.ndarray,
    signal: str = "template",
    background: str = "exp",
    fit_range: tuple[float, float] | None = None,
    rows: np.ndarray | None = None,
) -> Measurement:
    """One batched fit of ``spec`` (all bins, or the flat bins ``rows``) with a given model,
    flagged like the nominal fit."""
    sel = slice(None) if rows is None else np.asarray(rows)
    fr = tuple(fit_range or cfg.fit_range)
    res = fit_efficiencies(
        spec.passing[sel],
        spec.failing[sel],
        tmpl[sel],
        tmpl[sel],
        spec.mass_edges,
        fr,
        signal=signal,
        background=background,
    )
    i0, i1 = np.searchsorted(spec.mass_edges, fr)
    n_fit = spec.passing[sel, i0:i1].sum(axis=1) + spec.failing[sel, i0:i1].sum(axis=1)
    flags = _common_flags(res.eff, res.err, n_fit, cfg)
    flags |= np.where(res.converged, 0, 2)
    flags |= np.where(res.chi2_prob < cfg.chi2_prob_min, 4, 0)
    return Measurement(res.eff, res.err, flags, n_fit, fit=res)


@dataclass
class Extraction:
    config: TnPConfig
    spectra: dict[str, Spectra]
    results: dict[str, dict[str, Measurement]]  # sample -> method -> measurement
    sf: dict[str, np.ndarray] = field(default_factory=dict)
    nominal: str = "fit"

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


def replace_bins(meas: Measurement, rows: np.ndarray, new: Measurement) -> None:
    """Put the measurement ``new`` of the flat bins ``rows`` (a refit) into ``meas``."""
    rows = np.asarray(rows)
    for k in ("eff", "err", "flags", "n_probes"):
        getattr(meas, k)[rows] = getattr(new, k)
    if meas.fit is not None and new.fit is not None:
        for k in BIN_FIELDS:
            old, val = getattr(meas.fit, k), getattr(new.fit, k)
            if old is not None and val is not None:
                old[rows] = val


def scale_factors(results: dict[str, dict[str, Measurement]], nominal: str = "fit") -> dict:
    """SF = eff_data / eff_mc of the ``nominal`` method, stat error from both (independent
    samples). Bins whose nominal measurement is flagged take the other of fit/count if good;
    bins with neither are NaN (``ok`` False).

    Systematics (``syst_<group>``, SYST_GROUPS): per group the largest |SF(alternative) -
    SF(nominal)| over its alternatives good in that bin; an alternative fit of the data (other
    signal or background model) is divided by the nominal simulation efficiency, another
    method (counting, sPlot) uses that method on both samples. ``syst``: the groups in
    quadrature.
    """
    other = "count" if nominal == "fit" else "fit"

    def sf_of(method: str):
        d = results["data"][method]
        m = results["mc"][method] if method in results["mc"] else results["mc"][nominal]
        with np.errstate(divide="ignore", invalid="ignore"):
            sf = d.eff / m.eff
            err = sf * np.hypot(d.err / d.eff, m.err / m.eff)
        return sf, err, d.good & m.good

    sf_n, err_n, ok_n = sf_of(nominal)
    sf_o, err_o, ok_o = sf_of(other)
    sf = np.where(ok_n, sf_n, np.where(ok_o, sf_o, np.nan))
    err = np.where(ok_n, err_n, np.where(ok_o, err_o, np.nan))
    out = {"sf": sf, "stat": err, "ok": ok_n | ok_o, "from_nominal": ok_n}
    total = np.zeros_like(sf)
    for group, members in SYST_GROUPS.items():
        shift = np.zeros_like(sf)
        for alt in (a for a in members if a in results["data"] and a != nominal):
            sf_a, _, ok_a = sf_of(alt)
            shift = np.where(ok_a & out["ok"], np.maximum(shift, np.abs(sf_a - sf)), shift)
        if nominal == "count" and group == "method":
            sf_a, _, ok_a = sf_of("fit")
            shift = np.where(ok_a & out["ok"], np.maximum(shift, np.abs(sf_a - sf)), shift)
        out[f"syst_{group}"] = shift
        total = total + shift**2
    out["syst"] = np.sqrt(total)
    return out


def extract(cfg: TnPConfig, data: Spectra, mc: Spectra, nominal: str = "fit") -> Extraction:
    """Counting and fits on data and simulation, then the scale factors."""
    if data.shape != mc.shape or not np.array_equal(data.mass_edges, mc.mass_edges):
        raise ValueError(f"data and simulation binning differ: {data.shape} vs {mc.shape}")
    results = {
        "data": measure(data, cfg, mc, is_template=False),
        "mc": measure(mc, cfg, mc, is_template=True),
    }
    ex = Extraction(cfg, {"data": data, "mc": mc}, results, nominal=nominal)
    ex.sf = scale_factors(results, nominal)
    return ex
