"""Where a fit runs: the JAX device, the linear-algebra path, and the device memory it needs.

Two linear-algebra paths compute the same fit:

* ``host``: the Gram matrix, Hessian blocks, Cholesky solves and the covariance in numpy/LAPACK
  (``jax.pure_callback`` inside the minimiser's loop). Fastest on a CPU, where BLAS syrk and
  LAPACK beat XLA's float64 dot and Cholesky several times.
* ``device``: the same operations as XLA programs in float64 on the fit's device, with no host
  round trip inside the iteration loop. On an accelerator the host path would copy the
  Jacobian to the host at every step and leave the device idle.

``auto`` picks ``device`` when the fit's device is an accelerator and ``host`` on a CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from .fitinput import FitInput

DEVICES = ("auto", "cpu", "gpu")
LINALGS = ("auto", "host", "device")
_log = logging.getLogger(__name__)


class DeviceError(RuntimeError):
    """The requested device is not available, or the fit does not fit in its memory."""


@dataclass(frozen=True)
class Placement:
    """The resolved device of a fit and its linear-algebra path."""

    device: Any  # a jax.Device
    linalg: str  # "host" or "device"

    @property
    def name(self) -> str:
        return f"{self.device.platform}:{self.device.id}"


def resolve(device: str = "auto", linalg: str = "auto") -> Placement:
    """The device (``auto``: JAX's default backend) and the linear-algebra path (``auto``:
    ``device`` on an accelerator, ``host`` on a CPU) of a fit."""
    if device not in DEVICES:
        raise DeviceError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if linalg not in LINALGS:
        raise DeviceError(f"linalg must be one of {', '.join(LINALGS)}, got {linalg!r}")
    if device == "auto":
        dev = jax.devices()[0]
    else:
        try:
            dev = jax.devices(device)[0]
        except RuntimeError as e:
            hint = (
                " (install a CUDA-enabled JAX: pip install -e '.[cuda]')" if device == "gpu" else ""
            )
            raise DeviceError(f"no {device} device in this JAX installation{hint}: {e}") from None
    if linalg == "auto":
        linalg = "host" if dev.platform == "cpu" else "device"
    return Placement(dev, linalg)


def _tensor_bytes(fi: FitInput) -> int:
    """Bytes of the input arrays the model places on the device (the large ones dominate)."""
    n = 3 * fi.nominal.nbytes + 4 * fi.npar * 8  # nominal, kinv, mask; per-parameter vectors
    for name in ("shape_avg", "shape_hd", "add_avg", "add_hd"):
        v = getattr(fi, name, None)
        if v is not None:
            n += v.nbytes
    sp = fi.shape_sparse
    if sp is not None:
        n += sp.avg.nbytes + sp.rows.nbytes + sp.cols.nbytes * 2
        n += 0 if sp.hd is None else sp.hd.nbytes
    return int(n)


def estimate_bytes(
    fi: FitInput, linalg: str, direct: bool, covariance: bool = True
) -> dict[str, int]:
    """Device memory of a fit, by part: the model's tensors; the minimiser's loop, with the
    Jacobian of the bin totals [nbins, npar] (loop state, trial point and one scaled copy for
    direct steps; the Jacobian and its transpose for trust-region CG) and, for direct steps
    on the device path, the dense [npar, npar] matrices of the loop (Gram matrix, its
    Cholesky factor and the damped copy); and with ``covariance`` on the device path the
    covariance step's four (Hessian, its factor, the inverse factor, the covariance). The
    loop's arrays are gone when the covariance step runs: the peak is the tensors plus the
    larger of the two."""
    nb, npar = fi.nbins, fi.npar
    dense = linalg == "device"
    out = {
        "tensors": _tensor_bytes(fi),
        "jacobian": (3 if direct else 2) * nb * npar * 8,
        "dense": 3 * npar * npar * 8 if dense and direct else 0,
        "covariance": 4 * npar * npar * 8 if dense and covariance else 0,
    }
    loop = out["jacobian"] + out["dense"]
    out["total"] = out["tensors"] + max(loop, out["covariance"])
    return out


def available_bytes(dev: Any) -> int | None:
    """Free memory of ``dev`` from ``memory_stats()`` (None where the backend does not say,
    e.g. the CPU)."""
    try:
        stats = dev.memory_stats()
    except Exception:  # not implemented on this backend
        return None
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def limit_bytes(place: Placement, limit: float | None = None) -> int | None:
    """The device memory a fit may use: ``limit`` if given, else what the device reports
    free (None where the backend reports nothing)."""
    return available_bytes(place.device) if limit is None else int(limit)


def check_memory(place: Placement, need: dict[str, int], limit: float | None = None) -> None:
    """Raise ``DeviceError`` (one line with the size needed) when the fit's estimated device
    memory exceeds ``limit`` (default: what ``memory_stats()`` reports free; no check where
    the backend reports nothing)."""
    avail = limit_bytes(place, limit)
    if avail is not None and need["total"] > avail:
        parts = ", ".join(f"{k} {gib(v)}" for k, v in need.items() if k != "total")
        raise DeviceError(
            f"the fit needs {gib(need['total'])} on {place.name} ({parts}; linalg "
            f"{place.linalg}) but {gib(avail)} is available"
        )


def held_bytes(arrays: dict[str, Any]) -> int:
    """Bytes of the model arrays as placed (on the device for the device path)."""
    return int(sum(np.dtype(v.dtype).itemsize * int(np.prod(v.shape)) for v in arrays.values()))


def log_placement(info: dict[str, Any]) -> None:
    """Log what the fit holds on its device (the model's arrays, and the estimated peak)."""
    est = info["estimated_bytes"]
    _log.info(
        "fit on %s, linalg %s: model arrays %s on the device, estimated peak %s (%s)",
        info["device"],
        info["linalg"],
        gib(info["model_bytes"]),
        gib(est["total"]),
        ", ".join(f"{k} {gib(v)}" for k, v in est.items() if k != "total"),
    )
