"""``python -m wremnants_dask.datasets [CONFIG]``: list a dataset config's samples (generating
synthetic samples into the cache on first use)."""

from __future__ import annotations

import argparse

from wremnants_dask.inputs.datasets import load_datasets


def main(argv: list[str] | None = None) -> None:
    """List the datasets of a config (generating synthetic samples on first use)."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("config", nargs="?", default=None, help="config path or packaged name")
    ap.add_argument("--filter", nargs="*", default=None, help="sample/group fnmatch patterns")
    ap.add_argument("--exclude", nargs="*", default=None, help="sample/group fnmatch patterns")
    ap.add_argument("--max-files", type=int, default=None)
    ap.add_argument("--scale", type=float, default=None)
    args = ap.parse_args(argv)
    for d in load_datasets(
        args.config,
        filter_procs=args.filter,
        exclude_procs=args.exclude,
        max_files=args.max_files,
        scale=args.scale,
    ):
        kind = "data" if d.is_data else f"xsec {d.xsec_pb:g} pb"
        print(f"{d.name:16s} {d.group:8s} {d.era:6s} {kind:20s} {len(d.files)} file(s)")
        for f in d.files:
            print(f"    {f}")
