"""Checks of the inputs of the drift statistics: one place for the messages.

>>> aligned_counts([3, 1], [2, 2])
(array([3., 1.]), array([2., 2.]))
>>> sample("current_values", [])
Traceback (most recent call last):
...
ValueError: current_values is an empty sample
"""

from __future__ import annotations

import numpy as np


def counts(name: str, values) -> np.ndarray:
    """A 1-D array of non-negative, finite counts with a positive total."""
    a = np.asarray(values, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of bin or category counts, got ndim={a.ndim}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite counts")
    if np.any(a < 0):
        raise ValueError(f"{name} contains negative counts")
    if not a.sum() > 0:
        raise ValueError(f"{name} sums to 0: nothing to compare")
    return a


def aligned_counts(reference_counts, current_counts) -> tuple[np.ndarray, np.ndarray]:
    """Both count vectors, checked, over the same bins or categories."""
    ref = counts("reference_counts", reference_counts)
    cur = counts("current_counts", current_counts)
    if ref.shape != cur.shape:
        raise ValueError(f"reference_counts and current_counts have different lengths "
                         f"({ref.size} != {cur.size}): the bins or categories must be aligned")
    return ref, cur


def sample(name: str, values) -> np.ndarray:
    """A non-empty 1-D array of finite values."""
    a = np.asarray(values, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of values, got ndim={a.ndim}")
    if a.size == 0:
        raise ValueError(f"{name} is an empty sample")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a
