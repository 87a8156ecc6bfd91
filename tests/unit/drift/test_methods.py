"""Unit tests of monitor.drift's statistics against independent implementations
(scipy and computations written here); evidently is compared in test_against_evidently.py."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.spatial.distance import cdist, jensenshannon
from scipy.stats import chi2_contingency, ks_2samp, wasserstein_distance
from scipy.stats.contingency import association

import monitor.drift
from monitor.drift import CATEGORICAL, EMBEDDING, METHODS, NUMERIC
from monitor.drift.chi2 import chi2
from monitor.drift.js import js
from monitor.drift.ks import ks
from monitor.drift.mmd import STOP_AFTER, mmd
from monitor.drift.psi import psi
from monitor.drift.wasserstein import wasserstein


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# -- registration -----------------------------------------------------------------

@pytest.mark.parametrize("name, feature_types, threshold, has_pvalue, needs", [
    ("psi", {NUMERIC, CATEGORICAL}, 0.1, False, "histogram"),
    ("js", {NUMERIC, CATEGORICAL}, 0.1, False, "histogram"),
    ("wasserstein", {NUMERIC}, 0.1, False, "sample"),
    ("ks", {NUMERIC}, 0.1, True, "sample"),
    ("chi2", {CATEGORICAL}, 0.1, True, "histogram"),
    ("mmd", {EMBEDDING}, 0.01, True, "embeddings"),
])
def test_each_method_is_registered_with_its_declaration(name, feature_types, threshold,
                                                         has_pvalue, needs):
    method = METHODS[name]
    assert method.name == name
    assert method.feature_types == frozenset(feature_types)
    assert method.default_threshold == threshold
    assert method.has_pvalue is has_pvalue
    assert method.needs == needs
    assert method.func is getattr(getattr(monitor.drift, name), name)


def test_importing_the_package_registers_the_six_methods():
    assert set(METHODS) >= {"psi", "js", "wasserstein", "ks", "chi2", "mmd"}
    assert [m.name for m in monitor.drift.methods_for(EMBEDDING)] == ["mmd"]


def test_methods_without_a_pvalue_return_none_and_the_others_a_probability():
    counts = [5, 3, 2]
    sample = rng().normal(size=50)
    assert psi(counts, counts).pvalue is None
    assert js(counts, counts).pvalue is None
    assert wasserstein(sample, sample).pvalue is None
    assert 0 <= ks(sample, sample + 0.1).pvalue <= 1
    assert 0 <= chi2(counts, [2, 3, 5]).pvalue <= 1
    assert 0 < mmd(rng(1).normal(size=(10, 3)), rng(2).normal(size=(10, 3)),
                   permutations=50).pvalue <= 1


# -- psi --------------------------------------------------------------------------

def test_psi_is_the_symmetrised_kl_divergence_of_the_proportions_within_1e_12():
    ref = np.array([120, 300, 80, 500], dtype=float)
    cur = np.array([90, 310, 150, 450], dtype=float)
    p, q = ref / ref.sum(), cur / cur.sum()
    expected = np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p))
    assert psi(ref, cur).score == pytest.approx(expected, abs=1e-12)


def test_psi_replaces_an_empty_bin_by_one_in_ten_thousand():
    # reference [0.5, 0.5, 0]; current [0.5, 0.25, 0.25]: the empty bin counts as 0.0001.
    r = np.array([0.5, 0.5, 0.0001])
    c = np.array([0.5, 0.25, 0.25])
    expected = np.sum((r - c) * np.log(r / c))
    assert psi([2, 2, 0], [2, 1, 1]).score == pytest.approx(expected, abs=1e-12)


def test_psi_of_identical_histograms_is_zero():
    assert psi([3, 0, 7], [30, 0, 70]).score == pytest.approx(0.0, abs=1e-15)


# -- js ---------------------------------------------------------------------------

@pytest.mark.parametrize("ref, cur", [
    ([120, 300, 80, 500], [90, 310, 150, 450]),
    ([10, 0, 5, 0], [0, 7, 5, 1]),          # bins empty on one side or both
    ([1, 0], [0, 1]),                         # disjoint: sqrt(ln 2)
    ([4, 4, 4], [4, 4, 4]),
])
def test_js_equals_scipy_jensenshannon_on_the_normalised_counts_within_1e_9(ref, cur):
    ref, cur = np.asarray(ref, float), np.asarray(cur, float)
    expected = jensenshannon(ref / ref.sum(), cur / cur.sum())
    assert js(ref, cur).score == pytest.approx(expected, abs=1e-9)


def test_js_equals_scipy_on_random_histograms_within_1e_9():
    g = rng(3)
    for _ in range(20):
        ref = g.integers(0, 50, size=30)
        cur = g.integers(0, 50, size=30)
        expected = jensenshannon(ref / ref.sum(), cur / cur.sum())
        assert js(ref, cur).score == pytest.approx(expected, abs=1e-9)


# -- wasserstein ------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda g: (g.normal(0, 2, 500), g.normal(0.3, 2, 700)),
    lambda g: (g.exponential(1, 300), g.exponential(1.4, 250)),
    lambda g: (g.poisson(40, 800).astype(float), g.poisson(43, 600).astype(float)),  # many ties
    lambda g: (g.normal(0, 1, 3), g.normal(5, 1, 1)),
])
def test_wasserstein_equals_scipy_distance_over_reference_std_within_1e_9(make):
    ref, cur = make(rng(4))
    expected = wasserstein_distance(ref, cur) / np.std(ref)
    assert wasserstein(ref, cur).score == pytest.approx(expected, abs=1e-9)


def test_wasserstein_of_a_constant_reference_is_the_raw_distance():
    ref = np.full(100, 3.0)
    cur = np.array([3.0, 4.0, 5.0, 6.0])
    assert wasserstein(ref, cur).score == pytest.approx(wasserstein_distance(ref, cur), abs=1e-12)


def test_wasserstein_of_a_sample_with_itself_is_zero():
    x = rng(5).normal(size=200)
    assert wasserstein(x, x[::-1]).score == 0.0


# -- ks ---------------------------------------------------------------------------

KS_CASES = [
    lambda g: (g.normal(0, 1, 500), g.normal(0.1, 1, 400)),
    lambda g: (g.normal(0, 1, 1000), g.normal(0, 1.1, 1000)),   # equal sizes
    # token counts
    lambda g: (g.poisson(30, 1500).astype(float), g.poisson(31, 1200).astype(float)),
    # heavy ties
    lambda g: (g.integers(0, 5, 700).astype(float), g.integers(0, 6, 300).astype(float)),
    lambda g: (g.normal(0, 1, 5), g.normal(3, 1, 7)),
    lambda g: (np.array([1.0]), np.array([2.0])),
]


@pytest.mark.parametrize("make", KS_CASES)
def test_ks_statistic_equals_scipy_ks_2samp_within_1e_12(make):
    ref, cur = make(rng(6))
    assert ks(ref, cur).score == pytest.approx(ks_2samp(ref, cur).statistic, abs=1e-12)


@pytest.mark.parametrize("make", KS_CASES[:-1])
def test_ks_pvalue_equals_scipy_asymptotic_pvalue_within_1e_9(make):
    ref, cur = make(rng(7))
    assert ks(ref, cur).pvalue == pytest.approx(ks_2samp(ref, cur, method="asymp").pvalue, abs=1e-9)


@pytest.mark.parametrize("n, m, shift", [(200, 300, 0.2), (500, 500, 0.12), (2000, 1500, 0.07),
                                         (1200, 800, 0.0)])
def test_ks_pvalue_is_within_0_02_of_the_exact_pvalue_at_realistic_sizes(n, m, shift):
    g = rng(8)
    ref, cur = g.normal(0, 1, n), g.normal(shift, 1, m)
    exact = ks_2samp(ref, cur, method="exact").pvalue
    assert ks(ref, cur).pvalue == pytest.approx(exact, abs=0.02)


def test_ks_of_identical_samples_is_zero_with_pvalue_one():
    x = rng(9).normal(size=100)
    assert ks(x, x.copy()) == (0.0, 1.0)


# -- chi2 -------------------------------------------------------------------------

@pytest.mark.parametrize("ref, cur", [
    ([300, 200, 100, 50], [280, 230, 90, 60]),
    ([300, 200, 100, 0], [280, 230, 90, 25]),     # a category absent from the reference
    ([500, 500], [400, 600]),
    ([7, 0, 3, 9, 1], [5, 2, 4, 12, 0]),
])
def test_chi2_equals_scipy_chi2_contingency_without_correction_within_1e_9(ref, cur):
    table = np.array([ref, cur], dtype=float)
    expected = chi2_contingency(table, correction=False)
    stat = chi2(ref, cur)
    assert stat.pvalue == pytest.approx(expected.pvalue, abs=1e-9)
    assert stat.score ** 2 * table.sum() == pytest.approx(expected.statistic, rel=1e-9)
    assert stat.score == pytest.approx(association(table.astype(int), method="cramer"), abs=1e-9)


def test_chi2_drops_categories_empty_in_both_rows():
    kept = chi2_contingency(np.array([[30, 20, 10], [25, 30, 5]]), correction=False)
    stat = chi2([30, 0, 20, 10, 0], [25, 0, 30, 5, 0])
    assert stat.pvalue == pytest.approx(kept.pvalue, abs=1e-9)
    assert stat.score ** 2 * 120 == pytest.approx(kept.statistic, rel=1e-9)


def test_chi2_with_fewer_than_two_categories_is_zero_with_pvalue_one():
    assert chi2([10, 0, 0], [4, 0, 0]) == (0.0, 1.0)
    assert chi2([10], [4]) == (0.0, 1.0)


# -- mmd --------------------------------------------------------------------------

def unbiased_mmd2_by_loops(x: np.ndarray, y: np.ndarray) -> float:
    """Independent reference: cdist distances, median over distinct pairs, explicit sums."""
    z = np.vstack([x, y])
    d2 = cdist(z, z, "sqeuclidean")
    n, m = len(x), len(y)
    big = n + m
    sigma2 = np.median([d2[i, j] for i in range(big) for j in range(i + 1, big)])
    k = np.exp(-d2 / (2 * sigma2))
    kxx = sum(k[i, j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k[n + i, n + j] for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k[i, n + j] for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


@pytest.mark.parametrize("n, m, d, shift", [(30, 25, 8, 0.0), (20, 40, 16, 0.5), (12, 12, 1, 2.0)])
def test_mmd_score_equals_the_unbiased_mmd2_computed_by_loops_within_1e_9(n, m, d, shift):
    g = rng(10)
    x = g.normal(size=(n, d)) * 3 + 10      # an offset, as real embeddings have
    y = g.normal(size=(m, d)) * 3 + 10 + shift
    assert mmd(x, y, permutations=10).score == pytest.approx(unbiased_mmd2_by_loops(x, y), abs=1e-9)


def test_mmd_of_samples_from_one_distribution_has_a_large_pvalue():
    g = rng(0)
    stat = mmd(g.normal(size=(200, 32)), g.normal(size=(200, 32)))
    assert abs(stat.score) < 0.001
    assert stat.pvalue > 0.05


def test_mmd_pvalues_under_no_drift_are_roughly_uniform():
    # 100 independent no-drift pairs: P(more than 12 of them at p <= 0.05) ~ 0.002 for a valid test.
    pvalues = []
    for seed in range(100):
        g = rng(1000 + seed)
        pvalues.append(mmd(g.normal(size=(30, 4)), g.normal(size=(30, 4)),
                           permutations=100, seed=seed).pvalue)
    pvalues = np.array(pvalues)
    assert np.mean(pvalues <= 0.05) <= 0.12
    assert 0.3 < np.median(pvalues) < 0.7


def test_mmd_of_shifted_samples_has_the_smallest_pvalue_1000_permutations_can_give():
    g = rng(12)
    stat = mmd(g.normal(size=(200, 32)), g.normal(size=(200, 32)) + 0.3)
    assert stat.pvalue <= 0.002
    assert stat.pvalue == pytest.approx(1 / 1001)


def test_mmd_detects_a_change_of_spread_not_only_of_mean():
    g = rng(13)
    assert mmd(g.normal(size=(150, 8)), g.normal(size=(150, 8)) * 1.5).pvalue <= 0.002


def test_mmd_with_the_same_seed_gives_the_same_pvalue():
    g = rng(14)
    x, y = g.normal(size=(80, 16)), g.normal(size=(70, 16)) + 0.05
    first = mmd(x, y, seed=7)
    assert mmd(x, y, seed=7) == first
    assert mmd(x, y, seed=8).score == first.score


def test_mmd_stops_early_after_twenty_exceedances_with_pvalue_twenty_over_permutations_run():
    g = rng(15)
    stat = mmd(g.normal(size=(50, 4)), g.normal(size=(50, 4)), permutations=1000)
    runs = STOP_AFTER / stat.pvalue
    assert runs == pytest.approx(round(runs)) and runs < 1000


def test_mmd_of_identical_points_is_zero_with_pvalue_one():
    x = np.ones((10, 3))
    stat = mmd(x, x.copy(), permutations=100)   # every permutation ties: stops after 20, p = 20/20
    assert stat.score == 0.0 and stat.pvalue == 1.0


def test_mmd_runs_1000_permutations_of_400_embeddings_of_dimension_384_in_well_under_a_second():
    # About 20 ms on an idle 2-core machine; the bound leaves room for a loaded CI runner
    # and still catches a per-permutation Python loop (about 1 s).
    g = rng(16)
    x, y = g.normal(size=(200, 384)), g.normal(size=(200, 384)) + 0.2   # drift: no early stop
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        stat = mmd(x, y, permutations=1000)
        best = min(best, time.perf_counter() - start)
    assert stat.pvalue == pytest.approx(1 / 1001)
    assert best < 0.5


# -- input validation -------------------------------------------------------------

@pytest.mark.parametrize("func", [psi, js, chi2])
@pytest.mark.parametrize("ref, cur, message", [
    ([1, 2, 3], [1, 2], "different lengths"),
    ([1, -2, 3], [1, 2, 3], "negative counts"),
    ([0, 0, 0], [1, 2, 3], "sums to 0"),
    ([1, 2, 3], [0, 0, 0], "sums to 0"),
    ([], [], "empty"),
    ([[1, 2], [3, 4]], [[1, 2], [3, 4]], "1-D"),
    ([1, np.nan, 3], [1, 2, 3], "NaN"),
])
def test_histogram_methods_reject_bad_counts_with_a_clear_message(func, ref, cur, message):
    with pytest.raises(ValueError, match=message):
        func(ref, cur)


@pytest.mark.parametrize("func", [wasserstein, ks])
@pytest.mark.parametrize("ref, cur, message", [
    ([], [1.0], "reference_values is an empty sample"),
    ([1.0], [], "current_values is an empty sample"),
    ([[1.0, 2.0]], [1.0], "1-D"),
    ([1.0, np.nan], [1.0], "NaN"),
    ([1.0, 2.0], [np.inf], "infinite"),
])
def test_sample_methods_reject_bad_samples_with_a_clear_message(func, ref, cur, message):
    with pytest.raises(ValueError, match=message):
        func(ref, cur)


@pytest.mark.parametrize("ref, cur, kwargs, message", [
    (np.zeros(5), np.zeros((5, 2)), {}, "2-D"),
    (np.zeros((5, 2)), np.zeros((5, 3)), {}, "different embedding dimensions"),
    (np.zeros((1, 2)), np.zeros((5, 2)), {}, "at least 2 rows"),
    (np.zeros((5, 2)), np.zeros((0, 2)), {}, "at least 2 rows"),
    (np.full((5, 2), np.nan), np.zeros((5, 2)), {}, "NaN"),
    (np.zeros((5, 2)), np.zeros((5, 2)), {"permutations": 0}, "permutations"),
])
def test_mmd_rejects_bad_inputs_with_a_clear_message(ref, cur, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mmd(ref, cur, **kwargs)
