"""Our drift statistics against evidently's legacy stattests on the same raw data.

evidently takes two pandas Series and bins them itself (`get_binned_data`);
we feed our histogram methods the counts of those same bins.

Importing evidently takes several seconds (it loads its report stack); the
fixture does it once per module.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def ev():
    """evidently's stattest implementations, imported once for this module."""
    pytest.importorskip("evidently")
    from evidently.legacy.calculations.stattests.chisquare_stattest import _chi_stat_test
    from evidently.legacy.calculations.stattests.jensenshannon import _jensenshannon
    from evidently.legacy.calculations.stattests.ks_stattest import _ks_stat_test
    from evidently.legacy.calculations.stattests.mmd_stattest import _mmd_stattest
    from evidently.legacy.calculations.stattests.psi import _psi
    from evidently.legacy.calculations.stattests.utils import get_binned_data
    from evidently.legacy.calculations.stattests.wasserstein_distance_norm import (
        _wasserstein_distance_norm)
    from evidently.legacy.core import ColumnType

    return SimpleNamespace(psi=_psi, js=_jensenshannon, wasserstein=_wasserstein_distance_norm,
                           ks=_ks_stat_test, chisquare=_chi_stat_test, mmd=_mmd_stattest,
                           binned=get_binned_data, NUM=ColumnType.Numerical,
                           CAT=ColumnType.Categorical)


def numeric_pair(seed: int, shift: float):
    g = np.random.default_rng(seed)
    return pd.Series(g.normal(0, 1, 2000)), pd.Series(g.normal(shift, 1.2, 1500))


def categorical_pair():
    # "rare" is 1 in 20000 of the reference (below evidently's 0.0001, so its
    # zero fill switches to min/1e6); "new" is absent from the reference.
    ref = pd.Series(["a"] * 12000 + ["b"] * 7999 + ["rare"])
    cur = pd.Series(["a"] * 400 + ["b"] * 500 + ["new"] * 100)
    return ref, cur


def evidently_counts(ev, ref: pd.Series, cur: pd.Series, feature_type):
    """The counts of evidently's own bins (it returns proportions of len(data))."""
    p_ref, p_cur = ev.binned(ref, cur, feature_type, 30, feel_zeroes=False)
    return np.rint(p_ref * len(ref)), np.rint(p_cur * len(cur))


@pytest.mark.parametrize("shift", [0.0, 0.3, 2.5])   # 2.5: bins empty on either side
def test_psi_equals_evidently_psi_on_numeric_data_within_1e_9(ev, shift):
    from monitor.drift.psi import psi
    ref, cur = numeric_pair(1, shift)
    expected, _ = ev.psi(ref, cur, ev.NUM, 0.1)
    assert psi(*evidently_counts(ev, ref, cur, ev.NUM)).score == pytest.approx(expected, abs=1e-9)


def test_psi_equals_evidently_psi_on_categorical_data_within_1e_9(ev):
    from monitor.drift.psi import psi
    ref, cur = categorical_pair()
    expected, _ = ev.psi(ref, cur, ev.CAT, 0.1)
    assert psi(*evidently_counts(ev, ref, cur, ev.CAT)).score == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("shift", [0.0, 0.3, 2.5])
def test_js_equals_evidently_jensenshannon_on_numeric_data_within_1e_9(ev, shift):
    from monitor.drift.js import js
    ref, cur = numeric_pair(2, shift)
    expected, _ = ev.js(ref, cur, ev.NUM, 0.1)
    assert js(*evidently_counts(ev, ref, cur, ev.NUM)).score == pytest.approx(expected, abs=1e-9)


def test_js_equals_evidently_jensenshannon_on_categorical_data_within_1e_9(ev):
    from monitor.drift.js import js
    ref, cur = categorical_pair()
    expected, _ = ev.js(ref, cur, ev.CAT, 0.1)
    assert js(*evidently_counts(ev, ref, cur, ev.CAT)).score == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("shift", [0.0, 0.3, 2.5])
def test_wasserstein_equals_evidently_normed_wasserstein_within_1e_9(ev, shift):
    from monitor.drift.wasserstein import wasserstein
    ref, cur = numeric_pair(3, shift)
    expected, _ = ev.wasserstein(ref, cur, ev.NUM, 0.1)
    assert wasserstein(ref.to_numpy(), cur.to_numpy()).score == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("shift", [0.0, 0.06, 0.1, 0.3])
def test_ks_pvalue_is_within_0_02_of_evidently_ks_which_is_exact_at_these_sizes(ev, shift):
    from monitor.drift.ks import ks
    ref, cur = numeric_pair(4, shift)
    cur = cur / 1.2                                  # same spread: only the shift differs
    expected, _ = ev.ks(ref, cur, ev.NUM, 0.05)
    assert ks(ref.to_numpy(), cur.to_numpy()).pvalue == pytest.approx(expected, abs=0.02)


@pytest.mark.parametrize("cur_counts, drift", [
    ({"a": 600, "b": 300, "c": 100}, False),         # the reference's proportions exactly
    ({"a": 450, "b": 400, "c": 150}, True),
])
def test_chi2_agrees_with_evidently_chisquare_on_clear_cases(ev, cur_counts, drift):
    # evidently's "chisquare" is a goodness-of-fit test of the current counts
    # against the reference proportions, not our homogeneity test: the
    # statistics differ, so only the decisions at 0.05 are compared.
    from monitor.drift.chi2 import chi2
    ref_counts = {"a": 3000, "b": 1500, "c": 500}
    ref = pd.Series([k for k, v in ref_counts.items() for _ in range(v)])
    cur = pd.Series([k for k, v in cur_counts.items() for _ in range(v)])
    ev_p, _ = ev.chisquare(ref, cur, ev.CAT, 0.05)
    ours = chi2(list(ref_counts.values()), [cur_counts[k] for k in ref_counts])
    assert bool(ours.pvalue < 0.05) is drift
    assert bool(ev_p < 0.05) is drift


@pytest.mark.parametrize("shift, drift", [(0.0, False), (1.0, True)])
def test_mmd_agrees_with_evidently_empirical_mmd_on_clear_cases(ev, shift, drift):
    # evidently's test is 1-D only (it reshapes a Series to n x 1) and draws its
    # 100 permutations from numpy's global random state, which we seed and restore.
    from monitor.drift.mmd import mmd
    g = np.random.default_rng(5)
    ref, cur = pd.Series(g.normal(0, 1, 150)), pd.Series(g.normal(shift, 1, 150))
    state = np.random.get_state()
    try:
        np.random.seed(0)
        ev_p, _ = ev.mmd(ref, cur, ev.NUM, 0.05)
    finally:
        np.random.set_state(state)
    ours = mmd(ref.to_numpy()[:, None], cur.to_numpy()[:, None])
    assert bool(ours.pvalue < 0.05) is drift
    assert bool(ev_p < 0.05) is drift
