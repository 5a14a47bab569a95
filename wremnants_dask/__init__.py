"""wremnants_dask: Dask-based distributed analysis for precision collider measurements."""

from wremnants_dask.utils.jax_runtime import set_xla_flags

set_xla_flags()

__version__ = "0.1.0"
