"""Digits: a small CNN on scikit-learn's bundled 8×8 handwritten digits (options, data, model, task)."""
