"""Normalised Wasserstein-1 distance between two 1-D samples.

W1 is the area between the two empirical CDFs, W1 = integral |F_ref(x) - F_cur(x)| dx,
i.e. how far (in the feature's units) the mass has to move to turn one sample
into the other.  It is divided by the reference sample's standard deviation
(population std, ddof=0, as evidently's "wasserstein" stattest) so that the
score reads "shift in reference standard deviations" and one threshold fits
every feature.  If the reference is constant (std 0) we divide by 1 instead,
i.e. report the raw distance in the feature's units (evidently floors the std
at 0.001, which would inflate a tiny move of a constant feature a thousandfold).
No p-value.

Default threshold 0.1: a tenth of a reference standard deviation, evidently's
default for this statistic.

>>> # every value moved by 1; the reference's std is sqrt(1.25)
>>> round(wasserstein([0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]).score, 6)
0.894427
>>> wasserstein([5.0, 5.0], [5.0, 7.0]).score  # constant reference: divided by 1
1.0
"""

from __future__ import annotations

import numpy as np

from monitor.drift.inputs import sample
from monitor.drift.methods import NUMERIC, SAMPLE, DriftMethod, Stat, register

DEFAULT_THRESHOLD = 0.1


def wasserstein_1(u: np.ndarray, v: np.ndarray) -> float:
    """W1 between the empirical distributions of u and v: sum over the pooled
    sorted values of |F_u - F_v| times the gap to the next value."""
    u = np.sort(u)
    v = np.sort(v)
    pooled = np.sort(np.concatenate([u, v]))
    gaps = np.diff(pooled)
    left = pooled[:-1]
    cdf_u = np.searchsorted(u, left, side="right") / u.size
    cdf_v = np.searchsorted(v, left, side="right") / v.size
    return float(np.sum(np.abs(cdf_u - cdf_v) * gaps))


def wasserstein(reference_values, current_values) -> Stat:
    """W1(reference, current) / std(reference) (or / 1 if that std is 0); `Stat(score, None)`."""
    ref = sample("reference_values", reference_values)
    cur = sample("current_values", current_values)
    std = float(np.std(ref))
    return Stat(wasserstein_1(ref, cur) / (std if std > 0 else 1.0), None)


register(DriftMethod(
    name="wasserstein",
    feature_types=frozenset({NUMERIC}),
    default_threshold=DEFAULT_THRESHOLD,
    has_pvalue=False,
    needs=SAMPLE,
    func=wasserstein,
    description="Wasserstein-1 distance in reference standard deviations",
))
