"""``python -m wremnants_dask.histmaker``: datasets + analysis -> histograms (HDF5) (the command lives in ``cli/histmaker.py``)."""

import sys

from wremnants_dask.cli import histmaker
from wremnants_dask.cli.histmaker import main  # noqa: F401  (the library call: errors raised)

if __name__ == "__main__":
    sys.exit(histmaker.console_main())
