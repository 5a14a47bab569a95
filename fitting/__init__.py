"""wremnants_dask.fitting: binned profile-likelihood fits in JAX (float64).

64-bit mode is switched on here, before any JAX array is made, because fits of thousands of
parameters need float64 accumulation to reach their convergence criteria.
"""

import jax

jax.config.update("jax_enable_x64", True)

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
