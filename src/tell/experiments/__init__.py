"""Experiments: sweeps over methods and budgets, the results table, token-efficiency, plots, the report."""
