"""CLI shim: ``python -m wremnants_dask.fit INPUT.hdf5 -o OUTDIR`` runs the JAX fitter."""

from __future__ import annotations

import sys

from wremnants_dask.fitting.cli import main

if __name__ == "__main__":
    sys.exit(main())
