"""``python -m wremnants_dask.generate``: the synthetic NanoAOD generator (the command lives in ``cli/generate.py``)."""

import sys

from wremnants_dask.cli.generate import main

if __name__ == "__main__":
    sys.exit(main())
