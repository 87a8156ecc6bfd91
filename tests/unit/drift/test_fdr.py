"""Unit tests of monitor.drift.fdr against a Benjamini-Hochberg written out here."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.drift.fdr import benjamini_hochberg


def brute_force_bh(pvalues) -> np.ndarray:
    """adjusted p_(k) = min_{j >= k} p_(j) * m / j, capped at 1, back in input order."""
    p = list(pvalues)
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    for rank, i in enumerate(order, start=1):
        adjusted[i] = min(1.0, min(p[order[j - 1]] * m / j for j in range(rank, m + 1)))
    return np.array(adjusted)


@pytest.mark.parametrize("pvalues", [
    [0.01, 0.04, 0.03, 0.20],
    [0.5],
    [0.0, 1.0, 0.0, 1.0],
    [0.02, 0.02, 0.02, 0.9, 0.001],   # ties
])
def test_bh_equals_the_brute_force_step_up_within_1e_12(pvalues):
    np.testing.assert_allclose(benjamini_hochberg(pvalues), brute_force_bh(pvalues),
                               rtol=0, atol=1e-12)


def test_bh_equals_the_brute_force_on_random_pvalues_in_their_original_order():
    g = np.random.default_rng(0)
    for size in (2, 7, 50):
        p = np.concatenate([g.uniform(size=size), g.uniform(0, 0.01, size=size // 2)])
        g.shuffle(p)
        np.testing.assert_allclose(benjamini_hochberg(p), brute_force_bh(p), rtol=0, atol=1e-12)


def test_bh_of_no_pvalues_is_an_empty_array():
    out = benjamini_hochberg([])
    assert isinstance(out, np.ndarray) and out.shape == (0,)


@pytest.mark.parametrize("pvalues, message", [
    ([0.1, float("nan")], "NaN"),
    ([0.1, 1.5], r"\[0, 1\]"),
    ([-0.1], r"\[0, 1\]"),
    ([[0.1, 0.2]], "1-D"),
])
def test_bh_rejects_invalid_pvalues(pvalues, message):
    with pytest.raises(ValueError, match=message):
        benjamini_hochberg(pvalues)
