"""Exact Hessian at the minimum, in memory-bounded chunks of Hessian-vector products.

``jax.linearize`` of the gradient is built once per chunk and applied, under ``vmap``, to a
block of unit vectors, so each chunk is a few matrix-matrix products over the systematics
tensor (compute-bound) instead of one pass per column. The chunk size keeps the batched tangents
within ``mem_bytes``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .model import FitModel


def chunk_size(model: FitModel, mem_bytes: float = 1.0e9) -> int:
    """Number of Hessian columns per chunk so that batched tangents fit in ``mem_bytes``."""
    s = model.static
    per = 8.0 * 12 * (s.nbins * s.nproc + s.npar)
    return int(max(1, min(s.npar, mem_bytes // per, 512)))


def make_hessian(model: FitModel, mem_bytes: float = 1.0e9) -> Any:
    """Return ``hessian(x, obs) -> np.ndarray [npar, npar]`` (exact, chunked)."""
    npar = model.static.npar
    cs = chunk_size(model, mem_bytes)

    @jax.jit
    def block(x, obs, V, arrays):
        lin = jax.linearize(jax.grad(lambda y: model.nll(y, obs, arrays)), x)[1]
        return jax.vmap(lin)(V)

    def hessian(x: jnp.ndarray, obs: dict[str, jnp.ndarray]) -> np.ndarray:
        H = np.empty((npar, npar))
        for start in range(0, npar, cs):
            stop = min(npar, start + cs)
            V = np.zeros((cs, npar))
            V[np.arange(stop - start), np.arange(start, stop)] = 1.0
            H[start:stop] = np.asarray(block(x, obs, jnp.asarray(V), model.arrays))[: stop - start]
        return 0.5 * (H + H.T)

    return hessian
