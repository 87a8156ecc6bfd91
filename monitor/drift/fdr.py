"""Benjamini-Hochberg adjustment of the p-values of many drift tests.

When a window runs one test per feature (and per method), some p-values fall
below any fixed level by chance alone.  The BH step-up procedure controls the
false discovery rate (the expected fraction of false alarms among the alarms)
instead: the adjusted value of the k-th smallest of m p-values is
min over j >= k of p_(j) * m / j, capped at 1; a test is a discovery at level q
when its adjusted value is <= q.  Computed by
scipy.stats.false_discovery_control(method="bh").

>>> benjamini_hochberg([0.01, 0.04, 0.03, 0.20]).round(4).tolist()
[0.04, 0.0533, 0.0533, 0.2]
>>> benjamini_hochberg([]).tolist()
[]
"""

from __future__ import annotations

import numpy as np
from scipy.stats import false_discovery_control


def benjamini_hochberg(pvalues) -> np.ndarray:
    """BH-adjusted p-values, in the order given.

    Raises ValueError on NaN or on values outside [0, 1]."""
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be a 1-D sequence, got ndim={p.ndim}")
    if p.size == 0:
        return np.empty(0)
    if np.any(np.isnan(p)):
        raise ValueError("pvalues contains NaN (a test without a p-value must be left out)")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("pvalues must lie in [0, 1]")
    return np.asarray(false_discovery_control(p, method="bh"), dtype=float)
