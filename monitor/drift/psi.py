"""Population Stability Index (PSI) between two aligned histograms.

PSI = sum_i (r_i - c_i) * ln(r_i / c_i), where r and c are the bin proportions
of the reference and of the current window.  It is a symmetrised KL divergence
(KL(r||c) + KL(c||r)), so it is 0 for identical histograms and grows without
bound as they separate; it has no p-value.

An empty bin would make the logarithm infinite, so a zero proportion is
replaced exactly as evidently's legacy ``get_binned_data`` does (per row):
by 0.0001, or, when that row's smallest non-zero proportion is itself
<= 0.0001, by that smallest proportion / 10**6.

Default threshold 0.1: the credit-scoring rule of thumb (< 0.1 no significant
shift, 0.1-0.25 moderate, > 0.25 major), also evidently's default for "psi".

>>> round(psi([50, 30, 20], [50, 30, 20]).score, 12)
0.0
>>> round(psi([50, 30, 20], [20, 30, 50]).score, 4)
0.5498
>>> psi([50, 30, 20], [20, 30, 50]).pvalue is None
True
"""

from __future__ import annotations

import numpy as np

from monitor.drift.methods import (
    CATEGORICAL,
    HISTOGRAM,
    NUMERIC,
    DriftMethod,
    Stat,
    register,
)

DEFAULT_THRESHOLD = 0.1
ZERO_FILL = 0.0001


def _counts(name: str, values) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of bin counts, got ndim={a.ndim}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite counts")
    if np.any(a < 0):
        raise ValueError(f"{name} contains negative counts")
    if not a.sum() > 0:
        raise ValueError(f"{name} sums to 0: nothing to compare")
    return a


def _aligned(reference_counts, current_counts) -> tuple[np.ndarray, np.ndarray]:
    ref = _counts("reference_counts", reference_counts)
    cur = _counts("current_counts", current_counts)
    if ref.shape != cur.shape:
        raise ValueError(f"reference_counts and current_counts have different lengths "
                         f"({ref.size} != {cur.size}): the bins must be aligned")
    return ref, cur


def _fill_zeros(proportions: np.ndarray) -> np.ndarray:
    """evidently's rule: zeros become 0.0001, or min(non-zero) / 1e6 if that is <= 0.0001."""
    p = proportions.copy()
    smallest = p[p != 0].min()
    np.place(p, p == 0, smallest / 10**6 if smallest <= ZERO_FILL else ZERO_FILL)
    return p


def psi(reference_counts, current_counts) -> Stat:
    """PSI of two aligned bin-count vectors; `Stat(score, None)`."""
    ref, cur = _aligned(reference_counts, current_counts)
    r = _fill_zeros(ref / ref.sum())
    c = _fill_zeros(cur / cur.sum())
    return Stat(float(np.sum((r - c) * np.log(r / c))), None)


register(DriftMethod(
    name="psi",
    feature_types=frozenset({NUMERIC, CATEGORICAL}),
    default_threshold=DEFAULT_THRESHOLD,
    has_pvalue=False,
    needs=HISTOGRAM,
    func=psi,
    description="Population Stability Index over the reference's bins",
))
