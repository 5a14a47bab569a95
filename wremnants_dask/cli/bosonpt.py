"""``python -m wremnants_dask.bosonpt HISTS.hdf5 -o bosonpt_weights.json``: measure the boson pT.

Reads the ``mz_bosonpt`` histmaker output (``python -m wremnants_dask.histmaker -a
mz_bosonpt``), subtracts the simulated backgrounds from the data, fits the data/simulation
ratio of the Z qT spectrum at generator level through the simulation's response (forward
folding, ``corrections/boson_pt.py``) and writes the weights that ``histmaker -a mw
--boson-pt-weights FILE`` applies to W (and Z) simulation, with their eigen-variations and the
theory modes (fit group ``boson_pt``).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from wremnants_dask.corrections.boson_pt import (
    THEORY_MODES,
    BosonPtError,
    collect,
    measure,
    theory_modes,
)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wremnants_dask.bosonpt", description=__doc__)
    p.add_argument("histograms", help="mz_bosonpt histmaker output (HDF5)")
    p.add_argument("-o", "--output", required=True, help="weights file to write (JSON)")
    p.add_argument(
        "--degree", type=int, default=3, help="polynomial degree in t = ln(1 + qT/5 GeV) (<= 5)"
    )
    p.add_argument(
        "--np-shift",
        type=float,
        default=THEORY_MODES["np"][1],
        help="theory mode 'np': relative shift of the qT family's peak scale b",
    )
    p.add_argument(
        "--resum-shift",
        type=float,
        default=THEORY_MODES["resum"][1],
        help="theory mode 'resum': shift of the qT family's fall-off power n",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from wremnants_dask.histograms.histio import HistFile
    from wremnants_dask.utils.provenance import make_metadata

    try:
        theory = theory_modes(args.np_shift, args.resum_shift)
        with HistFile(args.histograms) as hf:
            meas = collect(hf)
        w = measure(meas, args.degree, theory, where=args.histograms)
    except (BosonPtError, OSError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    w.info["provenance"] = make_metadata(vars(args), input_files=[args.histograms], stage="bosonpt")
    w.save(args.output)
    fit = w.info["fit"]
    terms = ", ".join(f"{p:.4f} +- {e:.4f}" for p, e in zip(w.params, fit["errors"]))
    qt = np.array([1.0, 3.0, 5.0, 10.0, 20.0, 40.0])
    ratio = " ".join(f"{q:g}:{r:.3f}" for q, r in zip(qt, w.weight(qt)))
    print(f"data/sim r(qT) params: [{terms}] (chi2 {fit['chi2']:.1f} / {fit['ndf']})")
    print(f"r at qT (GeV): {ratio}")
    print(f"{w.n_eigen} eigen-variations, theory modes {w.theory_names} -> {args.output}")
    return 0
