"""``python -m wremnants_dask.plot FITRESULTS.hdf5 -o DIR``: plots and a summary of a fit."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from wremnants_dask.plotting.report import make_plots
from wremnants_dask.utils.atomic import atomic_write_text
from wremnants_dask.utils.provenance import make_metadata


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m wremnants_dask.plot", description=make_plots.__doc__
    )
    p.add_argument("input", help="fit result HDF5 (python -m wremnants_dask.fit)")
    p.add_argument("-o", "--outfolder", default="plots")
    args = p.parse_args(argv)
    path = Path(args.input)
    if not path.exists():
        print(f"error: fit result {path} does not exist", file=sys.stderr)
        return 2
    outdir = Path(args.outfolder)
    summary = make_plots(path, outdir)
    fit_meta = summary.pop("fit_metadata")
    summary["metadata"] = make_metadata(
        vars(args), input_files=[str(path)], inputs_metadata=[fit_meta], stage="plot"
    )
    atomic_write_text(outdir / "summary.json", json.dumps(summary, indent=1))
    print(f"wrote {len(summary['plots'])} plots and summary.json to {outdir}")
    m = summary["mass"]
    if m is not None:
        print(
            f"  m = {m['mass_mev']:.1f} MeV  (shift {m['shift_mev']:+.1f} +- {m['uncertainty_mev']:.1f} MeV"
            f" from the reference {m['reference_mev']:.1f} MeV)"
        )
        for g, v in sorted(m.get("impacts_mev", {}).items(), key=lambda kv: -kv[1]):
            print(f"    {g:20s} {v:8.2f} MeV")
    return 0
