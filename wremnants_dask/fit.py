"""``python -m wremnants_dask.fit INPUT.hdf5 -o DIR``: the JAX fitter (its command lives in
``fitting/cli.py``)."""

import sys

from wremnants_dask.fitting.cli import main

if __name__ == "__main__":
    sys.exit(main())
