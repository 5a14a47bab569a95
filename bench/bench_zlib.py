"""ZLIB with ISA-L vs the standard library's zlib: reading and writing W-mass samples.

    python bench/bench_zlib.py [--events 200000] [--gen-events 100000] [--rounds 4] [--outdir DIR]

The engine inflates ZLIB baskets with ISA-L when ``isal`` is installed, and the generator
deflates with it (``fast_zlib``). Both libraries are timed in the same process, interleaved
round by round, on a W+ -> mu nu sample (generated once into --outdir):

- "read": uproot reading the columns the ``mw`` processor reads (all its tensors), no processing
  (``bench_histmaker.floor``, the files opened before the clock);
- "mw": the whole ``mw`` run through the engine (synchronous, one process);
- "generate": ``generate_sample`` of --gen-events W+ events into a new folder, compressed with
  each library (the file sizes are printed too).

Prints the best time of each library per round and the median ratio isal / zlib.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import uproot
import uproot.compression
from bench_histmaker import floor
from bench_mw_tensors import sample

from wremnants_dask import engine
from wremnants_dask.inputs import reader
from wremnants_dask.processors.registry import get_processor
from wremnants_dask.synth import generate_sample, writer
from wremnants_dask.utils.fast_zlib import IsalZLIB

LIBRARIES = ("zlib", "isal")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--gen-events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2, help="best of this many per round")
    ap.add_argument("--outdir", default=None, help="sample cache folder (default: a temp dir)")
    args = ap.parse_args()
    if reader.ZLIB_LIBRARY != "isal":
        raise SystemExit("isal is not installed: pip install isal")
    outdir = Path(args.outdir or tempfile.mkdtemp(prefix="bench_zlib_"))
    outdir.mkdir(parents=True, exist_ok=True)
    ds = sample(outdir, args.events)
    proc = get_processor("mw", systematics=True)
    plan = engine.build_plan([ds], proc)
    decompressor = uproot.compression._decompress_ZLIB
    sizes: dict[str, int] = {}

    def generate() -> None:
        lib = decompressor.library  # the library under test, for writing too
        writer.zlib_compression = lambda level=1: (
            IsalZLIB(level) if lib == "isal" else uproot.ZLIB(level)
        )
        with tempfile.TemporaryDirectory() as tmp:
            files = generate_sample("wplus_munu", args.gen_events, tmp, seed=7)
            sizes[lib] = sum(f.stat().st_size for f in files)

    jobs = {
        "read": lambda: floor(plan),
        "mw": lambda: engine.run([ds], proc),
        "generate": generate,
    }
    for job in jobs.values():  # warm: imports, open trees, compiled kernels, page cache
        job()
    times: dict[tuple[str, str], list[float]] = {}
    for rnd in range(args.rounds):
        order = LIBRARIES if rnd % 2 == 0 else LIBRARIES[::-1]
        for name, job in jobs.items():
            for lib in order:
                decompressor.library = lib
                best = np.inf
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    took = job()  # floor() times itself, without opening the files
                    best = min(best, took if name == "read" else time.perf_counter() - t0)
                times.setdefault((name, lib), []).append(best)
        decompressor.library = "isal"
        print(
            f"round {rnd}: "
            + ", ".join(f"{n} {lib} {times[(n, lib)][-1]:.3f} s" for n in jobs for lib in LIBRARIES)
        )
    n_events = plan.datasets[ds.name].n_entries
    for name in jobs:
        if name == "generate":
            n_events = args.gen_events
        z, i = np.array(times[(name, "zlib")]), np.array(times[(name, "isal")])
        print(
            f"{name:4s}: zlib {np.median(z):.3f} s ({n_events / np.median(z):,.0f} ev/s), "
            f"isal {np.median(i):.3f} s ({n_events / np.median(i):,.0f} ev/s); "
            f"isal / zlib {np.median(i / z):.2f}x (range {np.min(i / z):.2f}-{np.max(i / z):.2f})"
        )
    n_read = plan.datasets[ds.name].n_entries
    print(f"read/mw: {n_read} events, {len(plan.datasets[ds.name].columns)} columns read")
    print(", ".join(f"generated file with {k}: {v / 1e6:.1f} MB" for k, v in sizes.items()))


if __name__ == "__main__":
    main()
