"""``python -m wremnants_dask.plot``: plots and a summary of a fit result (the command lives in ``cli/plot.py``)."""

import sys

from wremnants_dask.cli.plot import main

if __name__ == "__main__":
    sys.exit(main())
