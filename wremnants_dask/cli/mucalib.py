"""``python -m wremnants_dask.mucalib``: fit the muon momentum calibration and write its payload.

Input: the histmaker output of ``-a mz_mucalib`` (Z -> mu mu simulation and data). Output: the
calibration payload (correctionlib JSON, ``.gz`` compressed if so named, written atomically
with the provenance of the fit and of its input) that the W-mass histmaker applies with
``--muon-calibration PAYLOAD``. ``--truth truth.json`` (synthetic inputs) prints the pulls of
the measurement against the generator's data offsets and resolution ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def read_inputs(path: str | Path) -> Any:
    """Sum data and normalised simulation of an ``mz_mucalib`` histmaker output."""
    from wremnants_dask.corrections.momentum_calibration import CalibInputs, CalibrationError
    from wremnants_dask.histograms.histio import HistFile
    from wremnants_dask.inputs.normalization import NormalizationError, info_scale

    hf = HistFile(path)
    binning = (hf.metadata.get("analysis_metadata") or {}).get("momentum_calibration")
    if binning is None:
        raise CalibrationError(
            f"{path}: no momentum_calibration binning in the metadata (not an mz_mucalib output?)"
        )
    infos = {ds: hf.info(ds) for ds in hf.datasets}
    lumi = sum(float(i.get("lumi_pb") or 0.0) for i in infos.values() if i["is_data"])
    if not any(i["is_data"] for i in infos.values()):
        raise CalibrationError(f"{path}: no data dataset")
    if lumi <= 0:
        raise CalibrationError(f"{path}: the data datasets have no luminosity (lumi_pb)")
    data = mc = mc_var = delta = real = real_var = None
    for ds, info in infos.items():
        if "calib_mll" not in hf.names(ds):
            raise CalibrationError(f"{path}: dataset {ds!r} has no histogram 'calib_mll'")
        h = hf.get(ds, "calib_mll")
        vals = np.asarray(h.values(), dtype=np.float64)
        if info["is_data"]:
            data = vals if data is None else data + vals
            continue
        try:
            f = info_scale(info, lumi)
        except NormalizationError as err:
            raise CalibrationError(f"{path}: dataset {ds!r} {err}") from None
        rv = h.variances()
        rv = np.zeros_like(vals) if rv is None else np.asarray(rv, dtype=np.float64)
        real = vals * f if real is None else real + vals * f
        real_var = rv * f * f if real_var is None else real_var + rv * f * f
        for name in ("calib_mll_model", "calib_mll_delta"):
            if name not in hf.names(ds):
                raise CalibrationError(f"{path}: dataset {ds!r} has no histogram {name!r}")
        hm = hf.get(ds, "calib_mll_model")  # the expectation model: the fit's nominal
        vals = np.asarray(hm.values(), dtype=np.float64)
        var = hm.variances()
        var = np.zeros_like(vals) if var is None else np.asarray(var, dtype=np.float64)
        hd = hf.get(ds, "calib_mll_delta")  # (etaPlus, etaMinus, oddEvent, calibVar, mllBin)
        d = np.moveaxis(np.asarray(hd.values(), dtype=np.float64), 3, -1) * f
        mc = vals * f if mc is None else mc + vals * f
        mc_var = var * f * f if mc_var is None else mc_var + var * f * f
        delta = d if delta is None else delta + d
    if mc is None:
        raise CalibrationError(f"{path}: no simulated dataset")
    return CalibInputs(
        eta_edges=np.asarray(binning["eta_edges"], dtype=np.float64),
        res_edges=np.asarray(binning["res_abseta_edges"], dtype=np.float64),
        scale_step=float(binning["scale_step"]),
        res_step=float(binning["res_step"]),
        data=data,
        mc=mc,
        mc_var=mc_var,
        mc_real=real,
        mc_real_var=real_var,
        delta=delta,
        source=str(path),
        metadata=hf.metadata,
    )


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wremnants_dask.mucalib", description=__doc__)
    p.add_argument("histograms", help="mz_mucalib histmaker output (HDF5)")
    p.add_argument("-o", "--output", required=True, help="payload path (.json or .json.gz)")
    p.add_argument("--truth", help="truth.json of synthetic pseudo-data: print the pulls")
    return p


def truth_values(truth_path: str | Path, eta_edges: np.ndarray, n_res: int) -> np.ndarray:
    """The generator's values of the calibration parameters: per calibration eta bin the mean
    of the data/simulation scale offsets of the truth's eta bins inside it (the calibration
    bins must be unions of them), and the data/simulation resolution ratio."""
    t = json.loads(Path(truth_path).read_text())
    try:
        ms = t["momentum_scale"]
        edges = np.asarray(ms["eta_edges"], dtype=np.float64)
        rel = (1.0 + np.asarray(ms["data"])) / (1.0 + np.asarray(ms.get("mc", 0.0))) - 1.0
        k = t["resolution"]["k"]
        ratio = float(k["data"]) / float(k["mc"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{truth_path}: no momentum_scale/resolution truth ({exc})") from None
    out = []
    for lo, hi in zip(eta_edges[:-1], eta_edges[1:]):
        inside = (edges[:-1] >= lo - 1e-9) & (edges[1:] <= hi + 1e-9)
        if not inside.any() or not np.isclose(edges[:-1][inside].min(), lo):
            raise ValueError(
                f"{truth_path}: calibration bin [{lo}, {hi}] is not a union of truth eta bins"
            )
        out.append(rel[inside].mean())
    return np.r_[out, np.full(n_res, ratio)]


def summary(cal: Any, names: list[str], truth: np.ndarray | None) -> str:
    lines = [f"calibration fit: chi2/ndf = {cal.chi2:.1f}/{cal.ndf}"]
    vals, errs = cal.values, cal.errors
    for i, name in enumerate(names):
        line = f"  {name:32s} {vals[i]:+.6f} +- {errs[i]:.6f}"
        if truth is not None:
            line += f"   truth {truth[i]:+.6f}  pull {(vals[i] - truth[i]) / errs[i]:+.2f}"
        lines.append(line)
    for r, (res, err) in enumerate(zip(cal.closure_residual, cal.closure_error)):
        lines.append(f"  closure region {r}: residual {res:+.6f} +- {err:.6f}")
    if truth is not None:
        d = vals - truth
        chi2 = float(d @ np.linalg.solve(cal.cov, d))
        lines.append(f"  chi2 of the measurement vs truth: {chi2:.1f} / {d.size}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Path:
    args = make_parser().parse_args(argv)
    from wremnants_dask.corrections import momentum_calibration as mcal
    from wremnants_dask.utils.provenance import file_sha256, make_metadata

    inp = read_inputs(args.histograms)
    cal = mcal.calibrate(inp)
    truth = truth_values(args.truth, inp.eta_edges, inp.n_res) if args.truth else None
    print(summary(cal, inp.param_names(), truth))
    meta = make_metadata(
        vars(args),
        input_files=[str(Path(args.histograms).resolve())],
        inputs_metadata=[inp.metadata],
        stage="mucalib",
        input_sha256=file_sha256(args.histograms),
        parameters=inp.param_names(),
    )
    out = mcal.write_payload(cal, args.output, meta)
    print(f"wrote {out}")
    return out


def console_main(argv: list[str] | None = None) -> int:
    """``main`` with errors as one line on stderr and exit code 1."""
    from wremnants_dask.corrections.momentum_calibration import CalibrationError

    try:
        main(argv)
    except (CalibrationError, ValueError, OSError) as err:
        print(f"mucalib: error: {err}", file=sys.stderr)
        return 1
    return 0
