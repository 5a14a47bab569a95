"""Outputs of the tag-and-probe extraction: tables (CSV, HDF5), fit summary, correctionlib payload.

The payload has exactly the layout the W-mass processor reads (``corrections/build.py``):
``muon_sf_<step>`` on the generator's fine (eta, pT) grid with variations nominal, syst_up/down,
stat_up/down x eigen, and ``muon_eff_mc``. Each fine cell carries the measurement of the coarse
bin holding it (charges combined by inverse-variance weighting, the payload has no charge
input). Statistical eigen-variations: one per coarse pT bin (the bins are independent
measurements, so the covariance in each eta row is diagonal and its eigenvectors are the bins).
The other corrections (pileup, resolution, scale, prefiring) and the provenance of the reference
masses come from a base payload: the one the W-mass processor would read otherwise (the shipped
``corrections/wremnants_corrections.json.gz`` by default, ``base_from_file``) or one built from
a truth record (``base_from_truth``). A bin without a good measurement is an error, never a
silent default.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from wremnants_dask.corrections import build as cbuild
from wremnants_dask.efficiency.extract import Extraction, missing_bins
from wremnants_dask.efficiency.fit import BIN_FIELDS
from wremnants_dask.processors.tnp import FINE_ETA, FINE_PT
from wremnants_dask.utils.atomic import atomic_path, atomic_write_text


def _combine_charge(val: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-variance average over the last (charge) axis."""
    w = 1.0 / err**2
    return (val * w).sum(-1) / w.sum(-1), 1.0 / np.sqrt(w.sum(-1))


def _to_fine(coarse: np.ndarray, pt_edges: np.ndarray, eta_edges: np.ndarray) -> np.ndarray:
    """(..., n_pt, n_eta) coarse values -> (..., 48 eta, 48 pt) on the fine payload grid."""
    ip = np.clip(np.searchsorted(pt_edges, 0.5 * (FINE_PT[1:] + FINE_PT[:-1])) - 1, 0, None)
    ie = np.clip(np.searchsorted(eta_edges, 0.5 * (FINE_ETA[1:] + FINE_ETA[:-1])) - 1, 0, None)
    out = coarse[..., ip, :][..., ie]  # (..., fine pt, fine eta)
    return np.swapaxes(out, -1, -2)


def sf_payload_tables(
    ex: Extraction, smooth: dict | None = None
) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """Per step the payload tables (nominal, stat eigen (eta, eig, pt), syst) and MC effs.

    ``smooth`` (efficiency.smooth.smooth_all): nominal and stat eigen-variations from the
    smoothing evaluated at the fine pT centres; else the binned SFs with one variation per
    coarse pT bin."""
    spec = ex.spectra["mc"]
    shape = spec.shape
    sf = ex.sf["sf"].reshape(shape)
    stat = ex.sf["stat"].reshape(shape)
    syst = ex.sf["syst"].reshape(shape)
    if not np.all(ex.sf["ok"]):
        bad = missing_bins(ex)
        raise ValueError(
            f"{len(bad)} scale-factor bins have no good measurement: {'; '.join(bad)} "
            "(see the fit summary); refit them or change the binning before writing a payload"
        )
    mc = ex.results["mc"]["fit"]
    mc_eff = np.where(mc.good, mc.eff, ex.results["mc"]["count"].eff).reshape(shape)
    mc_err = np.where(mc.good, mc.err, ex.results["mc"]["count"].err).reshape(shape)
    tables, effs = {}, {}
    n_pt = shape[1]
    for s, step in enumerate(spec.steps):
        nom, err = _combine_charge(sf[s], stat[s])
        sy = syst[s].mean(-1)
        eff, _ = _combine_charge(mc_eff[s], mc_err[s])
        # eigen k: the stat error of coarse pT bin k, zero elsewhere
        eig = np.zeros((n_pt, n_pt, nom.shape[1]))
        eig[np.arange(n_pt), np.arange(n_pt)] = err
        tables[step] = {
            "nominal": _to_fine(nom, spec.pt_edges, spec.eta_edges),
            "stat": np.moveaxis(_to_fine(eig, spec.pt_edges, spec.eta_edges), 0, 1),
            "syst": _to_fine(sy, spec.pt_edges, spec.eta_edges),
        }
        if smooth is not None:
            nom_f, var_f = smooth[step].evaluate(0.5 * (FINE_PT[1:] + FINE_PT[:-1]))
            ie = np.clip(
                np.searchsorted(spec.eta_edges, 0.5 * (FINE_ETA[1:] + FINE_ETA[:-1])) - 1, 0, None
            )
            tables[step]["nominal"] = nom_f[ie]  # (fine eta, fine pt)
            tables[step]["stat"] = var_f[ie]  # (fine eta, eigen, fine pt)
        effs[step] = _to_fine(eff, spec.pt_edges, spec.eta_edges)
    return tables, effs


#: corrections the measurement replaces; everything else is taken from the base payload
MEASURED = tuple(f"muon_sf_{s}" for s in cbuild.SF_STEPS) + ("muon_eff_mc",)


def base_from_truth(truth: dict[str, Any]) -> dict[str, Any]:
    """Base CorrectionSet built from a generator truth record (``corrections.build``)."""
    return cbuild.build_payload(truth)


def base_from_file(path: str | Path | None = None) -> dict[str, Any]:
    """Base CorrectionSet read from a payload file (None: the shipped one the W-mass processor
    reads by default), checked like the processor checks it; its path and SHA-256 are recorded
    in the measured payload's provenance."""
    from wremnants_dask.corrections.payload import CorrectionsPayload
    from wremnants_dask.utils.provenance import file_sha256

    payload = CorrectionsPayload(path)  # CorrectionError naming the file if unusable
    cset = read_payload(payload.path)
    meta = json.loads(cset.get("description") or "{}")
    meta["base_payload"] = {"path": str(payload.path), "sha256": file_sha256(payload.path)}
    cset["description"] = json.dumps(meta, sort_keys=True)
    return cset


def build_measured_payload(
    ex: Extraction, base: dict[str, Any], smooth: dict | None = None
) -> dict[str, Any]:
    """The base CorrectionSet (``base_from_file`` / ``base_from_truth``) with the muon SFs and
    MC efficiencies replaced by the measured ones (same names, inputs and grid), smoothed in
    pT if ``smooth`` is given; pileup, momentum scale, resolution, prefiring and the reference
    masses of the provenance stay the base's."""
    if "corrections" not in base:
        raise ValueError("base payload is not a CorrectionSet (no 'corrections')")
    names = {c.get("name") for c in base["corrections"]}
    if missing := [n for n in MEASURED if n not in names]:
        raise ValueError(f"base payload lacks {missing}: not a W-mass corrections payload")
    cset = json.loads(json.dumps(base))  # the caller's base stays untouched
    tables, effs = sf_payload_tables(ex, smooth)
    steps = list(tables)
    if steps != [s for s in cbuild.CHAIN_STEPS if s in steps] or set(cbuild.SF_STEPS) - set(steps):
        raise ValueError(
            f"payload needs the steps {cbuild.SF_STEPS} (reco optional, first), measured {steps}"
        )
    edges = [FINE_ETA, FINE_PT]
    new = [cbuild.sf_correction(s, *edges, tables[s]) for s in steps]
    new.append(
        cbuild.mc_eff_correction(
            {"efficiency": {"eta_edges": list(FINE_ETA), "pt_edges": list(FINE_PT), "mc": effs}}
        )
    )
    # every scale factor measured or none: a truth SF of a step not measured (reco on files
    # without IsoTrack) is dropped, not mixed in
    ours = {f"muon_sf_{s}" for s in cbuild.CHAIN_STEPS} | {"muon_eff_mc"}
    old = cset["corrections"]
    first = next(i for i, c in enumerate(old) if c["name"] in ours)
    rest = [c for c in old if c["name"] not in ours]
    cset["corrections"] = rest[:first] + new + rest[first:]
    meta = json.loads(cset["description"])
    meta["source"] = "tag-and-probe measurement (muon_sf_*, muon_eff_mc); truth for the rest"
    meta["n_eigen"] = int(next(iter(tables.values()))["stat"].shape[1])
    # the eta bins the SFs were measured in: every fine eta bin of one measured bin carries the
    # same stat eigen-variations, so the fit must vary them together (one nuisance per bin)
    meta["sf_stat_eta_edges"] = [float(x) for x in ex.spectra["mc"].eta_edges]
    meta["sf_smoothing"] = (
        None
        if smooth is None
        else {k: {"degree": v.degree, "unsmoothed_pt_bins": v.first} for k, v in smooth.items()}
    )
    cset["description"] = json.dumps(meta, sort_keys=True)
    import correctionlib.schemav2 as schema

    schema.CorrectionSet.model_validate(cset)
    return cset


def write_payload(cset: dict[str, Any], outdir: str | Path) -> Path:
    return cbuild.write_payload(cset, outdir)


COLUMNS = [
    "step",
    "pt_lo",
    "pt_hi",
    "eta_lo",
    "eta_hi",
    "charge_bin",
    "sample",
    "method",
    "eff",
    "err",
    "flags",
    "n_probes",
]


def table_rows(ex: Extraction) -> list[dict[str, Any]]:
    spec = ex.spectra["mc"]
    idx = spec.bin_index()
    rows = []
    for sample, by_m in ex.results.items():
        for method, m in by_m.items():
            for b in range(spec.n_bins):
                ip, ie = idx["pt"][b], idx["eta"][b]
                rows.append(
                    {
                        "step": spec.steps[idx["step"][b]],
                        "pt_lo": spec.pt_edges[ip],
                        "pt_hi": spec.pt_edges[ip + 1],
                        "eta_lo": spec.eta_edges[ie],
                        "eta_hi": spec.eta_edges[ie + 1],
                        "charge_bin": int(idx["charge"][b]),
                        "sample": sample,
                        "method": method,
                        "eff": float(m.eff[b]),
                        "err": float(m.err[b]),
                        "flags": int(m.flags[b]),
                        "n_probes": float(m.n_probes[b]),
                    }
                )
    return rows


# eff and err are stored with every method's own results, the rest under its "fit" group
FIT_FIELDS = tuple(k for k in BIN_FIELDS if k not in ("eff", "err"))


def write_tables(
    ex: Extraction, outdir: str | Path, attrs: dict[str, Any] | None = None
) -> dict[str, Path]:
    """efficiencies.csv, efficiencies.hdf5 (per sample/method arrays, every fit result, the
    scale factors, and ``attrs``: where the histograms, config and truth came from, the
    refits) and fit_summary.json (flagged bins with reasons), each written atomically.
    ``read_extraction`` rebuilds the Extraction from them (the refit command)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS)
    w.writeheader()
    w.writerows(table_rows(ex))
    paths = {"csv": atomic_write_text(outdir / "efficiencies.csv", buf.getvalue())}
    spec = ex.spectra["mc"]
    h5 = outdir / "efficiencies.hdf5"
    with atomic_path(h5) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["steps"] = json.dumps(spec.steps)
        f.attrs["axes"] = json.dumps(["step", "pt", "eta", "charge"])
        f.attrs["nominal"] = ex.nominal
        for k, v in (attrs or {}).items():
            f.attrs[k] = json.dumps(v)
        for name in ("pt_edges", "eta_edges", "charge_edges", "mass_edges"):
            f[name] = getattr(spec, name)
        for sample, by_m in ex.results.items():
            for method, m in by_m.items():
                g = f.create_group(f"{sample}/{method}")
                for k in ("eff", "err", "flags", "n_probes", "at_bound"):
                    if getattr(m, k) is not None:
                        g[k] = np.asarray(getattr(m, k)).reshape(spec.shape)
                if m.fit is not None:
                    fg = g.create_group("fit")
                    fg.attrs["iterations"] = m.fit.iterations
                    for k in FIT_FIELDS:
                        v = getattr(m.fit, k)
                        if v is not None:
                            v = np.asarray(v)
                            fg[k] = v.reshape(*spec.shape, *v.shape[1:])
        g = f.create_group("scale_factors")
        for k, v in ex.sf.items():
            g[k] = np.asarray(v).reshape(spec.shape)
    paths["hdf5"] = h5
    paths["summary"] = atomic_write_text(
        outdir / "fit_summary.json", json.dumps(ex.summary(), indent=1)
    )
    return paths


def read_extraction(outdir: str | Path, cfg: Any, data: Any, mc: Any) -> tuple[Extraction, dict]:
    """The Extraction written by ``write_tables`` into ``outdir`` (with the spectra it was
    measured on) and the attributes written with it."""
    from wremnants_dask.efficiency.extract import Measurement
    from wremnants_dask.efficiency.fit import FitResult

    path = Path(outdir) / "efficiencies.hdf5"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no efficiency tables (run python -m wremnants_dask.tnp)")
    results: dict[str, dict[str, Measurement]] = {}
    with h5py.File(path, "r") as f:
        shape = tuple(data.shape)
        if tuple(f["scale_factors/sf"].shape) != shape:
            raise ValueError(f"{path}: bins {f['scale_factors/sf'].shape} != spectra {shape}")
        attrs = {k: json.loads(v) for k, v in f.attrs.items() if k not in ("nominal",)}
        nominal = str(f.attrs.get("nominal", "fit"))
        for sample in ("data", "mc"):
            results[sample] = {}
            for method, g in f[sample].items():
                fit = None
                if "fit" in g:
                    fg = g["fit"]
                    kw = {k: np.asarray(fg[k]).reshape(-1, *fg[k].shape[4:]) for k in fg}
                    fit = FitResult(
                        eff=np.asarray(g["eff"]).ravel(),
                        err=np.asarray(g["err"]).ravel(),
                        iterations=int(fg.attrs["iterations"]),
                        **kw,
                    )
                bound = np.asarray(g["at_bound"]).ravel() if "at_bound" in g else None
                if bound is None and fit is not None:
                    bound = fit.at_bound
                results[sample][method] = Measurement(
                    *(np.asarray(g[k]).ravel() for k in ("eff", "err", "flags", "n_probes")),
                    fit=fit,
                    at_bound=bound,
                )
    from wremnants_dask.efficiency.extract import scale_factors

    ex = Extraction(cfg, {"data": data, "mc": mc}, results, nominal=nominal)
    ex.sf = scale_factors(results, nominal)
    return ex, attrs


def read_payload(path: str | Path) -> dict[str, Any]:
    with gzip.open(path, "rt") as f:
        return json.load(f)
