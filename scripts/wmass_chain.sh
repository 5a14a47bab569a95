#!/usr/bin/env bash
# The whole W-mass measurement in one command: generate (cached) -> tag-and-probe (muon
# efficiency scale factors measured on the dataset's own Z -> mu mu simulation and pseudo-data)
# -> [MUCALIB=1: muon momentum calibration] -> recoil calibration from Z -> mu mu (histmaker
# -a mz_recoil, then python -m wremnants_dask.recoil; RECOIL=0 skips it) -> histmaker -> setup_fit ->
# fit (mass POI, impacts) -> plots, on the default synthetic dataset.
#
#   scripts/wmass_chain.sh [OUTDIR]          # default OUTDIR: wmass_run
#   CONFIG=my_datasets.yaml WORKERS=4 scripts/wmass_chain.sh out
#
# CONFIG: a dataset config (path or packaged name; default `synthetic`, the default job's).
# WORKERS: local Dask workers for the histmaker, or `sync` for one process (default 2).
# CORRECTIONS: the histmaker's muon corrections: `measured` (default: the tag-and-probe stage's
#   payload, OUTDIR/tnp), `truth` (the shipped truth-derived payload, no tag-and-probe stage)
#   or a payload file.
# MUCALIB=1: measure the muon momentum calibration from the Z events first and apply it
#   (data scale, simulation resolution, with its statistical and closure nuisances).
# RECOIL=0: do not calibrate the W simulation's recoil with Z -> mu mu (on by default: the
#   pseudo-data's recoil response and resolution differ from the simulation's; fit group
#   'recoil', its variations symmetrised: the chain's W toys converge 60/60).
# BOSONPT=1: measure the Z qT spectrum's data/simulation ratio (histmaker -a mz_bosonpt, then
#   python -m wremnants_dask.bosonpt) and weight the W and Z simulation with it (fit group
#   'boson_pt'); CONFIG then defaults to `synthetic_bosonpt`, whose pseudo-data has a qT tilt.
# Each stage's log and time land in OUTDIR (chain.json has the mass and the stage times);
# OUTDIR/plots holds the plots. tests/test_chain.py runs this script on `synthetic_small`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-wmass_run}"
config="${CONFIG:-${BOSONPT:+synthetic_bosonpt}}"
exec "${PYTHON:-python}" "$here/../ci/run_chain.py" "$out" \
    --config "${config:-synthetic}" --analysis mw --workers "${WORKERS:-2}" \
    --corrections "${CORRECTIONS:-measured}" ${MUCALIB:+--muon-calibration} \
    "$([ "${RECOIL:-1}" = 0 ] && echo --no-recoil || echo --recoil)" ${BOSONPT:+--boson-pt}
