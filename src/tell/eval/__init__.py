"""Evaluation: batched generation, the paper's metrics, bootstrap confidence intervals."""
