"""wremnants_dask.fitting: binned profile-likelihood fits in JAX (float64).

64-bit mode is switched on here, before any JAX array is made, because fits of thousands of
parameters need float64 accumulation to reach their convergence criteria. JAX's default
preallocation of 75% of an accelerator's memory is switched off (unless the user set
``XLA_PYTHON_CLIENT_PREALLOCATE``): the fit allocates what it needs (``fitter.device_info``
says how much) and leaves the rest to other processes.
"""

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from wremnants_dask.utils.jax_runtime import configure_jax

configure_jax()

from .fitinput import FitInput, FitInputError, read_fit_input, write_fit_input  # noqa: E402
from .fitinput_writer import FitInputWriter  # noqa: E402
from .fitter import FitError, FitResult, Fitter, fit  # noqa: E402

__all__ = [
    "FitError",
    "FitInput",
    "FitInputError",
    "FitInputWriter",
    "FitResult",
    "Fitter",
    "fit",
    "read_fit_input",
    "write_fit_input",
]
