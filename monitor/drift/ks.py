"""Two-sample Kolmogorov-Smirnov test.

D = max_x |F_ref(x) - F_cur(x)|, the largest vertical gap between the two
empirical CDFs, evaluated at every pooled value with right-continuous CDFs
(searchsorted side="right"), so ties are handled as scipy.stats.ks_2samp does.
The two-sided p-value is Smirnov's asymptotic one, as ks_2samp(method="asymp"):
the Kolmogorov distribution's survival function kstwo.sf(D, round(en)) at the
effective size en = n*m / (n+m).  (We never compute the exact distribution: the
samples here are hundreds to thousands of values, where it agrees with the
asymptotic one to about 0.01, and it costs O(n*m).)  One detail: for n = m = 1,
round(en) = round(0.5) = 0, where scipy returns NaN; we use 1.

Default threshold 0.1 on D: an absolute gap of 10 percentage points between
the CDFs, a size of effect rather than a significance level (with thousands of
records any tiny shift is "significant"); the p-value is reported alongside.

>>> s = ks(np.arange(20.0), np.arange(20.0) + 6)  # 6 of the 20 values moved past the other sample
>>> round(s.score, 12)
0.3
>>> round(s.pvalue, 4)
0.2705
"""

from __future__ import annotations

import numpy as np

from monitor.drift.inputs import sample
from monitor.drift.methods import NUMERIC, SAMPLE, DriftMethod, Stat, register

DEFAULT_THRESHOLD = 0.1


def ks_statistic(u: np.ndarray, v: np.ndarray) -> float:
    """max |F_u - F_v| over the pooled values (right-continuous ECDFs)."""
    u = np.sort(u)
    v = np.sort(v)
    pooled = np.concatenate([u, v])
    diff = (np.searchsorted(u, pooled, side="right") / u.size
            - np.searchsorted(v, pooled, side="right") / v.size)
    return float(min(max(np.max(diff), -np.min(diff), 0.0), 1.0))


def ks_pvalue(d: float, n: int, m: int) -> float:
    """Two-sided asymptotic p-value: kstwo.sf(d, round(n*m/(n+m)))."""
    from scipy.stats import kstwo  # ~1 s to import: only when used

    big, small = max(float(n), float(m)), min(float(n), float(m))
    en = big * small / (big + small)
    return float(np.clip(kstwo.sf(d, max(np.round(en), 1.0)), 0.0, 1.0))


def ks(reference_values, current_values) -> Stat:
    """Two-sample KS: `Stat(score=D, pvalue=asymptotic two-sided p)`."""
    ref = sample("reference_values", reference_values)
    cur = sample("current_values", current_values)
    d = ks_statistic(ref, cur)
    return Stat(d, ks_pvalue(d, ref.size, cur.size))


register(DriftMethod(
    name="ks",
    feature_types=frozenset({NUMERIC}),
    default_threshold=DEFAULT_THRESHOLD,
    has_pvalue=True,
    needs=SAMPLE,
    func=ks,
    description="Two-sample Kolmogorov-Smirnov statistic D (asymptotic p-value)",
))
