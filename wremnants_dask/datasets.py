"""``python -m wremnants_dask.datasets``: list (and generate) a dataset config's samples (the command lives in ``cli/datasets.py``)."""

import sys

from wremnants_dask.cli.datasets import main

if __name__ == "__main__":
    sys.exit(main())
