"""``python -m wremnants_dask.bosonpt``: boson-pT weights from Z -> mu mu histograms (the command lives in ``cli/bosonpt.py``)."""

import sys

from wremnants_dask.cli.bosonpt import main

if __name__ == "__main__":
    sys.exit(main())
