#!/usr/bin/env bash
# One-shot GPU check of the fitter (issue 19), for a machine with an NVIDIA GPU and the
# workplace's 'cuda' image (python3 with JAX + CUDA plugin, numpy, scipy, h5py; nothing can be
# fetched there). Runs, in one go and within ~9 minutes:
#   1. the JAX devices and the memory JAX reports (no preallocation);
#   2. tests/test_fit_device.py (the device path equals the host path, forced on the CPU);
#   3. the device path on the GPU against the host path on the CPU for a small model
#      (fit_device_small.json), and the fit command with --device gpu;
#   4. bench/bench_fit_device.py at N = 1000, 5000, 20000 (budget 420 s) -> bench_device.json.
# Results go to $OUT (when set, as on the device tool's machine) or ./device_check_out.
#
# Packages the image lacks (hist, boost-histogram, histoprint, uhi, pyhf for the test's
# workspace) travel as wheels in .whl/ (ignored by git), downloaded on a machine with pip:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl hist boost-histogram histoprint uhi pyhf \
#     jsonschema jsonschema-specifications referencing rpds-py attrs click tqdm pyyaml
# and the device call carries ".whl". The package itself is put on PYTHONPATH from this
# checkout (its folders mapped as pyproject's package-dir does), so nothing is installed
# outside /tmp.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR="${OUT:-$PWD/device_check_out}"
mkdir -p "$OUTDIR"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false WREMNANTS_DASK_JAX_CACHE=none
SITE=/tmp/wd_site
rm -rf "$SITE" && mkdir -p "$SITE"
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || echo "wheel install failed" | tee -a "$OUTDIR/log.txt"
fi
# wremnants_dask with fitting/, processors/, corrections/, configs/ mapped in (package-dir)
mkdir -p "$SITE/wremnants_dask"
cp -r wremnants_dask/. "$SITE/wremnants_dask/"
for d in fitting processors corrections configs; do ln -sfn "$PWD/$d" "$SITE/wremnants_dask/$d"; done
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  "$PY" - <<'EOF'
import jax, wremnants_dask.fitting as f  # noqa: F401  (sets the preallocation default)
print("jax", jax.__version__, "devices", jax.devices())
for d in jax.devices():
    print(d, d.memory_stats() and {k: v for k, v in d.memory_stats().items() if "limit" in k})
EOF
} 2>&1 | tee "$OUTDIR/log.txt"

echo "== tests/test_fit_device.py" | tee -a "$OUTDIR/log.txt"
timeout 150 "$PY" -m pytest -x -q -p no:cacheprovider tests/test_fit_device.py 2>&1 \
  | tail -15 | tee -a "$OUTDIR/log.txt"

echo "== device path on the GPU vs host path on the CPU (small model)" | tee -a "$OUTDIR/log.txt"
timeout 150 "$PY" - "$OUTDIR/fit_device_small.json" <<'EOF' 2>&1 | tee -a "$OUTDIR/log.txt"
import json, sys, time
import numpy as np
from wremnants_dask.fitting.fitter import Fitter
from wremnants_dask.fitting.synthmodel import build_synthetic
fi, _, _ = build_synthetic(nsyst=200, nnorm=5, neta=12, npt=10, asymmetric=True)
out = {}
for name, dev, lin in (("gpu", "gpu", "device"), ("cpu_host", "cpu", "host")):
    f = Fitter(fi, device=dev, linalg=lin)
    f.fit()
    t = time.perf_counter(); r = f.fit(); dt = time.perf_counter() - t
    out[name] = (r, f.impacts_covariance(r), dt, f.device_info)
(a, ia, ta, _), (b, ib, tb, info) = out["cpu_host"], out["gpu"]
e = a.errors; ok = a.free & (e > 0)
rep = {"device_info": {k: v for k, v in info.items()}, "fit_cov_s_gpu": tb, "fit_cov_s_cpu": ta,
       "x_over_sigma": float(np.max(np.abs(a.x - b.x)[ok] / e[ok])),
       "errors_rel": float(np.max(np.abs(b.errors[ok] / e[ok] - 1))),
       "impacts_rel": float(np.max(np.abs(ia["impacts"] - ib["impacts"]) / ia["total"][:, None]))}
print(json.dumps(rep, default=str))
json.dump(rep, open(sys.argv[1], "w"), default=str, indent=1)
assert rep["x_over_sigma"] < 1e-8 and rep["errors_rel"] < 1e-8 and rep["impacts_rel"] < 1e-8, rep
EOF

echo "== fit command on the GPU" | tee -a "$OUTDIR/log.txt"
timeout 120 "$PY" - <<'EOF' 2>&1 | tee -a "$OUTDIR/log.txt"
import subprocess, sys, tempfile
from wremnants_dask.fitting import write_fit_input
from wremnants_dask.fitting.synthmodel import build_synthetic
d = tempfile.mkdtemp()
fi, _, _ = build_synthetic(nsyst=100, nnorm=3, neta=12, npt=10)
write_fit_input(fi, f"{d}/in.hdf5", {})
r = subprocess.run([sys.executable, "-m", "wremnants_dask.fit", f"{d}/in.hdf5", "-o", d,
                    "--device", "gpu", "--impacts"], capture_output=True, text=True)
print(r.stdout[-2000:], r.stderr[-2000:], "rc", r.returncode)
EOF

echo "== bench/bench_fit_device.py" | tee -a "$OUTDIR/log.txt"
timeout 450 "$PY" -m bench.bench_fit_device --sizes 1000 5000 20000 --budget 420 \
  --json "$OUTDIR/bench_device.json" 2>&1 | tail -20 | tee -a "$OUTDIR/log.txt"
date -u | tee -a "$OUTDIR/log.txt"
