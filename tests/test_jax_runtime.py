"""XLA flags set before JAX starts: the batched tag-and-probe fit hung on 2 cores without them."""

from __future__ import annotations

import os
import subprocess
import sys

from wremnants_dask.utils.jax_runtime import xla_flags_with_workarounds

FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


def _flags_seen_by_jax(env_flags: str | None) -> tuple[str, str]:
    """XLA_FLAGS in a fresh process after importing the tag-and-probe fit, and its stderr."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if env_flags is not None:
        env["XLA_FLAGS"] = env_flags
    code = (
        "import os, jax\n"
        "import wremnants_dask.efficiency.fit\n"
        "print(os.environ['XLA_FLAGS']); print(jax.config.jax_enable_x64)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout, out.stderr


def test_import_switches_the_scheduler_off_and_float64_on():
    stdout, _ = _flags_seen_by_jax(None)
    flags, x64 = stdout.split("\n")[:2]
    assert flags == f"{FLAG}=false"
    assert x64 == "True"


def test_the_users_own_flags_are_kept():
    stdout, _ = _flags_seen_by_jax(f"--xla_dump_to=/nonexistent {FLAG}=true")
    assert stdout.split("\n")[0] == f"--xla_dump_to=/nonexistent {FLAG}=true"
    assert xla_flags_with_workarounds("--a=1") == f"--a=1 {FLAG}=false"


def test_jax_started_first_is_warned():
    code = (
        "import jax.numpy as jnp; jnp.ones(1)\n"
        "import warnings; warnings.simplefilter('always')\n"
        "import wremnants_dask\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "JAX's backends started before wremnants_dask" in out.stderr
