#!/usr/bin/env bash
# The whole W-mass measurement in one command: generate (cached) -> histmaker -> setup_fit ->
# fit (mass POI, impacts) -> plots, on the default synthetic dataset.
#
#   scripts/wmass_chain.sh [OUTDIR]          # default OUTDIR: wmass_run
#   CONFIG=my_datasets.yaml WORKERS=4 scripts/wmass_chain.sh out
#
# CONFIG: a dataset config (path or packaged name; default `synthetic`, the default job's).
# WORKERS: local Dask workers for the histmaker, or `sync` for one process (default 2).
# CORRECTIONS: a muon corrections payload (default: the shipped one), e.g. the one
#   `python -m wremnants_dask.tnp` writes from measured efficiencies.
# Each stage's log and time land in OUTDIR (chain.json has the mass and the stage times);
# OUTDIR/plots holds the plots. tests/test_chain.py runs this script on `synthetic_small`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-wmass_run}"
exec "${PYTHON:-python}" "$here/../ci/run_chain.py" "$out" \
    --config "${CONFIG:-synthetic}" --analysis mw --workers "${WORKERS:-2}" \
    ${CORRECTIONS:+--corrections "$CORRECTIONS"}
