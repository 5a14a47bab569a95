"""``python -m wremnants_dask.plot``: plots with logs, and a results page per folder.

    python -m wremnants_dask.plot fit FITRESULTS.hdf5 -o DIR        (also: plot FITRESULTS.hdf5 -o DIR)
    python -m wremnants_dask.plot hists --input mw.hdf5 --hist nominal --axes pt \\
        --select passIso=1 passMT=1 --rebin pt=2 -o DIR
    python -m wremnants_dask.plot variations --input mw.hdf5 --hist nominal --variation pdf \\
        --process Wmunu --axes eta --select pdfVar=1:4 -o DIR
    python -m wremnants_dask.plot fakerate --input mw.hdf5 -o DIR
    python -m wremnants_dask.plot tnp TNP_OUTDIR -o DIR [--bins 5 17]
    python -m wremnants_dask.plot page DIR

Every plot is written with a ``.log`` beside it; every command rewrites ``DIR/index.html``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

COMMANDS = ("fit", "hists", "variations", "fakerate", "tnp", "page")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wremnants_dask.plot",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="every plot of a fit result, summary.json and the page")
    f.add_argument("input", help="fit result HDF5 (python -m wremnants_dask.fit)")
    f.add_argument("-o", "--outfolder", default="plots")
    f.add_argument("--fitinput", help="fit input (default: the one the result records)")
    f.add_argument("--corr-params", nargs="+", default=[], metavar="REGEX",
                   help="parameters of the correlation matrix (default: POIs + top impacts)")  # fmt: skip
    f.add_argument("--ranking-top", type=int, default=30, help="parameters in the ranking plot")
    f.add_argument("--page-size", type=int, default=40, help="parameters per pulls page")
    helps = {
        "hists": "data vs stacked prediction of a histmaker histogram",
        "variations": "entries of a systematic variation (e.g. up/down) over the nominal",
    }
    for name, text in helps.items():
        h = sub.add_parser(name, help=text)
        h.add_argument("--input", required=True, help="histmaker output HDF5")
        h.add_argument("--hist", default="nominal", help="histogram name (default nominal)")
        h.add_argument("--axes", nargs="+", required=True, help="axes to show (unrolled if >1)")
        h.add_argument("--select", nargs="*", default=[], metavar="AXIS=V",
                       help="V: 0/1 (boolean), bin index, category, lo:hi (values, summed); on a "
                            "category axis i:j keeps bins i..j-1")  # fmt: skip
        h.add_argument("--rebin", nargs="*", default=[], metavar="AXIS=R",
                       help="R: a factor, or new edges e0,e1,...")  # fmt: skip
        h.add_argument("-o", "--outfolder", default="plots")
        if name == "hists":
            h.add_argument("--logy", action="store_true")
        else:
            h.add_argument("--variation", required=True, help="e.g. pdf for nominal_pdf")
            h.add_argument("--process", required=True, help="process group, e.g. Wmunu")
            h.add_argument("--max-entries", type=int, default=12)
    fr = sub.add_parser("fakerate", help="ABCD non-prompt fake rate: measured and smoothed")
    fr.add_argument("--input", required=True, help="histmaker output HDF5")
    fr.add_argument("--hist", default="nominal")
    fr.add_argument("--iso-axis", default="passIso")
    fr.add_argument(
        "--mt-axis", default=None, help="default: mt if the histogram has it, else passMT"
    )
    fr.add_argument("--pt-axis", default="pt")
    fr.add_argument("--order", type=int, default=2, help="log-polynomial order in pT")
    fr.add_argument("-o", "--outfolder", default="plots")
    tp = sub.add_parser("tnp", help="tag-and-probe: efficiency/SF maps, SF vs pT, bin fits")
    tp.add_argument("input", help="output folder of python -m wremnants_dask.tnp")
    tp.add_argument("-o", "--outfolder", default="plots")
    tp.add_argument("--bins", nargs="*", type=int, default=[],
                    help="flat bin indices whose fits are drawn too (flagged, refitted and the "
                         "worst chi2 of each step always are)")  # fmt: skip
    pg = sub.add_parser("page", help="(re)write index.html of a plot folder")
    pg.add_argument("folder")
    pg.add_argument("--title", default=None)
    return p


def _fit(args: argparse.Namespace) -> int:
    from wremnants_dask.plotting.report import FitPlots, make_plots, write_page
    from wremnants_dask.utils.atomic import atomic_write_text
    from wremnants_dask.utils.provenance import make_metadata

    path = Path(args.input)
    if not path.exists():
        print(f"error: fit result {path} does not exist", file=sys.stderr)
        return 2
    outdir = Path(args.outfolder)
    opts = FitPlots(args.fitinput, args.corr_params, args.ranking_top, args.page_size)
    summary = make_plots(path, outdir, opts)
    fit_meta = summary.pop("fit_metadata")
    summary["metadata"] = make_metadata(
        vars(args), input_files=[str(path)], inputs_metadata=[fit_meta], stage="plot"
    )
    atomic_write_text(outdir / "summary.json", json.dumps(summary, indent=1))
    write_page(outdir, summary)
    print(f"wrote {len(summary['plots'])} plots, summary.json and index.html to {outdir}")
    m = summary["mass"]
    if m is not None:
        print(
            f"  m = {m['mass_mev']:.1f} MeV  (shift {m['shift_mev']:+.1f} +- "
            f"{m['uncertainty_mev']:.1f} MeV from the reference {m['reference_mev']:.1f} MeV)"
        )
        for g, v in sorted(m.get("impacts_mev", {}).items(), key=lambda kv: -kv[1]):
            print(f"    {g:20s} {v:8.2f} MeV")
    return 0


def _page(folder: Path, title: str | None) -> None:
    from wremnants_dask.plotting.webpage import write_index

    summary = None
    if (folder / "summary.json").exists():
        summary = json.loads((folder / "summary.json").read_text())
    write_index(folder, title=title or f"Plots: {folder.name}", summary=summary)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv = ["fit", *argv]  # the original form: plot FITRESULTS.hdf5 -o DIR
    args = _parser().parse_args(argv)
    if args.command == "fit":
        return _fit(args)
    if args.command == "page":
        _page(Path(args.folder), args.title)
        return 0
    if args.command == "tnp":
        from wremnants_dask.plotting.tnp import TnPPlotError, make_tnp_plots

        try:
            paths = make_tnp_plots(Path(args.input), Path(args.outfolder), args.bins)
        except (TnPPlotError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"wrote {len(paths)} plots with their logs and index.html to {args.outfolder}")
        return 0
    from wremnants_dask.plotting import histplots

    path = Path(args.input)
    if not path.exists():
        print(f"error: histmaker output {path} does not exist", file=sys.stderr)
        return 2
    outdir = Path(args.outfolder)
    try:
        select = histplots.parse_selection(getattr(args, "select", []))
        rebin = histplots.parse_rebin(getattr(args, "rebin", []))
        if args.command == "fakerate":
            from wremnants_dask.plotting.nonprompt import fakerate_plot

            out = fakerate_plot(
                path, outdir, name=args.hist, iso_axis=args.iso_axis, mt_axis=args.mt_axis,
                pt_axis=args.pt_axis, smoothing_order=args.order,
            )  # fmt: skip
        elif args.command == "hists":
            out = histplots.hist_plot(
                path, outdir, name=args.hist, axes=args.axes, select=select, rebin=rebin,
                logy=args.logy,
            )  # fmt: skip
        else:
            out = histplots.variation_plot(
                path, outdir, name=args.hist, variation=args.variation, process=args.process,
                axes=args.axes, select=select, rebin=rebin, max_entries=args.max_entries,
            )  # fmt: skip
    except (histplots.PlotInputError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _page(outdir, None)
    print(f"wrote {out} and its log")
    return 0
