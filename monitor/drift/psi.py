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

from monitor.drift.inputs import aligned_counts
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


def _fill_zeros(proportions: np.ndarray) -> np.ndarray:
    """evidently's rule: zeros become 0.0001, or min(non-zero) / 1e6 if that is <= 0.0001."""
    p = proportions.copy()
    smallest = p[p != 0].min()
    np.place(p, p == 0, smallest / 10**6 if smallest <= ZERO_FILL else ZERO_FILL)
    return p


def psi(reference_counts, current_counts) -> Stat:
    """PSI of two aligned bin-count vectors; `Stat(score, None)`."""
    ref, cur = aligned_counts(reference_counts, current_counts)
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
