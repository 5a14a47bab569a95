"""Plots and result summaries of fit inputs and fit results."""
