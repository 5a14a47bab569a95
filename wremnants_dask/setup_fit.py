"""``python -m wremnants_dask.setup_fit``: histograms -> fit input (the command lives in ``cli/setup_fit.py``)."""

import sys

from wremnants_dask.cli.setup_fit import main

if __name__ == "__main__":
    sys.exit(main())
