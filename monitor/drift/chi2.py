"""Pearson chi-square test of homogeneity, scored by Cramer's V.

The 2 x K table [reference counts; current counts] is tested for "both rows
come from the same categorical distribution": chi2 = sum (O - E)^2 / E with
E = row total * column total / N, no Yates correction, dof = K' - 1.
Categories that are zero in both rows carry no information (and would give
E = 0), so they are dropped first; K' is the number kept.  With K' < 2 there
is nothing to compare: chi2 = 0 and p = 1.  A category absent from the
reference but present in the current window is kept (E > 0 there).

The p-value alone is not a usable drift score: with thousands of records a
trivial shift is "significant".  The score is therefore the effect size,
Cramer's V = sqrt(chi2 / (N * (min(2, K') - 1))) = sqrt(chi2 / N) for a 2 x K
table, in [0, 1].

Default threshold 0.1 on V: Cohen's conventional boundary of a "small" effect
for a table with one degree of freedom in its smaller dimension.

>>> s = chi2([50, 50], [50, 50])
>>> s.score, s.pvalue
(0.0, 1.0)
>>> s = chi2([60, 40], [40, 60])
>>> round(s.score, 4), round(s.pvalue, 5)
(0.2, 0.00468)
"""

from __future__ import annotations

import numpy as np

from monitor.drift.inputs import aligned_counts
from monitor.drift.methods import CATEGORICAL, HISTOGRAM, DriftMethod, Stat, register

DEFAULT_THRESHOLD = 0.1


def chi2_statistic(table: np.ndarray) -> tuple[float, int]:
    """(Pearson chi2, dof) of a table with no all-zero row or column."""
    n = table.sum()
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
    stat = float(np.sum((table - expected) ** 2 / expected))
    return stat, (table.shape[0] - 1) * (table.shape[1] - 1)


def chi2(reference_counts, current_counts) -> Stat:
    """Chi-square homogeneity test of two aligned count vectors: `Stat(cramers_v, p)`."""
    ref, cur = aligned_counts(reference_counts, current_counts)
    keep = (ref + cur) > 0
    if np.count_nonzero(keep) < 2:
        return Stat(0.0, 1.0)
    table = np.vstack([ref[keep], cur[keep]])
    stat, dof = chi2_statistic(table)
    cramers_v = float(np.sqrt(stat / table.sum()))
    from scipy.stats import chi2 as chi2_distribution  # ~1 s to import: only when used

    return Stat(cramers_v, float(chi2_distribution.sf(stat, dof)))


register(DriftMethod(
    name="chi2",
    feature_types=frozenset({CATEGORICAL}),
    default_threshold=DEFAULT_THRESHOLD,
    has_pvalue=True,
    needs=HISTOGRAM,
    func=chi2,
    description="Chi-square test of homogeneity; score is Cramer's V",
))
