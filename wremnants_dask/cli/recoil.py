"""``python -m wremnants_dask.recoil HISTS.hdf5 -o recoil_calibration.json``: measure the recoil.

Reads the ``mz_recoil`` histmaker output (``python -m wremnants_dask.histmaker -a mz_recoil``),
subtracts the simulated backgrounds from the data, fits the data/simulation ratios of the
recoil response and resolutions in qT (``corrections/recoil_calibration.py``) and writes the
calibration file that ``histmaker -a mw --recoil-calibration FILE`` applies to W simulation.
"""

from __future__ import annotations

import argparse
import sys

from wremnants_dask.corrections.recoil_calibration import (
    QUANTITIES,
    RecoilCalibrationError,
    calibrate,
    collect,
)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wremnants_dask.recoil", description=__doc__)
    p.add_argument("histograms", help="mz_recoil histmaker output (HDF5)")
    p.add_argument("-o", "--output", required=True, help="calibration file to write (JSON)")
    p.add_argument("--degree", type=int, default=1, help="polynomial degree in qT of the ratios")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from wremnants_dask.histograms.histio import HistFile
    from wremnants_dask.utils.provenance import make_metadata

    try:
        with HistFile(args.histograms) as hf:
            meas = collect(hf)
        cal = calibrate(meas, args.degree, where=args.histograms)
    except (RecoilCalibrationError, OSError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cal.info["provenance"] = make_metadata(
        vars(args), input_files=[args.histograms], stage="recoil"
    )
    cal.save(args.output)
    for q in QUANTITIES:
        fit = cal.info["fit"][q]
        terms = ", ".join(f"{p:.4f} +- {e:.4f}" for p, e in zip(fit["params"], fit["errors"]))
        print(f"{q} data/sim: [{terms}] (chi2 {fit['chi2']:.1f} / {fit['ndf']})")
    print(f"{cal.n_eigen} eigen-variations -> {args.output}")
    return 0
