"""Fit setup: histmaker output -> fit input (normalisation, grouping, non-prompt ABCD, systematics)."""
