"""``python -m wremnants_dask.tnp``: tag-and-probe histograms, fits and payload (the command lives in ``cli/tnp.py``)."""

from wremnants_dask.cli.tnp import main

if __name__ == "__main__":
    main()
