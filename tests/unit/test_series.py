"""Unit tests of the rule evaluator's in-memory series store."""

from __future__ import annotations

import math

from monitor.series import STALE_NAN, SeriesStore, is_stale, labels_of

UP_A = labels_of({"__name__": "up", "job": "a"})
UP_B = labels_of({"__name__": "up", "job": "b"})


def test_stale_marker_is_a_nan_told_apart_from_other_nans():
    assert math.isnan(STALE_NAN) and is_stale(STALE_NAN)
    assert not is_stale(math.nan) and not is_stale(1.0)


def test_labels_are_sorted_and_empty_values_dropped():
    assert labels_of({"job": "a", "__name__": "up", "x": ""}) == (("__name__", "up"), ("job", "a"))


def test_matchers_select_with_all_four_operators_and_anchored_regexes():
    store = SeriesStore()
    for job in ("a", "ab", "b"):
        store.append(labels_of({"__name__": "up", "job": job}), 0, 1.0)
    def jobs(*matchers):
        return [dict(s.labels)["job"] for s in store.matching([("__name__", "=", "up"), *matchers])]
    assert jobs(("job", "=", "a")) == ["a"]
    assert jobs(("job", "!=", "a")) == ["ab", "b"]
    assert jobs(("job", "=~", "a")) == ["a"]          # anchored: not "ab"
    assert jobs(("job", "=~", "a.*")) == ["a", "ab"]
    assert jobs(("job", "!~", "a.*")) == ["b"]
    assert jobs(("missing", "=", "")) == ["a", "ab", "b"]  # a missing label is ""


def test_scrape_marks_series_that_disappeared_as_stale_once():
    store = SeriesStore()
    store.scrape([(UP_A, 1.0), (UP_B, 1.0)], 0)
    store.scrape([(UP_A, 1.0)], 60_000)
    store.scrape([(UP_A, 1.0)], 120_000)
    b = store.series[UP_B]
    assert list(b.times) == [0, 60_000] and is_stale(b.values[-1])
    store.scrape([(UP_A, 1.0), (UP_B, 2.0)], 180_000)
    assert store.series[UP_B].values[-1] == 2.0


def test_retention_drops_old_samples_and_empty_series():
    store = SeriesStore(retention_ms=120_000)
    store.scrape([(UP_A, 1.0), (UP_B, 1.0)], 0)
    for t in range(60_000, 600_001, 60_000):
        store.scrape([(UP_A, float(t))], t)
    assert store.series[UP_A].times[0] >= 600_000 - 120_000
    assert UP_B not in store.series
    assert [s.labels for s in store.matching([("__name__", "=", "up")])] == [UP_A]


def test_the_series_limit_drops_new_series_and_counts_them():
    store = SeriesStore(max_series=2)
    for job in "abc":
        store.append(labels_of({"__name__": "up", "job": job}), 0, 1.0)
    assert len(store.series) == 2 and store.dropped_series == 1


def test_out_of_order_samples_are_ignored_and_same_time_overwrites():
    store = SeriesStore()
    assert store.append(UP_A, 60_000, 1.0)
    assert not store.append(UP_A, 0, 2.0)
    assert store.append(UP_A, 60_000, 3.0)
    assert list(store.series[UP_A].values) == [3.0]


def test_select_returns_samples_within_closed_bounds():
    store = SeriesStore()
    for t in range(0, 300_001, 60_000):
        store.append(UP_A, t, float(t))
    [(labels, times, values)] = list(store.select([("__name__", "=", "up")], 60_000, 180_000))
    assert list(times) == [60_000, 120_000, 180_000]
