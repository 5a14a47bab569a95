"""JAX settings every fitting module needs, applied once before the first computation.

- float64 (``jax_enable_x64``): fits of thousands of parameters need float64 accumulation to
  reach their convergence criteria.
- XLA:CPU's concurrency-optimized scheduler is switched off. With it (jaxlib 0.10.2, 2 cores)
  the batched tag-and-probe fit (a vmapped fixed-length loop with eigh/solve per bin) never
  returned: every XLA thread idle in the thread pool, the caller waiting in BlockUntilReady,
  6 of 6 runs of tests/test_tnp_fit.py; with the scheduler off 3 of 3 finished, as did every
  run pinned to one core. The flag only changes the order XLA schedules independent
  instructions in, not what they compute. A user who sets the flag in ``XLA_FLAGS`` keeps
  their value.
"""

from __future__ import annotations

import os
import sys
import warnings

_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


def xla_flags_with_workarounds(flags: str) -> str:
    """``flags`` (an ``XLA_FLAGS`` value) with the scheduler switched off unless it names it."""
    if _SCHEDULER_FLAG in flags:
        return flags
    return f"{flags} {_SCHEDULER_FLAG}=false".strip()


def set_xla_flags() -> None:
    """Add the workarounds to ``XLA_FLAGS``, which XLA reads once, when JAX's backends start.

    Cheap (no JAX import): the package's ``__init__`` calls it, so it precedes any JAX
    computation of this package and reaches the processes it starts. Warns when JAX already
    runs without the flag (the user computed with JAX before importing wremnants_dask).
    """
    before = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = xla_flags_with_workarounds(before)
    if "jax" not in sys.modules or _SCHEDULER_FLAG in before:
        return
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        warnings.warn(
            "JAX's backends started before wremnants_dask was imported, so XLA runs without "
            f"{_SCHEDULER_FLAG}=false and batched fits on the CPU can hang: import "
            "wremnants_dask first or put the flag in XLA_FLAGS",
            RuntimeWarning,
            stacklevel=2,
        )


def configure_jax() -> None:
    """The XLA flags and float64 mode."""
    set_xla_flags()
    import jax

    jax.config.update("jax_enable_x64", True)
