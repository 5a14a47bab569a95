"""Inputs: dataset definitions, luminosity and normalisation bookkeeping, and reading files
(inspection, open-tree cache, chunk reader). The first stage: it imports no later one."""

from wremnants_dask.inputs.datasets import ConfigError, Dataset, load_datasets

__all__ = ["ConfigError", "Dataset", "load_datasets"]
