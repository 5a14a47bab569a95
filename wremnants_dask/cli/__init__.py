"""Command lines. Each ``python -m wremnants_dask.<command>`` module is a shim into one of these."""
