"""Efficiencies of data and simulation by both methods, flags, and data/simulation scale factors.

``extract(config, data, mc)`` runs the counting and the batched fit on every bin and returns an
``Extraction``: per method and sample the efficiency, its error and a ``flagged`` mask with the
reason. A flagged bin is never used silently: the scale factors of flagged bins fall back to the
other method if that one is good; a bin whose only flag is "too few probes" is used (nominal
method first) and listed as low-statistics in the summary; anything else is NaN and the
smoothing and payload writer refuse it, naming the bin. An efficiency at its bound 0 or 1 (no
failing or no passing probe) carries a one-sided error (efficiency.bounds) and is listed, not
flagged.
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
    at_bound: np.ndarray | None = None  # eff held at 0 or 1 with a one-sided error

    @property
    def good(self) -> np.ndarray:
        return self.flags == 0

    @property
    def usable(self) -> np.ndarray:
        """Good, or flagged only for too few probes with a finite efficiency and a positive
        error (a low-statistics measurement: used with its error, listed in the summary)."""
        finite = np.isfinite(self.eff) & np.isfinite(self.err) & (self.err > 0)
        return ((self.flags & ~LOW_STAT) == 0) & finite & (self.n_probes > 0)


FLAGS = {
    1: "too few probes",
    2: "not converged (EDM) or Hessian not positive definite",
    4: "chi2 probability below threshold",
    8: "efficiency outside [0, 1] beyond its error",
    16: "zero or undefined uncertainty",
}


LOW_STAT = 1  # the flag a low-statistics measurement may carry and still be used


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
        cnt.eff,
        cnt.err,
        _common_flags(cnt.eff, cnt.err, cnt.n_probes, cfg),
        cnt.n_probes,
        at_bound=cnt.at_bound,
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
    fit = Measurement(res.eff, res.err, fflags, n_fit, fit=res, at_bound=res.at_bound)
    sp = splot_efficiencies(
        spec.passing, spec.failing, tmpl, spec.mass_edges, cfg.fit_range, own_sample=is_template
    )
    sflags = _common_flags(sp.eff, sp.err, n_fit, cfg)
    sflags |= np.where(sp.fit.converged, 0, 2)
    splot = Measurement(sp.eff, sp.err, sflags, n_fit, sp.fit, at_bound=sp.at_bound)
    out = {"count": count, "fit": fit, "splot": splot}
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
    return Measurement(res.eff, res.err, flags, n_fit, fit=res, at_bound=res.at_bound)


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
        """Counts of good and flagged bins per sample/method, every flagged bin's reason, the
        bins at a bound (one-sided error), and under ``scale_factors`` the SF bins measured
        with too few probes (used with their error) or without any usable measurement."""
        idx = self.spectra["mc"].bin_index()
        steps = self.spectra["mc"].steps

        def where(b: int) -> dict[str, Any]:
            return {
                "step": steps[idx["step"][b]],
                "pt_bin": int(idx["pt"][b]),
                "eta_bin": int(idx["eta"][b]),
                "charge_bin": int(idx["charge"][b]),
            }

        out: dict[str, Any] = {}
        for s, by_m in self.results.items():
            for m, meas in by_m.items():
                bad = np.flatnonzero(meas.flags)
                bound = np.zeros(meas.eff.shape, bool) if meas.at_bound is None else meas.at_bound
                out[f"{s}/{m}"] = {
                    "bins": int(meas.flags.size),
                    "flagged": int(bad.size),
                    # eff held at 0 or 1 (one-sided error, efficiency.bounds)
                    "at_bound": [int(b) for b in np.flatnonzero(bound)],
                    "at_bound_bins": [
                        {**where(b), "eff": float(meas.eff[b]), "err": float(meas.err[b])}
                        for b in np.flatnonzero(bound)
                    ],
                    "flagged_bins": [
                        {
                            **where(b),
                            "reasons": flag_names(int(meas.flags[b])),
                            "eff": float(meas.eff[b]),
                            "err": float(meas.err[b]),
                        }
                        for b in bad
                    ],
                }
        if self.sf:
            low = self.sf.get("low_stat", np.zeros(self.sf["ok"].shape, bool))
            bad = [(b, "scale factor from a low-statistics measurement (too few probes)")
                   for b in np.flatnonzero(low)]  # fmt: skip
            bad += [(b, missing_reason(self, b)) for b in np.flatnonzero(~self.sf["ok"])]
            out["scale_factors"] = {
                "bins": int(self.sf["ok"].size),
                "flagged": len(bad),
                "flagged_bins": [
                    {
                        **where(b),
                        "reasons": [why],
                        "eff": float(self.sf["sf"][b]),
                        "err": float(self.sf["stat"][b]),
                    }
                    for b, why in sorted(bad)
                ],
            }
        return out


def bin_label(spec: Spectra, b: int) -> str:
    """'step iso, pt bin 3 [48, 80] GeV, eta bin 3 [1.2, 2.4], charge bin 0' of flat bin b."""
    step, ip, ie, ic = np.unravel_index(int(b), spec.shape)
    pt, eta = spec.pt_edges, spec.eta_edges
    return (
        f"step {spec.steps[step]}, pt bin {ip} [{pt[ip]:g}, {pt[ip + 1]:g}] GeV, "
        f"eta bin {ie} [{eta[ie]:g}, {eta[ie + 1]:g}], charge bin {ic}"
    )


def missing_reason(ex: Extraction, b: int) -> str:
    """Why flat bin ``b`` has no scale factor: no probes in a sample, else the flags."""
    empty = [s for s in SAMPLES if ex.results[s][ex.nominal].n_probes[b] <= 0]
    if empty:
        return f"no probes in {' and '.join('simulation' if s == 'mc' else s for s in empty)}"
    why = []
    for s in SAMPLES:
        for m in (ex.nominal, "count" if ex.nominal == "fit" else "fit"):
            meas = ex.results[s][m]
            if not meas.usable[b]:
                reasons = flag_names(int(meas.flags[b])) or ["undefined efficiency"]
                why.append(f"{s}/{m}: {', '.join(reasons)}")
    return "no usable measurement (" + "; ".join(why) + ")"


def missing_bins(ex: Extraction) -> list[str]:
    """One line per bin without a scale factor: the bin (step and indices) and why."""
    spec = ex.spectra["mc"]
    return [f"{bin_label(spec, b)}: {missing_reason(ex, b)}" for b in np.flatnonzero(~ex.sf["ok"])]


def replace_bins(meas: Measurement, rows: np.ndarray, new: Measurement) -> None:
    """Put the measurement ``new`` of the flat bins ``rows`` (a refit) into ``meas``."""
    rows = np.asarray(rows)
    for k in ("eff", "err", "flags", "n_probes"):
        getattr(meas, k)[rows] = getattr(new, k)
    if meas.at_bound is not None and new.at_bound is not None:
        meas.at_bound[rows] = new.at_bound
    if meas.fit is not None and new.fit is not None:
        for k in BIN_FIELDS:
            old, val = getattr(meas.fit, k), getattr(new.fit, k)
            if old is not None and val is not None:
                old[rows] = val


def scale_factors(results: dict[str, dict[str, Measurement]], nominal: str = "fit") -> dict:
    """SF = eff_data / eff_mc of the ``nominal`` method, stat error from both (independent
    samples). Bins whose nominal measurement is flagged take the other of fit/count if good;
    bins with neither take the first of them flagged only for too few probes (``low_stat``:
    a measurement with its error, listed in the summary); bins without any are NaN (``ok``
    False). An efficiency at a bound enters with its one-sided error.

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
            # (a data efficiency at 0 keeps its error: sf * d.err / d.eff would be 0 * inf)
            err = np.hypot(d.err, sf * m.err) / m.eff
        return sf, err, d.good & m.good, d.usable & m.usable

    sf_n, err_n, ok_n, use_n = sf_of(nominal)
    sf_o, err_o, ok_o, use_o = sf_of(other)
    choice = [ok_n, ok_o, use_n, use_o]
    sf = np.select(choice, [sf_n, sf_o, sf_n, sf_o], np.nan)
    err = np.select(choice, [err_n, err_o, err_n, err_o], np.nan)
    good = ok_n | ok_o
    ok = good | use_n | use_o
    out = {"sf": sf, "stat": err, "ok": ok, "from_nominal": ok_n, "low_stat": ok & ~good}
    total = np.zeros_like(sf)
    for group, members in SYST_GROUPS.items():
        shift = np.zeros_like(sf)
        for alt in (a for a in members if a in results["data"] and a != nominal):
            sf_a, _, ok_a, _ = sf_of(alt)
            shift = np.where(ok_a & out["ok"], np.maximum(shift, np.abs(sf_a - sf)), shift)
        if nominal == "count" and group == "method":
            sf_a, _, ok_a, _ = sf_of("fit")
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
