#!/usr/bin/env bash
# Fill the histograms with workers running as SLURM jobs, from a login node:
#
#   scripts/histmaker_on_slurm.sh --dataset-config MY_DATASETS.yaml -o hists/
#
# The Dask scheduler runs in this process; dask-jobqueue submits jobs as the work needs them
# (adaptive, see the config) and the dashboard address is printed. CLUSTER_CONFIG overrides the
# packaged example (configs/cluster_slurm.yaml: copy it and set queue, account, memory).
# `scripts/histmaker_on_slurm.sh --cluster-job-script` prints the job script without submitting.
set -euo pipefail
PYTHON=${PYTHON:-python}
CONFIG=${CLUSTER_CONFIG:-cluster_slurm}
exec "${PYTHON}" -m wremnants_dask.histmaker --cluster "${CONFIG}" "$@"
