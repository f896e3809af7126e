"""Metrics stage: one streaming confusion matrix for every 2D metric, plus 3D surface metrics."""
