"""Histogram files: the HDF5 output of the histmaker (histograms + bookkeeping + provenance)."""
