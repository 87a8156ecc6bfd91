"""Paired comparison of a candidate's golden-set scores against a baseline (DESIGN §7).

Every golden item is scored by both models, so the comparison is paired, item
by item: the per-item difference removes the item difficulty, which dominates
the variance of either score alone. `delta` is "higher = better" (DESIGN §4,
`monitor_golden_delta`): baseline minus candidate for NLL (lower NLL is
better), candidate minus baseline for exact match. A comparison is `regressed`
when its whole confidence interval lies below `-margin`: the candidate is worse
by more than the margin with the stated confidence. A wide interval that
straddles the margin is not a regression; the golden set is too small to say.

NLL (continuous, skewed): a paired percentile bootstrap of the mean difference
by default (no normality assumption; per-item NLL is heavy-tailed), or the
paired t-interval. Exact match (0/1): McNemar on the discordant pairs, and
Newcombe's square-and-add interval (1998, method 10) for the difference of
paired proportions. Newcombe rather than Wald: the Wald interval collapses to a
single point when there are no discordant items or all of them go one way
(b = 0 or c = 0), which happens with small golden sets and near-identical
adapters, and it under-covers at small counts; Newcombe's interval has close to
nominal coverage there and never leaves [-1, 1] (Fagerland, Lydersen & Laake,
Stat Med 2014, recommend it among the simple closed-form intervals).

>>> em = compare_exact_match(np.array([1, 1, 1, 0]), np.array([1, 0, 1, 0]), "base")
>>> em.delta, em.pvalue, em.method, em.regressed
(0.25, 1.0, 'mcnemar_exact', False)
>>> verdict([em])
'pass'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

NLL_METHODS = ("paired_bootstrap", "paired_t")
MIN_RESAMPLES = 1_000
EXACT_BELOW = 25  # McNemar: exact binomial test when b + c < 25, else chi2 with correction
_CHUNK_ELEMENTS = 1 << 21  # bootstrap indices drawn per chunk: ~16 MiB of int64


@dataclass(frozen=True)
class Comparison:
    """One candidate-vs-baseline comparison on one metric; delta is higher = better."""

    baseline: str
    metric: str
    delta: float
    ci_low: float
    ci_high: float
    regressed: bool
    pvalue: float | None
    n: int
    method: str  # "paired_bootstrap" | "paired_t" | "mcnemar_exact" | "mcnemar_chi2"


def _paired(candidate, baseline) -> tuple[np.ndarray, np.ndarray]:
    cand = np.asarray(candidate, dtype=float)
    base = np.asarray(baseline, dtype=float)
    if cand.ndim != 1 or base.ndim != 1:
        raise ValueError(f"scores must be 1-D arrays, got shapes {cand.shape} and {base.shape}")
    if cand.shape != base.shape:
        raise ValueError(f"paired scores need equal lengths: candidate has {cand.size} items, "
                         f"baseline {base.size}")
    if cand.size < 2:
        raise ValueError(f"need at least 2 paired items, got {cand.size}")
    for name, arr in (("candidate", cand), ("baseline", base)):
        if not np.isfinite(arr).all():
            bad = int(np.flatnonzero(~np.isfinite(arr))[0])
            raise ValueError(f"{name} scores must be finite: item {bad} is {arr[bad]}")
    return cand, base


def _check_options(margin: float, confidence: float) -> None:
    if not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")


def _bootstrap_means(diff: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of `resamples` resamples of `diff` (items drawn with replacement), drawn
    in chunks of rows so that memory stays bounded for large golden sets."""
    rng = np.random.default_rng(seed)
    n = diff.size
    rows = max(1, _CHUNK_ELEMENTS // n)
    means = np.empty(resamples)
    for start in range(0, resamples, rows):
        stop = min(start + rows, resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diff[idx].mean(axis=1)
    return means


def compare_nll(candidate: np.ndarray, baseline: np.ndarray, baseline_name: str,
                margin: float = 0.0, confidence: float = 0.95,
                method: str = "paired_bootstrap", resamples: int = 10_000,
                seed: int = 0) -> Comparison:
    """Compare per-item mean token NLL; delta = mean(baseline - candidate) (> 0: better).

    paired_bootstrap: percentile interval of the resampled mean difference; its
    p-value inverts that interval (twice the smaller tail share of resampled
    means on either side of 0, counted with +1 so it is never 0). paired_t: the
    t-interval with n - 1 degrees of freedom and the paired t-test p-value.
    """
    cand, base = _paired(candidate, baseline)
    _check_options(margin, confidence)
    if method not in NLL_METHODS:
        raise ValueError(f"method must be one of {NLL_METHODS}, got {method!r}")
    diff = base - cand
    n = diff.size
    delta = float(diff.mean())
    alpha = 1.0 - confidence
    if method == "paired_bootstrap":
        if resamples < MIN_RESAMPLES:
            raise ValueError(f"resamples must be >= {MIN_RESAMPLES}, got {resamples}")
        means = _bootstrap_means(diff, resamples, seed)
        low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
        tail = min(np.count_nonzero(means <= 0), np.count_nonzero(means >= 0))
        pvalue = min(1.0, 2 * (tail + 1) / (resamples + 1))
    else:
        se = float(diff.std(ddof=1)) / np.sqrt(n)
        if se == 0:  # every item moved by the same amount: no sampling spread
            low = high = delta
            pvalue = 1.0 if delta == 0 else 0.0
        else:
            half = stats.t.ppf(1 - alpha / 2, n - 1) * se
            low, high = delta - half, delta + half
            pvalue = float(2 * stats.t.sf(abs(delta) / se, n - 1))
    return Comparison(baseline_name, "nll", delta, float(low), float(high),
                      bool(high < -margin), float(pvalue), n, method)


def _mcnemar(b: int, c: int) -> tuple[float, str]:
    """Two-sided McNemar p-value on the discordant counts b, c (as statsmodels'
    `mcnemar`: exact binomial below EXACT_BELOW discordant pairs, else chi2 with
    Edwards' continuity correction, clipped at 0 so that b == c gives p = 1)."""
    if b + c == 0:
        return 1.0, "mcnemar_exact"
    if b + c < EXACT_BELOW:
        return float(stats.binomtest(b, b + c, 0.5).pvalue), "mcnemar_exact"
    statistic = max(abs(b - c) - 1, 0) ** 2 / (b + c)
    return float(stats.chi2.sf(statistic, 1)), "mcnemar_chi2"


def _newcombe(a: int, b: int, c: int, d: int, confidence: float) -> tuple[float, float]:
    """Newcombe's (1998) method 10 interval for p1 - p2, p1 = (a+b)/n, p2 = (a+c)/n:
    Wilson intervals for each proportion combined with a correlation estimate phi
    (continuity-corrected toward 0 when positive, as in the paper)."""
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    ci1 = stats.binomtest(a + b, n).proportion_ci(confidence, method="wilson")
    ci2 = stats.binomtest(a + c, n).proportion_ci(confidence, method="wilson")
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    phi = 0.0
    if margins > 0:
        phi = (max(cross - n / 2, 0.0) if cross > 0 else cross) / np.sqrt(margins)
    lo1, hi1, lo2, hi2 = p1 - ci1.low, ci1.high - p1, p2 - ci2.low, ci2.high - p2
    delta = p1 - p2
    low = delta - np.sqrt(max(lo1**2 - 2 * phi * lo1 * hi2 + hi2**2, 0.0))
    high = delta + np.sqrt(max(hi1**2 - 2 * phi * hi1 * lo2 + lo2**2, 0.0))
    return max(-1.0, float(low)), min(1.0, float(high))


def compare_exact_match(candidate: np.ndarray, baseline: np.ndarray, baseline_name: str,
                        margin: float = 0.0, confidence: float = 0.95) -> Comparison:
    """Compare per-item greedy exact match (0/1); delta = candidate - baseline rate.

    b counts items only the candidate gets right, c items only the baseline gets
    right; delta = (b - c) / n, McNemar p-value on (b, c), Newcombe interval.
    """
    cand, base = _paired(candidate, baseline)
    _check_options(margin, confidence)
    for name, arr in (("candidate", cand), ("baseline", base)):
        if not np.isin(arr, (0.0, 1.0)).all():
            bad = int(np.flatnonzero(~np.isin(arr, (0.0, 1.0)))[0])
            raise ValueError(f"{name} exact match must be 0 or 1: item {bad} is {arr[bad]}")
    cand, base = cand.astype(bool), base.astype(bool)
    a, b = int(np.sum(cand & base)), int(np.sum(cand & ~base))
    c, d = int(np.sum(~cand & base)), int(np.sum(~cand & ~base))
    n = cand.size
    pvalue, method = _mcnemar(b, c)
    low, high = _newcombe(a, b, c, d, confidence)
    return Comparison(baseline_name, "exact_match", (b - c) / n, low, high,
                      bool(high < -margin), pvalue, n, method)


def verdict(comparisons: list[Comparison]) -> str:
    """"regressed" when any comparison regressed, else "pass" (also for none)."""
    return "regressed" if any(c.regressed for c in comparisons) else "pass"


def result_doc(domain: str, version: str, scores: dict[str, float], n: int,
               comparisons: list[Comparison]) -> dict:
    """The `monitor eval --json` document (DESIGN §7), JSON-ready plain types."""
    for metric, value in scores.items():
        if not np.isfinite(value):
            raise ValueError(f"score {metric!r} must be finite, got {value}")
    for comp in comparisons:
        if comp.n != n:
            raise ValueError(f"comparison with {comp.baseline!r} on {comp.metric} has "
                             f"n={comp.n}, the document has n={n}: items are not paired")
    return {"domain": domain, "version": version, "n": int(n),
            "scores": {metric: float(value) for metric, value in scores.items()},
            "comparisons": [asdict(comp) for comp in comparisons],
            "verdict": verdict(comparisons)}
