"""wremnants_dask: Dask-based distributed analysis for precision collider measurements."""

__version__ = "0.1.0"
