"""``python -m wremnants_dask.histmaker``: datasets + analysis -> histograms (HDF5) (the command lives in ``cli/histmaker.py``)."""

from wremnants_dask.cli.histmaker import main

if __name__ == "__main__":
    main()
