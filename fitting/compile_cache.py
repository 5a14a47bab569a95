"""JAX's persistent compilation cache for the fit command.

A fit compiles its programs (minimiser, Hessian, yield uncertainties) in every new process;
for a given model size and JAX version they are the same programs, so the fit command keeps
them on disk (``jax_compilation_cache_dir``) and a second fit of a model with the same shapes
loads them instead of compiling. Where: ``--compile-cache DIR``, else the environment variable
``WREMNANTS_DASK_JAX_CACHE``, else ``$XDG_CACHE_HOME/wremnants_dask/jax`` (``~/.cache/...``);
``none`` disables it. JAX does not store programs with host callbacks (the minimiser of the
host linear-algebra path), so those still compile each time.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import jax

ENV = "WREMNANTS_DASK_JAX_CACHE"
OFF = ("none", "off", "0", "")
_log = logging.getLogger(__name__)


def default_cache_dir() -> Path | None:
    """The cache folder when none is given (None: disabled by ``WREMNANTS_DASK_JAX_CACHE``)."""
    env = os.environ.get(ENV)
    if env is not None:
        return None if env.strip().lower() in OFF else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "wremnants_dask" / "jax"


def enable_compile_cache(path: str | Path | None = None, min_compile_s: float = 0.2) -> Path | None:
    """Switch on the persistent cache in ``path`` (default ``default_cache_dir()``; ``none``
    disables); programs that compiled in under ``min_compile_s`` are not stored. Returns the
    folder in use, or None."""
    if path is not None and str(path).strip().lower() in OFF:
        return None
    p = default_cache_dir() if path is None else Path(path)
    if p is None:
        return None
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only home: fit without the cache
        _log.warning("JAX compilation cache %s not usable (%s): compiling every time", p, e)
        return None
    jax.config.update("jax_compilation_cache_dir", str(p))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_s)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return p
