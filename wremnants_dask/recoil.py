"""``python -m wremnants_dask.recoil``: recoil calibration from Z -> mu mu histograms (the command lives in ``cli/recoil.py``)."""

import sys

from wremnants_dask.cli.recoil import main

if __name__ == "__main__":
    sys.exit(main())
