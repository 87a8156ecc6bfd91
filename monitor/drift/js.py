"""Jensen-Shannon distance between two aligned histograms.

With p, q the normalised counts and m = (p + q) / 2, the JS divergence is
(KL(p||m) + KL(q||m)) / 2 (natural log, so it lies in [0, ln 2]) and the
distance is its square root, as scipy.spatial.distance.jensenshannon returns by
default (and evidently's "jensenshannon" stattest).  Unlike PSI it is bounded
(at most sqrt(ln 2) ~ 0.833) and needs no smoothing: a bin empty on one side
contributes a finite amount.  No p-value.

Default threshold 0.1: evidently's default for this statistic; a distance of
0.1 corresponds to a divergence of 0.01 nats.

>>> js([10, 20, 70], [10, 20, 70]).score
0.0
>>> round(js([1, 0], [0, 1]).score ** 2, 12) == round(float(np.log(2)), 12)
True
>>> round(js([50, 30, 20], [20, 30, 50]).score, 4)
0.2577
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


def _kl_terms(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """p * ln(p / m), with 0 * ln 0 = 0 (m > 0 wherever p > 0)."""
    out = np.zeros_like(p)
    nz = p > 0
    out[nz] = p[nz] * np.log(p[nz] / m[nz])
    return out


def js(reference_counts, current_counts) -> Stat:
    """Jensen-Shannon distance (natural log) of two aligned bin-count vectors:
    `Stat(score, None)`."""
    ref, cur = aligned_counts(reference_counts, current_counts)
    p = ref / ref.sum()
    q = cur / cur.sum()
    m = (p + q) / 2
    divergence = (np.sum(_kl_terms(p, m)) + np.sum(_kl_terms(q, m))) / 2
    # Rounding can leave a tiny negative divergence for near-identical inputs.
    return Stat(float(np.sqrt(max(divergence, 0.0))), None)


register(DriftMethod(
    name="js",
    feature_types=frozenset({NUMERIC, CATEGORICAL}),
    default_threshold=DEFAULT_THRESHOLD,
    has_pvalue=False,
    needs=HISTOGRAM,
    func=js,
    description="Jensen-Shannon distance (natural log) over the reference's bins",
))
