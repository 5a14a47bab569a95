"""Tag-and-probe efficiency extraction: spectra from the ``tnp`` histograms, counting with
sideband subtraction, batched JAX fits, data/simulation scale factors and the correctionlib
payload. The histograms come from ``processors/tnp.py``; ``python -m wremnants_dask.tnp`` runs
everything."""
