"""Unit tests of monitor.windows: WindowSet (event-time windows per domain) and Bucket."""

from __future__ import annotations

import math
import random

import pytest

from monitor.errors import RecordError
from monitor.records import Record
from monitor.windows import Bucket, WindowSet

NO_FLAGS = (False, False, False, False)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_windows(bucket=60, length=900, lateness=300, max_domains=100, clock=None) -> WindowSet:
    return WindowSet(bucket_seconds=bucket, length_seconds=length,
                     allowed_lateness_seconds=lateness, max_domains=max_domains,
                     clock=clock or Clock(0.0))


def rec(numeric=None, domain: str = "d", t: float = 0.0) -> Record:
    """A record carrying the values that buckets read (numeric uses feature names)."""
    numeric = numeric or {}
    latency = numeric.get("latency_seconds")
    return Record(t, domain, mean_logprob=numeric.get("mean_logprob"),
                  feedback_score=numeric.get("feedback_score"),
                  latency_ms=None if latency is None else latency * 1000.0)


def add(ws: WindowSet, domain: str, t: float, numeric=None, flags=NO_FLAGS) -> None:
    ws.add(rec(numeric, domain, t), flags)


# -- counting and lateness -----------------------------------------------------

def test_records_in_the_window_are_counted():
    ws = make_windows()
    for t in (1000.0, 1010.0, 1070.0, 1500.0):
        add(ws, "legal", t)
    add(ws, "support", 1200.0)

    legal = ws.summary("legal")

    assert legal.samples == 4
    assert legal.merged.count == 4
    assert legal.end == 1500.0
    assert legal.start == 1500.0 - 900
    assert ws.summary("support").samples == 1


def test_summary_of_an_unknown_domain_is_none():
    assert make_windows().summary("nobody") is None


def test_watermark_is_the_latest_event_time_seen():
    ws = make_windows()
    for t in (1000.0, 1300.0, 1200.0):
        add(ws, "legal", t)

    assert ws.domains["legal"].watermark == 1300.0


def test_record_older_than_watermark_minus_lateness_is_rejected_as_late():
    ws = make_windows(lateness=300)
    add(ws, "legal", 10_000.0)

    with pytest.raises(RecordError) as info:
        add(ws, "legal", 10_000.0 - 301)

    assert info.value.reason == "late"
    assert ws.summary("legal").samples == 1


def test_record_exactly_at_the_lateness_limit_is_accepted():
    ws = make_windows(lateness=300)
    add(ws, "legal", 10_000.0)

    add(ws, "legal", 10_000.0 - 300)

    assert ws.summary("legal").samples == 2


def test_record_within_lateness_is_accepted_into_its_own_older_bucket():
    ws = make_windows(bucket=60, lateness=300)
    add(ws, "legal", 10_000.0)
    ws.take_changes()

    add(ws, "legal", 9_800.0)
    changed, _, _ = ws.take_changes()

    assert ws.summary("legal").samples == 2
    assert [(d, s) for d, s, _ in changed] == [("legal", 9780)]
    assert ws.domains["legal"].watermark == 10_000.0


def test_lateness_is_per_domain():
    ws = make_windows(lateness=60)
    add(ws, "legal", 10_000.0)

    add(ws, "support", 100.0)  # far behind legal, but support has its own watermark

    assert ws.summary("support").samples == 1


def test_zero_lateness_rejects_anything_behind_the_watermark():
    ws = make_windows(lateness=0)
    add(ws, "legal", 1000.0)
    add(ws, "legal", 1000.0)

    with pytest.raises(RecordError) as info:
        add(ws, "legal", 999.999)

    assert info.value.reason == "late"


def test_late_rejection_leaves_the_changes_untouched():
    ws = make_windows(lateness=10)
    add(ws, "legal", 1000.0)
    ws.take_changes()

    with pytest.raises(RecordError):
        add(ws, "legal", 100.0)

    assert ws.take_changes() == ([], [], {})


# -- domain limit --------------------------------------------------------------

def test_max_domains_is_enforced_with_reason_domain_limit():
    ws = make_windows(max_domains=2)
    add(ws, "a", 1000.0)
    add(ws, "b", 1000.0)

    with pytest.raises(RecordError) as info:
        add(ws, "c", 1000.0)

    assert info.value.reason == "domain_limit"
    assert set(ws.domains) == {"a", "b"}


def test_known_domains_are_still_accepted_at_the_domain_limit():
    ws = make_windows(max_domains=1)
    add(ws, "a", 1000.0)
    with pytest.raises(RecordError):
        add(ws, "b", 1000.0)

    add(ws, "a", 1001.0)

    assert ws.summary("a").samples == 2


# -- eviction and memory bound -------------------------------------------------

def test_buckets_older_than_the_window_are_dropped():
    ws = make_windows(bucket=60, length=300, lateness=0)
    add(ws, "legal", 0.0)
    add(ws, "legal", 60.0)

    add(ws, "legal", 1000.0)

    assert sorted(ws.domains["legal"].buckets) == [960]
    assert ws.summary("legal").samples == 1


def test_memory_stays_bounded_over_100_hours_of_event_time():
    bucket, length = 60, 900
    ws = make_windows(bucket=bucket, length=length, lateness=300)
    rng = random.Random(1)
    limit = length // bucket + 2
    span = 100 * 3600.0
    domains = ("legal", "support", "medical")
    worst = 0
    for i in range(10_000):
        t = i * span / 10_000 + rng.uniform(-200.0, 0.0)  # some disorder, within lateness
        domain = domains[i % len(domains)]
        add(ws, domain, max(t, 0.0), {"latency_seconds": rng.uniform(0.01, 2.0)})
        worst = max(worst, len(ws.domains[domain].buckets))
        if i % 100 == 0:
            ws.take_changes()

    assert worst <= limit
    assert all(len(w.buckets) <= limit for w in ws.domains.values())
    # and the window still holds recent data
    assert 0 < ws.summary("legal").samples <= length / (span / 10_000) + 1


def test_take_changes_returns_changed_buckets_once_then_nothing():
    ws = make_windows()
    add(ws, "legal", 1000.0)
    add(ws, "legal", 1001.0)
    add(ws, "support", 1100.0)

    changed, dropped, watermarks = ws.take_changes()

    assert sorted((d, s) for d, s, _ in changed) == [("legal", 960), ("support", 1080)]
    by_key = {(d, s): Bucket.from_bytes(raw) for d, s, raw in changed}
    assert by_key[("legal", 960)].count == 2
    assert dropped == []
    assert watermarks == {"legal": 1001.0, "support": 1100.0}
    assert ws.take_changes() == ([], [], {})


def test_take_changes_reports_only_what_changed_since_the_last_call():
    ws = make_windows()
    add(ws, "legal", 1000.0)
    add(ws, "support", 1000.0)
    ws.take_changes()

    add(ws, "legal", 1010.0)
    changed, _, watermarks = ws.take_changes()

    assert [(d, s) for d, s, _ in changed] == [("legal", 960)]
    assert watermarks == {"legal": 1010.0}


def test_dropped_buckets_are_reported_by_take_changes():
    ws = make_windows(bucket=60, length=300, lateness=0)
    add(ws, "legal", 0.0)
    add(ws, "legal", 60.0)
    ws.take_changes()

    add(ws, "legal", 1000.0)
    changed, dropped, _ = ws.take_changes()

    assert sorted(dropped) == [("legal", 0), ("legal", 60)]
    assert [(d, s) for d, s, _ in changed] == [("legal", 960)]
    assert ws.take_changes()[1] == []


def test_bucket_created_and_dropped_between_two_calls_is_only_reported_as_dropped():
    ws = make_windows(bucket=60, length=300, lateness=0)
    add(ws, "legal", 0.0)

    add(ws, "legal", 1000.0)
    changed, dropped, _ = ws.take_changes()

    assert [(d, s) for d, s, _ in changed] == [("legal", 960)]
    assert dropped == [("legal", 0)]


def test_window_drains_when_the_clock_moves_past_it():
    clock = Clock(1000.0)
    ws = make_windows(bucket=60, length=900, lateness=300, clock=clock)
    for t in (900.0, 950.0, 1000.0):
        add(ws, "legal", t)
    assert ws.summary("legal").samples == 3

    # buckets: 900 holds 900 and 950, 960 holds 1000
    clock.now = 2200.0  # window end = now - lateness = 1900: (1000, 1900]; bucket 900 falls out
    partly = ws.summary("legal")
    clock.now = 2300.0  # window end = 2000: (1100, 2000]; every bucket is out
    drained = ws.summary("legal")

    assert partly.samples == 1
    assert partly.end == 1900.0
    assert drained.samples == 0
    assert drained.end == 2000.0
    assert ws.domains["legal"].buckets == {}
    _, dropped, _ = ws.take_changes()
    assert sorted(dropped) == [("legal", 900), ("legal", 960)]


def test_window_end_follows_the_watermark_when_the_clock_is_behind():
    ws = make_windows(clock=Clock(0.0))
    add(ws, "legal", 5000.0)

    summary = ws.summary("legal")

    assert (summary.start, summary.end) == (4100.0, 5000.0)


def test_restore_loads_watermark_and_buckets_without_marking_them_changed():
    ws = make_windows()
    bucket = Bucket()
    bucket.add(rec({}), NO_FLAGS)
    bucket.add(rec({}), NO_FLAGS)

    ws.restore("legal", 1000.0, {960: bucket})

    assert ws.summary("legal").samples == 2
    assert ws.domains["legal"].watermark == 1000.0
    assert ws.take_changes() == ([], [], {})
    with pytest.raises(RecordError):
        add(ws, "legal", 1000.0 - 301)


@pytest.mark.parametrize("kwargs", [
    dict(bucket=0),
    dict(bucket=-60),
    dict(length=0),
    dict(length=-900),
    dict(bucket=60, length=100),
    dict(lateness=-1),
    dict(max_domains=0),
    dict(max_domains=-5),
])
def test_invalid_constructor_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        make_windows(**kwargs)


# -- regressions -----------------------------------------------------------------

def test_record_behind_a_clock_that_is_far_ahead_does_not_break_take_changes():
    ws = make_windows(bucket=60, length=900, lateness=300, clock=Clock(100_000.0))
    add(ws, "legal", 1000.0)  # accepted: the domain's first record is never late

    changed, dropped, _ = ws.take_changes()

    assert all(ws.domains[d].buckets.get(s) is not None for d, s, _ in changed)


def test_record_within_a_lateness_longer_than_the_window_does_not_break_take_changes():
    ws = make_windows(bucket=60, length=300, lateness=600)
    add(ws, "legal", 1000.0)
    add(ws, "legal", 450.0)  # 550 s late: within lateness, before the window

    ws.take_changes()


# -- Bucket ----------------------------------------------------------------------

def _feed(bucket: Bucket, rng: random.Random, n: int) -> list[float]:
    latencies = []
    for i in range(n):
        latency = rng.lognormvariate(-1.0, 0.8)
        latencies.append(latency)
        numeric = {"latency_seconds": latency}
        if i % 3:
            numeric["mean_logprob"] = -rng.random()
        if i % 5 == 0:
            numeric["feedback_score"] = float(i % 2)
        has_output = i % 7 != 0
        bucket.add(rec(numeric), (i % 11 == 0, has_output, i % 13 == 0, i % 17 == 0))
    return latencies


def _state(bucket: Bucket) -> tuple:
    return (bucket.count, bucket.errors, bucket.with_output, bucket.refusals, bucket.empty,
            bucket.logprob_n, bucket.feedback_n)


def test_bucket_counts_flags():
    bucket = Bucket()
    bucket.add(rec({}), (True, True, True, False))
    bucket.add(rec({}), (False, True, False, True))
    bucket.add(rec({}), (False, False, True, True))  # no output: refusal/empty don't count

    assert _state(bucket) == (3, 1, 2, 1, 1, 0, 0)
    assert bucket.latency_quantile(0.5) is None


def test_bucket_sums_logprob_and_feedback():
    bucket = Bucket()
    bucket.add(rec({"mean_logprob": -0.5, "feedback_score": 1.0}), NO_FLAGS)
    bucket.add(rec({"mean_logprob": -1.5}), NO_FLAGS)

    assert (bucket.logprob_sum, bucket.logprob_n) == (-2.0, 2)
    assert (bucket.feedback_sum, bucket.feedback_n) == (1.0, 1)


def test_bucket_latency_quantiles_are_within_one_percent():
    bucket = Bucket()
    latencies = sorted(_feed(bucket, random.Random(3), 2000))

    for q in (0.1, 0.5, 0.9, 0.99):
        exact = latencies[int(q * (len(latencies) - 1))]
        assert bucket.latency_quantile(q) == pytest.approx(exact, rel=0.0101)


def test_bucket_latency_is_clamped_to_the_sketch_range():
    bucket = Bucket()
    bucket.add(rec({"latency_seconds": 0.0}), NO_FLAGS)
    bucket.add(rec({"latency_seconds": 1e9}), NO_FLAGS)

    assert bucket.latency_quantile(0.0) == pytest.approx(1e-4, rel=0.0101)
    assert bucket.latency_quantile(1.0) == pytest.approx(1e5, rel=0.0101)


def test_bucket_round_trip_preserves_counts_sums_and_quantiles():
    bucket = Bucket()
    _feed(bucket, random.Random(5), 1000)

    restored = Bucket.from_bytes(bucket.to_bytes())

    assert _state(restored) == _state(bucket)
    assert restored.logprob_sum == pytest.approx(bucket.logprob_sum, rel=1e-12)
    assert restored.feedback_sum == pytest.approx(bucket.feedback_sum, rel=1e-12)
    for q in (0.0, 0.25, 0.5, 0.9, 0.99, 1.0):
        assert restored.latency_quantile(q) == pytest.approx(bucket.latency_quantile(q), rel=0.01)


def test_empty_bucket_round_trips():
    restored = Bucket.from_bytes(Bucket().to_bytes())

    assert _state(restored) == (0, 0, 0, 0, 0, 0, 0)
    assert restored.latency == {}
    assert restored.latency_quantile(0.5) is None


def test_restored_bucket_keeps_accepting_records_and_merging():
    bucket = Bucket()
    _feed(bucket, random.Random(6), 100)
    restored = Bucket.from_bytes(bucket.to_bytes())

    restored.add(rec({"latency_seconds": 0.3}), NO_FLAGS)
    merged = Bucket()
    merged.merge(restored)
    merged.merge(bucket)

    assert restored.count == 101
    assert merged.count == 201
    assert merged.latency_quantile(0.5) is not None


def test_merging_two_buckets_equals_one_bucket_fed_both_streams():
    a, b, both = Bucket(), Bucket(), Bucket()
    _feed(a, random.Random(7), 400)
    _feed(b, random.Random(8), 300)
    _feed(both, random.Random(7), 400)
    _feed(both, random.Random(8), 300)

    a.merge(b)

    assert _state(a) == _state(both)
    assert a.logprob_sum == pytest.approx(both.logprob_sum, rel=1e-9)
    assert a.feedback_sum == pytest.approx(both.feedback_sum, rel=1e-9)
    for q in (0.0, 0.1, 0.5, 0.9, 0.99, 1.0):
        assert a.latency_quantile(q) == pytest.approx(both.latency_quantile(q), rel=1e-9)


def test_merging_a_bucket_without_latency_keeps_the_other_sketch():
    a, b = Bucket(), Bucket()
    a.add(rec({"latency_seconds": 0.2}), NO_FLAGS)
    b.add(rec({}), NO_FLAGS)

    b.merge(a)
    a.merge(Bucket())

    assert b.latency_quantile(0.5) == pytest.approx(0.2, rel=0.0101)
    assert a.latency_quantile(0.5) == pytest.approx(0.2, rel=0.0101)
    assert (a.count, b.count) == (1, 2)


def test_summary_merges_restored_and_fresh_buckets():
    ws = make_windows()
    old = Bucket()
    old.add(rec({"latency_seconds": 1.0}), NO_FLAGS)
    ws.restore("legal", 1000.0, {960: Bucket.from_bytes(old.to_bytes())})

    add(ws, "legal", 1030.0, {"latency_seconds": 3.0})
    add(ws, "legal", 1100.0, {"latency_seconds": 2.0})
    merged = ws.summary("legal").merged

    assert merged.count == 3
    assert merged.latency_quantile(0.5) == pytest.approx(2.0, rel=0.0101)
    assert not math.isnan(merged.latency_quantile(1.0))


def test_a_record_too_far_ahead_of_the_clock_is_a_bad_timestamp_and_moves_nothing():
    ws = WindowSet(60, 900, 300, 10, clock=Clock(10_000.0), max_future_seconds=300)
    add(ws, "legal", 10_000.0)

    with pytest.raises(RecordError) as info:
        add(ws, "legal", 10_000.0 + 86_400 * 365)  # a producer clock a year ahead

    assert info.value.reason == "bad_timestamp"
    assert ws.domains["legal"].watermark == 10_000.0
    add(ws, "legal", 10_100.0)  # real records are still accepted
    assert ws.summary("legal").samples == 2


def test_records_within_the_future_allowance_are_accepted():
    ws = WindowSet(60, 900, 300, 10, clock=Clock(10_000.0), max_future_seconds=300)

    add(ws, "legal", 10_299.0)

    assert ws.summary("legal").samples == 1


def test_without_max_future_any_event_time_moves_the_watermark():
    ws = make_windows(clock=Clock(0.0))

    add(ws, "legal", 1e9)

    assert ws.domains["legal"].watermark == 1e9
