"""``python -m wremnants_dask.mucalib``: Z histograms -> muon momentum calibration payload (the command lives in ``cli/mucalib.py``)."""

import sys

from wremnants_dask.cli import mucalib
from wremnants_dask.cli.mucalib import main  # noqa: F401  (the library call: errors raised)

if __name__ == "__main__":
    sys.exit(mucalib.console_main())
