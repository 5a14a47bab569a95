"""Generator throughput: events/s and file size for the default branch set and with fillers.

    python -m bench.bench_generate [-n 100000] [--process wplus_munu] [--json out.json]

Both variants run in the same process on the same machine, so the fillers/default ratio is
meaningful even when absolute rates move with machine load.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import uproot

from wremnants_dask.synth import generate_sample


def measure(process: str, n: int, fillers: bool, outdir: Path) -> dict:
    t0 = time.perf_counter()
    files = generate_sample(process, n, outdir, seed=1, fillers=fillers)
    dt = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in files)
    n_branches = len(uproot.open(files[0])["Events"].keys())
    return {"fillers": fillers, "events": n, "seconds": round(dt, 3),
            "events_per_s": round(n / dt, 1), "bytes": size, "bytes_per_event": round(size / n, 1),
            "branches": n_branches}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("-n", type=int, default=100_000)
    p.add_argument("--process", default="wplus_munu")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        res = [measure(args.process, args.n, f, Path(tmp) / str(f)) for f in (False, True)]
    out = {"process": args.process, "results": res,
           "ratio_rate_fillers_over_default": round(res[1]["events_per_s"] / res[0]["events_per_s"], 3),
           "ratio_size_fillers_over_default": round(res[1]["bytes"] / res[0]["bytes"], 3)}  # fmt: skip
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
