"""Paired golden-set comparison (monitor.eval.compare), checked against independent
computations: scipy's ttest_rel and bootstrap, McNemar's formulas written out, a
published Newcombe interval, and coverage on simulated data."""

import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats

from monitor.eval import compare
from monitor.eval.compare import (
    Comparison,
    compare_exact_match,
    compare_nll,
    result_doc,
    verdict,
)


def nll_pair(n=200, shift=0.0, seed=0):
    """Skewed per-item NLL with a shared item difficulty; the candidate is better
    by `shift` on average (the true higher-is-better delta)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.gamma(2.0, 0.5, n)
    base = difficulty + rng.gamma(2.0, 0.1, n)
    cand = difficulty + rng.gamma(2.0, 0.1, n) - shift
    return cand, base


def em_pair(n=200, p_b=0.1, p_c=0.1, seed=0):
    """Paired 0/1 items: cells (both right, only candidate, only baseline, neither)."""
    rng = np.random.default_rng(seed)
    cell = rng.choice(4, size=n, p=[0.6, p_b, p_c, 0.4 - p_b - p_c])
    return np.isin(cell, (0, 1)).astype(int), np.isin(cell, (0, 2)).astype(int)


# --- NLL: paired t -----------------------------------------------------------

def test_paired_t_matches_scipy_ttest_rel_and_t_ppf_by_hand():
    cand, base = nll_pair(n=60, shift=0.05, seed=3)
    got = compare_nll(cand, base, "base", method="paired_t", confidence=0.9)
    ref = stats.ttest_rel(base, cand)  # tests mean(base - cand): same sign as delta
    ci = ref.confidence_interval(0.9)
    assert got.delta == pytest.approx(np.mean(base - cand), abs=1e-15)
    assert (got.ci_low, got.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert got.pvalue == pytest.approx(ref.pvalue, rel=1e-10)
    diff = base - cand
    half = stats.t.ppf(0.95, 59) * diff.std(ddof=1) / math.sqrt(60)
    assert got.ci_high - got.delta == pytest.approx(half, rel=1e-12)
    assert (got.method, got.n, got.metric, got.baseline) == ("paired_t", 60, "nll", "base")


def test_paired_t_with_a_constant_difference_is_a_point_interval():
    base = np.arange(10) * 0.25  # exact in binary: the differences are exactly equal
    got = compare_nll(base + 0.5, base, "base", method="paired_t")
    assert got.ci_low == got.ci_high == pytest.approx(-0.5)
    assert got.pvalue == 0.0 and got.regressed


# --- NLL: paired bootstrap ---------------------------------------------------

def test_bootstrap_matches_scipy_paired_percentile_bootstrap():
    cand, base = nll_pair(n=300, shift=0.02, seed=5)
    got = compare_nll(cand, base, "active", resamples=20_000, seed=1)
    ref = stats.bootstrap((cand, base), lambda c, b, axis: np.mean(b - c, axis=axis),
                          paired=True, vectorized=True, method="percentile",
                          n_resamples=20_000, rng=np.random.default_rng(2))
    se = np.std(base - cand, ddof=1) / math.sqrt(cand.size)
    # Different random streams: the endpoints agree to Monte Carlo error (~0.02 SE).
    assert got.ci_low == pytest.approx(ref.confidence_interval.low, abs=0.15 * se)
    assert got.ci_high == pytest.approx(ref.confidence_interval.high, abs=0.15 * se)
    assert got.delta == pytest.approx(np.mean(base - cand))
    assert got.ci_low < got.delta < got.ci_high
    assert got.method == "paired_bootstrap"


def test_bootstrap_is_deterministic_and_chunking_does_not_change_it(monkeypatch):
    cand, base = nll_pair(n=500, seed=8)
    first = compare_nll(cand, base, "base", seed=4)
    assert compare_nll(cand, base, "base", seed=4) == first
    assert compare_nll(cand, base, "base", seed=5) != first
    monkeypatch.setattr(compare, "_CHUNK_ELEMENTS", 777)  # many small chunks
    assert compare_nll(cand, base, "base", seed=4) == first


def test_bootstrap_pvalue_inverts_the_interval():
    cand, base = nll_pair(n=200, shift=1.0, seed=2)  # far from 0: no resample crosses it
    assert compare_nll(cand, base, "base", resamples=4_999).pvalue == pytest.approx(2 / 5_000)
    same = compare_nll(base, base, "base")
    assert same.pvalue == 1.0
    near = compare_nll(*nll_pair(n=200, shift=0.0, seed=2), "base")
    assert (near.pvalue < 0.05) == (near.ci_low > 0 or near.ci_high < 0)


def test_bootstrap_of_10k_resamples_by_1k_items_is_fast():
    cand, base = nll_pair(n=1_000, seed=1)
    start = time.perf_counter()
    compare_nll(cand, base, "base", resamples=10_000)
    assert time.perf_counter() - start < 1.0


# --- exact match: McNemar and Newcombe ---------------------------------------

def exact_mcnemar(b, c):
    """statsmodels' mcnemar(exact=True), written out: two-sided binomial tail."""
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def items(a, b, c, d):
    """Candidate and baseline 0/1 arrays with the given paired cell counts."""
    cand = [1] * a + [1] * b + [0] * c + [0] * d
    base = [1] * a + [0] * b + [1] * c + [0] * d
    return np.array(cand), np.array(base)


@pytest.mark.parametrize("b, c", [(0, 1), (3, 9), (10, 14), (12, 12), (7, 2)])
def test_mcnemar_exact_below_25_discordant_pairs(b, c):
    got = compare_exact_match(*items(40, b, c, 30), "base")
    assert got.method == "mcnemar_exact"
    assert got.pvalue == pytest.approx(exact_mcnemar(b, c), rel=1e-10)
    assert got.delta == pytest.approx((b - c) / (70 + b + c))


@pytest.mark.parametrize("b, c", [(10, 15), (30, 12), (5, 40)])
def test_mcnemar_chi2_with_continuity_correction_from_25(b, c):
    got = compare_exact_match(*items(100, b, c, 50), "base")
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    assert got.method == "mcnemar_chi2"
    assert got.pvalue == pytest.approx(math.erfc(math.sqrt(statistic / 2)), rel=1e-10)


def test_newcombe_interval_matches_published_example():
    # Cavo et al. 2012 as in Fagerland, Lydersen & Laake (2014): a=59, b=6, c=16, d=80,
    # Newcombe square-and-add 95% CI -0.1186 to -0.0046; exact McNemar p = 0.052.
    got = compare_exact_match(*items(59, 6, 16, 80), "base")
    assert got.delta == pytest.approx(-10 / 161)
    assert (got.ci_low, got.ci_high) == pytest.approx((-0.1186, -0.0046), abs=5e-5)
    assert got.pvalue == pytest.approx(0.0525, abs=5e-4)
    assert got.regressed  # the interval lies below 0


def test_newcombe_interval_at_the_extremes():
    same = compare_exact_match(*items(30, 0, 0, 20), "base")
    assert same.delta == 0 and same.ci_low < 0 < same.ci_high and same.pvalue == 1.0
    best = compare_exact_match(*items(0, 20, 0, 0), "base")
    assert best.delta == 1 and best.ci_high == 1.0 and 0 < best.ci_low < 1
    worst = compare_exact_match(*items(0, 0, 20, 0), "base")
    assert worst.ci_low == -1.0 and worst.regressed


def test_exact_match_accepts_booleans():
    cand, base = em_pair(seed=4)
    assert (compare_exact_match(cand.astype(bool), base.astype(bool), "b")
            == compare_exact_match(cand, base, "b"))


# --- coverage on simulated data ----------------------------------------------

@pytest.mark.parametrize("method", ["paired_bootstrap", "paired_t"])
def test_nll_interval_covers_the_true_difference_about_95_percent(method):
    covered = 0
    for seed in range(300):
        cand, base = nll_pair(n=150, shift=0.0, seed=1000 + seed)
        got = compare_nll(cand, base, "base", method=method, resamples=2_000, seed=seed)
        covered += got.ci_low <= 0.0 <= got.ci_high
    assert 0.90 <= covered / 300 <= 0.99


@pytest.mark.parametrize("p_b, p_c", [(0.1, 0.1), (0.03, 0.03), (0.15, 0.05)])
def test_exact_match_interval_covers_the_true_difference_about_95_percent(p_b, p_c):
    covered = 0
    for seed in range(300):
        got = compare_exact_match(*em_pair(n=200, p_b=p_b, p_c=p_c, seed=2000 + seed), "base")
        covered += got.ci_low <= p_b - p_c <= got.ci_high
    assert 0.90 <= covered / 300 <= 0.99


# --- regressions, improvements, identical models, margin ---------------------

@pytest.mark.parametrize("method", ["paired_bootstrap", "paired_t"])
def test_clear_nll_regression_is_flagged_and_improvement_is_not(method):
    worse = compare_nll(*nll_pair(shift=-0.3, seed=1), "base", method=method)
    assert worse.delta < 0 and worse.ci_high < 0 and worse.regressed
    better = compare_nll(*nll_pair(shift=0.3, seed=1), "base", method=method)
    assert better.delta > 0 and better.ci_low > 0 and not better.regressed
    assert verdict([better, worse]) == "regressed" and verdict([better]) == "pass"


def test_clear_exact_match_regression_is_flagged_and_improvement_is_not():
    worse = compare_exact_match(*em_pair(p_b=0.02, p_c=0.2, seed=1), "base")
    assert worse.delta < 0 and worse.regressed
    better = compare_exact_match(*em_pair(p_b=0.2, p_c=0.02, seed=1), "base")
    assert better.delta > 0 and better.ci_low > 0 and not better.regressed


@pytest.mark.parametrize("method", ["paired_bootstrap", "paired_t"])
def test_identical_models_give_zero_delta_and_pass(method):
    _, base = nll_pair(seed=6)
    nll = compare_nll(base.copy(), base, "active", method=method)
    assert nll.delta == 0 and nll.ci_low == nll.ci_high == 0 and not nll.regressed
    _, em = em_pair(seed=6)
    exact = compare_exact_match(em.copy(), em, "active")
    assert exact.delta == 0 and not exact.regressed
    assert verdict([nll, exact]) == "pass"


@pytest.mark.parametrize("method", ["paired_bootstrap", "paired_t"])
def test_nll_margin_tolerates_a_small_regression_only(method):
    cand, base = nll_pair(n=500, shift=-0.05, seed=9)
    strict = compare_nll(cand, base, "base", method=method)
    assert strict.regressed and -0.1 < strict.ci_low < strict.ci_high < 0
    assert not compare_nll(cand, base, "base", margin=0.1, method=method).regressed
    # The margin moves the threshold, not the interval: regressed iff ci_high < -margin.
    edge = compare_nll(cand, base, "base", margin=-strict.ci_high, method=method)
    assert not edge.regressed


def test_exact_match_margin():
    cand, base = items(100, 5, 25, 70)  # delta = -0.1, CI roughly (-0.16, -0.04)
    assert compare_exact_match(cand, base, "base").regressed
    assert compare_exact_match(cand, base, "base", margin=0.03).regressed
    assert not compare_exact_match(cand, base, "base", margin=0.2).regressed


# --- input validation --------------------------------------------------------

@pytest.mark.parametrize("cand, base, message", [
    ([1.0, 2.0, 3.0], [1.0, 2.0], "equal lengths"),
    ([1.0], [1.0], "at least 2"),
    ([1.0, float("nan")], [1.0, 2.0], "candidate scores must be finite: item 1 is nan"),
    ([1.0, 2.0], [float("inf"), 2.0], "baseline scores must be finite: item 0 is inf"),
    ([[1.0, 2.0]], [[1.0, 2.0]], "1-D"),
])
def test_invalid_scores_are_refused_with_a_clear_message(cand, base, message):
    with pytest.raises(ValueError, match=message):
        compare_nll(np.array(cand), np.array(base), "base")
    if "finite" not in message:
        with pytest.raises(ValueError, match=message):
            compare_exact_match(np.array(cand), np.array(base), "base")


@pytest.mark.parametrize("kwargs, message", [
    ({"margin": -0.1}, "margin"), ({"margin": float("nan")}, "margin"),
    ({"confidence": 1.0}, "confidence"), ({"confidence": 0}, "confidence"),
    ({"method": "wilcoxon"}, "method"), ({"resamples": 10}, "resamples"),
])
def test_invalid_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compare_nll(np.ones(5), np.ones(5), "base", **kwargs)


def test_exact_match_must_be_zero_or_one():
    with pytest.raises(ValueError, match="baseline exact match must be 0 or 1: item 2 is 0.5"):
        compare_exact_match(np.array([1, 0, 1]), np.array([1, 0, 0.5]), "base")


# --- verdict and the JSON document -------------------------------------------

def test_verdict():
    ok = Comparison("base", "nll", 0.1, 0.05, 0.15, False, 0.01, 10, "paired_t")
    bad = Comparison("active", "exact_match", -0.2, -0.3, -0.1, True, 0.001, 10, "mcnemar_exact")
    assert verdict([]) == "pass" and verdict([ok]) == "pass"
    assert verdict([ok, bad]) == "regressed"


def test_result_doc_is_the_designed_json():
    cand, base = nll_pair(n=225, shift=0.5, seed=0)
    em_c, em_b = em_pair(n=225, seed=0)
    comps = [compare_nll(cand, base, "base"), compare_exact_match(em_c, em_b, "active")]
    doc = json.loads(json.dumps(result_doc("legal", "v3", {"nll": np.float64(0.062),
                                                            "exact_match": 0.87}, 225, comps)))
    assert list(doc) == ["domain", "version", "n", "scores", "comparisons", "verdict"]
    assert doc["domain"] == "legal" and doc["version"] == "v3" and doc["n"] == 225
    assert doc["scores"] == {"nll": 0.062, "exact_match": 0.87}
    first = doc["comparisons"][0]
    assert set(first) == {"baseline", "metric", "delta", "ci_low", "ci_high", "regressed",
                          "pvalue", "method", "n"}
    assert first["baseline"] == "base" and first["metric"] == "nll" and first["n"] == 225
    assert first["delta"] == pytest.approx(comps[0].delta)
    assert doc["comparisons"][1]["method"].startswith("mcnemar")
    assert doc["verdict"] == verdict(comps)


def test_result_doc_refuses_unpaired_counts_and_non_finite_scores():
    comp = compare_nll(*nll_pair(n=50), "base")
    with pytest.raises(ValueError, match="n=50, the document has n=60"):
        result_doc("legal", "v3", {"nll": 0.1}, 60, [comp])
    with pytest.raises(ValueError, match="score 'nll' must be finite"):
        result_doc("legal", "v3", {"nll": float("nan")}, 50, [comp])


def test_module_does_not_import_torch():
    code = ("import sys, monitor.eval.compare; "
            "sys.exit('torch' in sys.modules or 'transformers' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
