"""``python -m wremnants_dask.setup_fit INPUT.hdf5 -o DIR``: a histmaker output -> a fit input."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from wremnants_dask.fitsetup.config import SetupError, default_config, load_fit_config
from wremnants_dask.fitsetup.setup import build_fit_input
from wremnants_dask.histograms.histio import HistFile
from wremnants_dask.utils.provenance import make_metadata


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m wremnants_dask.setup_fit",
        description="Write the fit input (HDF5) from a histmaker output.",
    )
    p.add_argument("input", help="histmaker output (HDF5)")
    p.add_argument("-o", "--outfolder", default="fitinput", help="output folder")
    p.add_argument(
        "--analysis", default=None, help="mw, mz_wlike or mz_dilepton (default: from the file)"
    )
    p.add_argument(
        "--fit-config",
        default=None,
        help="fit config YAML (processes, systematics, non-prompt method; docs/DESIGN.md); "
        "default: the packaged configs/fit_<analysis>.yaml",
    )
    p.add_argument("--asimov", action="store_true", help="fit the expectation instead of the data")
    p.add_argument("--exclude-groups", nargs="*", default=[], help="systematic groups to leave out")
    p.add_argument(
        "--lumiScale",
        type=float,
        default=1.0,
        help="scale data and simulation to emulate more luminosity",
    )
    p.add_argument("--sparse", action="store_true", help="store the systematics tensor sparse")
    p.add_argument(
        "--no-nonprompt-from-data", action="store_true", help="skip the ABCD non-prompt estimate"
    )
    p.add_argument(
        "--nonprompt-eta-merge",
        type=int,
        default=None,
        help="eta bins merged for the non-prompt estimate (default: the finest the data supports)",
    )
    p.add_argument(
        "--interp",
        choices=("rabbit", "smooth"),
        default="rabbit",
        help="interpolation of asymmetric systematics: rabbit (the CMS fitter's, default) or "
        "smooth (pyhf code4p form); see fitting/interp.py",
    )
    p.add_argument("-p", "--postfix", default="", help="suffix of the output file name")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    path = Path(args.input)
    if not path.exists():
        print(f"error: input file {path} does not exist", file=sys.stderr)
        return 2
    from wremnants_dask.fitting.fitinput import write_fit_input

    with HistFile(path) as hf:
        meta = hf.metadata
        analysis = args.analysis or meta.get("analysis") or meta.get("args", {}).get("analysis")
        if analysis is None and args.fit_config is None:
            print(f"error: {path} does not say its analysis; pass --analysis", file=sys.stderr)
            return 2
        try:
            config = load_fit_config(args.fit_config or default_config(analysis))
            writer, summary = build_fit_input(
                hf,
                analysis,
                config=config,
                asimov=args.asimov,
                exclude_groups=args.exclude_groups,
                lumi_scale=args.lumiScale,
                sparse=args.sparse,
                nonprompt_from_data=not args.no_nonprompt_from_data,
                nonprompt_eta_merge=args.nonprompt_eta_merge,
                interp=args.interp,
            )
        except SetupError as e:  # a config or input problem: one line naming file and key
            print(f"error: {e}", file=sys.stderr)
            return 2
    analysis = summary["analysis"]
    name = f"fitinput_{analysis}{'_' + args.postfix if args.postfix else ''}.hdf5"
    out = Path(args.outfolder) / name
    fi = writer.build()
    meta_out = make_metadata(
        vars(args),
        input_files=[str(path)],
        inputs_metadata=[meta],
        stage="setup_fit",
        nbins=fi.nbins,
        nproc=fi.nproc,
        nparams=fi.npar,
        setup=summary,
    )
    write_fit_input(fi, out, meta_out)
    n = sum(summary["n_params_by_group"].values())
    print(f"wrote {out}: {len(summary['processes'])} processes, {n} shape parameters")
    for g, k in sorted(summary["n_params_by_group"].items()):
        print(f"  {g:20s} {k}")
    return 0
