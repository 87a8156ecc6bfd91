"""Unit tests of the PromQL subset evaluator (monitor.rules.promql, DESIGN.md §5).

Each construct is evaluated on a small SeriesStore with exact expected values,
following Prometheus 2.42 (promql/engine.go, promql/functions.go). Times are in
milliseconds; expected numbers are computed in the comments with the same float
operations Prometheus does, so equality is exact.
"""

from __future__ import annotations

import math

import pytest

from monitor.rules.promql import (
    EvaluationError,
    PromQLError,
    UnsupportedError,
    compile_expr,
    format_labels,
)
from monitor.series import STALE_NAN, SeriesStore, labels_of

M = 60_000  # one minute in ms


def L(**labels) -> tuple:
    """A label tuple; `name` becomes __name__."""
    if "name" in labels:
        labels["__name__"] = labels.pop("name")
    return labels_of(labels)


def store_of(*series) -> SeriesStore:
    """series: (labels tuple, [(t_ms, value), ...])."""
    store = SeriesStore(retention_ms=10 ** 12)
    for labels, samples in series:
        for t, v in samples:
            assert store.append(labels, t, v)
    return store


def ev(store: SeriesStore, expr: str, t: int):
    """The result at t: a scalar as float, a vector as {labels: value} (order-free)."""
    value = compile_expr(expr).evaluate(store, t)
    if isinstance(value, list):
        out = dict(value)
        assert len(out) == len(value), "duplicate labelsets in the result"
        return out
    return value


def same(a: float, b: float) -> bool:
    """Equal, NaN equal to NaN, and the sign of zeros and infinities respected."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1, a) == math.copysign(1, b)


# -- instant selectors -----------------------------------------------------------

def test_lookback_is_5_minutes_closed_at_the_old_end():
    store = store_of((L(name="x", job="a"), [(0, 7.0)]))

    assert ev(store, "x", 0) == {L(name="x", job="a"): 7.0}
    assert ev(store, "x", 5 * M) == {L(name="x", job="a"): 7.0}  # exactly 5m old: still seen
    assert ev(store, "x", 5 * M + 1) == {}                         # 1 ms older: gone
    assert ev(store, "x", -1) == {}                                # nothing before the sample


def test_instant_selector_takes_the_latest_sample_at_or_before_t():
    store = store_of((L(name="x"), [(0, 1.0), (M, 2.0), (2 * M, 3.0)]))

    assert ev(store, "x", M - 1) == {L(name="x"): 1.0}
    assert ev(store, "x", M) == {L(name="x"): 2.0}
    assert ev(store, "x", 10 * M) == {}


def test_a_staleness_marker_hides_the_series_at_once():
    store = store_of((L(name="x", job="a"), [(0, 1.0), (M, STALE_NAN)]),
                     (L(name="x", job="b"), [(0, 2.0), (M, 3.0)]))

    assert ev(store, "x", M - 1) == {L(name="x", job="a"): 1.0, L(name="x", job="b"): 2.0}
    assert ev(store, "x", M) == {L(name="x", job="b"): 3.0}  # not 5 minutes later


def test_a_plain_nan_is_a_value_not_a_staleness_marker():
    store = store_of((L(name="x"), [(0, math.nan)]))

    assert math.isnan(ev(store, "x", 0)[L(name="x")])


def test_matchers_equal_not_equal_and_anchored_regexes():
    store = store_of(*[(L(name="x", job=j), [(0, float(i))]) for i, j in enumerate(["a", "ab", "b"])],
                     (L(name="y", job="a"), [(0, 9.0)]))

    def jobs(expr):
        return sorted(dict(labels).get("job") for labels in ev(store, expr, 0))

    assert jobs('x{job="a"}') == ["a"]
    assert jobs('x{job!="a"}') == ["ab", "b"]
    assert jobs('x{job=~"a"}') == ["a"]           # anchored at both ends
    assert jobs('x{job=~"a.*"}') == ["a", "ab"]
    assert jobs('x{job!~"a.*"}') == ["b"]
    assert jobs('{job="a"}') == ["a", "a"]        # x and y
    assert jobs('{__name__=~"x|y", job="a"}') == ["a", "a"]
    assert jobs('x{missing=""}') == ["a", "ab", "b"]


def test_offset_shifts_the_evaluation_time_back():
    store = store_of((L(name="x"), [(0, 1.0), (M, 2.0), (2 * M, 3.0)]))

    assert ev(store, "x offset 1m", 2 * M) == {L(name="x"): 2.0}
    assert ev(store, "x offset 90s", 2 * M) == {L(name="x"): 1.0}
    assert ev(store, "x offset 2m", 9 * M) == {L(name="x"): 3.0}  # 5m lookback from 7m
    assert ev(store, "x offset 2m", 9 * M + 1) == {}
    # offset on a range: [t - offset - range, t - offset]
    assert ev(store, "count_over_time(x[1m] offset 1m)", 2 * M) == {(): 2.0}


# -- range selectors --------------------------------------------------------------

def test_range_selectors_are_closed_at_both_ends():
    store = store_of((L(name="x"), [(59_999, 1.0), (M, 2.0), (90_000, 3.0), (2 * M, 4.0),
                                    (2 * M + 1, 5.0)]))

    # [60000, 120000]: 60000, 90000 and 120000
    assert ev(store, "count_over_time(x[1m])", 2 * M) == {(): 3.0}
    assert ev(store, "sum_over_time(x[1m])", 2 * M) == {(): 9.0}


def test_range_selectors_leave_staleness_markers_out():
    store = store_of((L(name="x", job="a"), [(0, 1.0), (30_000, STALE_NAN), (M, 5.0)]),
                     (L(name="x", job="b"), [(0, 1.0), (30_000, STALE_NAN)]))

    assert ev(store, "count_over_time(x[1m])", M) == {L(job="a"): 2.0, L(job="b"): 1.0}
    assert ev(store, "count_over_time(x[1m])", 90_000) == {L(job="a"): 1.0}  # b: only the marker


def test_over_time_functions():
    store = store_of((L(name="x", job="a"), [(0, 3.0), (M, 1.0), (2 * M, 2.0), (3 * M, 6.0)]))

    at = 3 * M
    assert ev(store, "avg_over_time(x[3m])", at) == {L(job="a"): 3.0}
    assert ev(store, "min_over_time(x[3m])", at) == {L(job="a"): 1.0}
    assert ev(store, "max_over_time(x[3m])", at) == {L(job="a"): 6.0}
    assert ev(store, "sum_over_time(x[3m])", at) == {L(job="a"): 12.0}
    assert ev(store, "count_over_time(x[3m])", at) == {L(job="a"): 4.0}
    # last_over_time keeps the metric name, the others drop it
    assert ev(store, "last_over_time(x[3m])", at) == {L(name="x", job="a"): 6.0}
    assert ev(store, "max_over_time(x[3m])", 10 * M) == {}


def test_avg_over_time_is_the_incremental_kahan_mean():
    values = [0.1, 0.2, 0.3, 1e308, 1e308]
    store = store_of((L(name="x"), [(i * 1000, v) for i, v in enumerate(values)]))

    got = ev(store, "avg_over_time(x[1m])", 4000)[()]

    # mean += v/count - mean/count with Neumaier compensation (funcAvgOverTime);
    # a plain sum / count would overflow to +Inf.
    mean = c = count = 0.0
    for v in values:
        count += 1
        inc = v / count - mean / count
        t = mean + inc
        c += (mean - t) + inc if abs(mean) >= abs(inc) else (inc - t) + mean
        mean = t
    assert got == mean + c and math.isfinite(got)


def test_min_max_over_time_with_nan_like_go():
    store = store_of((L(name="x"), [(0, math.nan), (1000, 2.0), (2000, 1.0)]),
                     (L(name="y"), [(0, 2.0), (1000, math.nan)]))

    # max := first; if v > max || IsNaN(max) { max = v }: a leading NaN is replaced,
    # a later NaN never wins.
    assert ev(store, "max_over_time(x[1m])", 2000) == {(): 2.0}
    assert ev(store, "min_over_time(x[1m])", 2000) == {(): 1.0}
    assert ev(store, "max_over_time(y[1m])", 2000) == {(): 2.0}


# -- rate, increase, delta -----------------------------------------------------------

def counter(values, step_ms=M, start=0, name="c"):
    return L(name=name, job="a"), [(start + i * step_ms, float(v)) for i, v in enumerate(values)]


def test_rate_with_samples_on_the_range_boundaries():
    store = store_of(counter([10 * i for i in range(11)]))

    # [5m, 10m] holds 50..100 at 5m..10m: result 50, no extrapolation
    # (durationToStart = durationToEnd = 0), factor = (300 / 300) / 300
    assert ev(store, "increase(c[5m])", 10 * M) == {L(job="a"): 50.0}
    assert ev(store, "rate(c[5m])", 10 * M) == {L(job="a"): 50 * ((300 / 300) / 300)}
    assert ev(store, "delta(c[5m])", 10 * M) == {L(job="a"): 50.0}


def test_rate_extrapolates_to_both_boundaries_when_samples_are_close():
    # samples at 30s, 90s, 150s, 210s, 270s: 10, 20, 30, 40, 50; t = 300s, range [0, 300s]
    store = store_of(counter([10, 20, 30, 40, 50], start=30_000))

    # result 40, sampled 240 s, average 60 s, threshold 66 s;
    # durationToStart = 30 (zero point 240 * 10/40 = 60 is further), durationToEnd = 30
    # -> interval 300, factor 300 / 240 = 1.25
    assert ev(store, "increase(c[5m])", 5 * M) == {L(job="a"): 40 * (300 / 240)}
    assert ev(store, "increase(c[5m])", 5 * M)[L(job="a")] == 50.0
    assert ev(store, "rate(c[5m])", 5 * M) == {L(job="a"): 40 * ((300 / 240) / 300)}
    assert ev(store, "delta(c[5m])", 5 * M) == {L(job="a"): 50.0}


def test_increase_does_not_extrapolate_a_counter_below_zero():
    # 1, 21, 41, 61, 81 at 30s..270s, t = 300s: result 80, zero point 240 * 1/80 = 3 s
    # before the first sample < 30 s: durationToStart = 3 -> interval 240 + 3 + 30 = 273
    store = store_of(counter([1, 21, 41, 61, 81], start=30_000))

    assert ev(store, "increase(c[5m])", 5 * M) == {L(job="a"): 80 * (273 / 240)}
    assert ev(store, "increase(c[5m])", 5 * M)[L(job="a")] == 91.0
    # delta is not a counter: no zero-point clamp, 80 * 300/240
    assert ev(store, "delta(c[5m])", 5 * M) == {L(job="a"): 100.0}


def test_rate_extrapolates_half_an_interval_when_samples_are_far_from_the_boundary():
    # samples at 200s, 260s, 320s (0, 6, 12), t = 600s, range [0, 600s]:
    # sampled 120, average 60, threshold 66; durationToStart 200 and durationToEnd 280 are far.
    store = store_of(counter([0, 6, 12], start=200_000))

    # counter: zero point = 120 * 0/12 = 0 < 200 -> durationToStart 0 (< threshold, added);
    # end: + 60/2 -> interval 150; 12 * 150/120 = 15
    assert ev(store, "increase(c[10m])", 10 * M) == {L(job="a"): 12 * (150 / 120)}
    assert ev(store, "increase(c[10m])", 10 * M)[L(job="a")] == 15.0
    # delta: + 30 at both ends -> 180; 12 * 180/120 = 18
    assert ev(store, "delta(c[10m])", 10 * M) == {L(job="a"): 18.0}
    assert ev(store, "rate(c[10m])", 10 * M) == {L(job="a"): 12 * ((150 / 120) / 600)}


def test_counter_resets_add_the_value_before_the_reset():
    # 5, 10, 2, 7 at 0, 60, 120, 180 s; t = 180 s, range [0, 180 s]
    store = store_of(counter([5, 10, 2, 7]))

    # result 7 - 5 = 2, reset 10 -> 2 adds 10: 12; no extrapolation (both ends on the
    # boundaries; zero point 180 * 5/12 = 75 is not before 0)
    assert ev(store, "increase(c[3m])", 3 * M) == {L(job="a"): 12.0}
    assert ev(store, "rate(c[3m])", 3 * M) == {L(job="a"): 12 * ((180 / 180) / 180)}
    assert ev(store, "delta(c[3m])", 3 * M) == {L(job="a"): 2.0}  # delta: no reset handling


def test_rate_needs_two_samples_and_drops_the_name():
    store = store_of(counter([1, 2]), (L(name="c", job="b"), [(M, 4.0)]))

    assert ev(store, "rate(c[1m])", M) == {L(job="a"): 1 * ((60 / 60) / 60)}  # b has one sample


def test_rate_with_offset_uses_the_shifted_range():
    store = store_of(counter([0, 10, 20, 30, 100]))

    # [1m, 3m] offset 1m at t=4m: samples 10, 20, 30 at 1m..3m -> 20 over 120 s, no extrapolation
    assert ev(store, "increase(c[2m] offset 1m)", 4 * M) == {L(job="a"): 20.0}


# -- binary operators --------------------------------------------------------------

def test_scalar_arithmetic_and_go_division_by_zero():
    s = SeriesStore()
    assert ev(s, "1 + 2 * 3", 0) == 7.0
    assert ev(s, "2 ^ 3 ^ 2", 0) == 512.0  # right-associative
    assert ev(s, "1 / 0", 0) == math.inf
    assert ev(s, "-1 / 0", 0) == -math.inf
    assert ev(s, "1 / -0", 0) == -math.inf
    assert math.isnan(ev(s, "0 / 0", 0))
    assert ev(s, "2 > bool 1", 0) == 1.0 and ev(s, "2 < bool 1", 0) == 0.0


@pytest.mark.parametrize("expr, expected", [
    ("5 % 3", 2.0),
    ("-5 % 3", -2.0),          # math.Mod: sign of the dividend
    ("5 % -3", 2.0),
    ("5.5 % 2", 1.5),
    ("1 % 0", math.nan),
    ("(1/0) % 2", math.nan),   # Mod(±Inf, y) = NaN
    ("3 % (1/0)", 3.0),        # Mod(x, ±Inf) = x
    ("2 ^ 10", 1024.0),
    ("2 ^ -1", 0.5),
    ("(-8) ^ (1/3)", math.nan),  # Pow(x < 0, non-integer) = NaN
    ("0 ^ -1", math.inf),
    ("-0 ^ -1", -math.inf),      # -(0 ^ -1): unary minus binds looser than ^
    ("(-0) ^ -1", -math.inf),    # Pow(-0, odd negative integer) = -Inf
    ("(-0) ^ -2", math.inf),
    ("10 ^ 400", math.inf),
    ("(-10) ^ 401", -math.inf),
    ("(-10) ^ 400", math.inf),
    ("0.5 ^ -2000", math.inf),
    ("1 ^ (0/0)", 1.0),          # Pow(1, y) = 1 for any y
    ("(0/0) ^ 0", 1.0),          # Pow(x, ±0) = 1 for any x
])
def test_modulo_and_power_follow_go(expr, expected):
    assert same(ev(SeriesStore(), expr, 0), expected), expr


def test_vector_scalar_arithmetic_drops_the_name_and_swaps_operands():
    store = store_of((L(name="x", job="a"), [(0, 8.0)]))

    assert ev(store, "x / 2", 0) == {L(job="a"): 4.0}
    assert ev(store, "2 / x", 0) == {L(job="a"): 0.25}
    assert ev(store, "10 - x", 0) == {L(job="a"): 2.0}
    assert ev(store, "x % 3", 0) == {L(job="a"): 2.0}
    assert ev(store, "2 ^ x", 0) == {L(job="a"): 256.0}
    assert ev(store, "x / 0", 0) == {L(job="a"): math.inf}
    assert ev(store, "-x", 0) == {L(job="a"): -8.0}


def test_vector_scalar_comparison_filters_and_keeps_the_name_and_vector_value():
    store = store_of((L(name="x", job="a"), [(0, 8.0)]), (L(name="x", job="b"), [(0, 1.0)]))

    assert ev(store, "x > 2", 0) == {L(name="x", job="a"): 8.0}
    # scalar on the left: the kept value is still the vector's, not the scalar's
    assert ev(store, "2 < x", 0) == {L(name="x", job="a"): 8.0}
    assert ev(store, "2 >= x", 0) == {L(name="x", job="b"): 1.0}
    assert ev(store, "x == 1", 0) == {L(name="x", job="b"): 1.0}
    assert ev(store, "x != 1", 0) == {L(name="x", job="a"): 8.0}
    assert ev(store, "x <= 1", 0) == {L(name="x", job="b"): 1.0}


def test_bool_comparisons_return_0_or_1_and_drop_the_name():
    store = store_of((L(name="x", job="a"), [(0, 8.0)]), (L(name="x", job="b"), [(0, 1.0)]))

    assert ev(store, "x > bool 2", 0) == {L(job="a"): 1.0, L(job="b"): 0.0}
    assert ev(store, "2 < bool x", 0) == {L(job="a"): 1.0, L(job="b"): 0.0}


def test_comparison_with_nan_never_holds_except_not_equal():
    store = store_of((L(name="x"), [(0, math.nan)]))

    assert ev(store, "x == x", 0) == {}
    assert ev(store, "x > bool 0", 0) == {(): 0.0}
    assert list(ev(store, "x != 0", 0)) == [L(name="x")]


LEFT = [(L(name="a", job="j", inst="1"), [(0, 10.0)]), (L(name="a", job="j", inst="2"), [(0, 20.0)]),
        (L(name="a", job="k", inst="1"), [(0, 30.0)])]
RIGHT = [(L(name="b", job="j", inst="1"), [(0, 2.0)]), (L(name="b", job="j", inst="2"), [(0, 4.0)]),
         (L(name="b", job="x", inst="9"), [(0, 5.0)])]


def test_one_to_one_matching_on_all_labels_but_the_name():
    store = store_of(*LEFT, *RIGHT)

    assert ev(store, "a / b", 0) == {L(job="j", inst="1"): 5.0, L(job="j", inst="2"): 5.0}


def test_one_to_one_matching_with_on_keeps_only_the_on_labels():
    store = store_of(*LEFT, (L(name="b", job="j", other="z"), [(0, 2.0)]),
                     (L(name="b", job="k", other="z"), [(0, 3.0)]))

    got = ev(store, "a{inst=\"1\"} * on(job) b", 0)
    assert got == {L(job="j"): 20.0, L(job="k"): 90.0}
    # on(__name__, ...) keeps the name in a comparison; arithmetic drops it first
    store2 = store_of((L(name="a", job="j", i="1"), [(0, 1.0)]),
                      (L(name="a", job="k", i="1"), [(0, 2.0)]))
    assert ev(store2, "a >= on(__name__, job) a", 0) == {L(name="a", job="j"): 1.0,
                                                          L(name="a", job="k"): 2.0}
    assert ev(store2, "a + on(__name__, job) a", 0) == {L(job="j"): 2.0, L(job="k"): 4.0}


def test_one_to_one_matching_with_ignoring_drops_the_ignored_labels():
    store = store_of((L(name="a", job="j", inst="1"), [(0, 10.0)]),
                     (L(name="b", job="j", inst="7"), [(0, 2.0)]))

    assert ev(store, "a - ignoring(inst) b", 0) == {L(job="j"): 8.0}
    assert ev(store, "a - b", 0) == {}  # inst differs: no match


def test_comparison_between_vectors_keeps_the_left_name_and_value():
    store = store_of(*LEFT, *RIGHT)

    assert ev(store, "a > b", 0) == {L(name="a", job="j", inst="1"): 10.0,
                                     L(name="a", job="j", inst="2"): 20.0}
    assert ev(store, "a < b", 0) == {}
    assert ev(store, "a > bool b", 0) == {L(job="j", inst="1"): 1.0, L(job="j", inst="2"): 1.0}
    assert ev(store, "a < bool on(inst, job) b", 0) == {L(job="j", inst="1"): 0.0,
                                                         L(job="j", inst="2"): 0.0}


def test_duplicate_series_on_the_right_side_is_an_error():
    store = store_of(*LEFT, *RIGHT)

    with pytest.raises(EvaluationError, match=r"found duplicate series for the match group "
                       r'\{job="j"\} on the right hand-side of the operation: '
                       r'\[\{__name__="b", inst="2", job="j"\}, \{__name__="b", inst="1", job="j"\}\];'
                       r"many-to-many matching not allowed"):
        ev(store, "a + on(job) b", 0)


def test_many_to_one_without_group_left_is_an_error():
    store = store_of(*LEFT, (L(name="b", job="j"), [(0, 2.0)]))

    with pytest.raises(EvaluationError, match="multiple matches for labels: many-to-one matching "
                       r"must be explicit \(group_left/group_right\)"):
        ev(store, "a * on(job) b", 0)
    # a comparison that filters one of the two out is not a many-to-one match
    assert ev(store, "a > on(job) (b * 9)", 0) == {L(job="j"): 20.0}


def test_an_empty_side_gives_an_empty_result_without_errors():
    store = store_of(*RIGHT, (L(name="b", job="j", inst="1", z="dup"), [(0, 1.0)]))

    assert ev(store, "nothing + on(job) b", 0) == {}
    assert ev(store, "b + on(job) nothing", 0) == {}


def test_arithmetic_results_with_the_same_labelset_are_an_error():
    store = store_of((L(name="a", job="j"), [(0, 1.0)]), (L(name="b", job="j"), [(0, 2.0)]))

    with pytest.raises(EvaluationError, match="vector cannot contain metrics with the same labelset"):
        ev(store, '{job="j"} * 2', 0)
    with pytest.raises(EvaluationError, match="vector cannot contain metrics with the same labelset"):
        ev(store, 'abs({job="j"})', 0)
    with pytest.raises(EvaluationError, match="vector cannot contain metrics with the same labelset"):
        ev(store, 'sum_over_time({job="j"}[1m])', 0)
    # a filter keeps the names: no clash
    assert len(ev(store, '{job="j"} > 0', 0)) == 2


def test_unary_minus_results_with_the_same_labelset_are_an_error():
    store = store_of((L(name="a", job="j"), [(0, 1.0)]), (L(name="b", job="j"), [(0, 2.0)]))

    with pytest.raises(EvaluationError, match="vector cannot contain metrics with the same labelset"):
        compile_expr('-{job="j"}').evaluate(store, 0)


# -- set operators ------------------------------------------------------------------

def test_and_or_unless_match_on_all_labels_but_the_name():
    store = store_of(*LEFT, *RIGHT)

    assert ev(store, "a and b", 0) == {L(name="a", job="j", inst="1"): 10.0,
                                       L(name="a", job="j", inst="2"): 20.0}
    assert ev(store, "a unless b", 0) == {L(name="a", job="k", inst="1"): 30.0}
    assert ev(store, "a or b", 0) == {
        L(name="a", job="j", inst="1"): 10.0, L(name="a", job="j", inst="2"): 20.0,
        L(name="a", job="k", inst="1"): 30.0, L(name="b", job="x", inst="9"): 5.0}


def test_set_operators_with_on_and_ignoring():
    store = store_of(*LEFT, *RIGHT)

    assert set(ev(store, "a and on(inst) b", 0)) == {L(name="a", job="j", inst="1"),
                                                     L(name="a", job="j", inst="2"),
                                                     L(name="a", job="k", inst="1")}
    assert set(ev(store, "a unless ignoring(inst) b", 0)) == {L(name="a", job="k", inst="1")}
    # on(): everything matches everything
    assert len(ev(store, "a and on() b", 0)) == 3
    assert ev(store, "a unless on() b", 0) == {}
    assert ev(store, "a and on() nothing", 0) == {}
    assert ev(store, "a unless on() nothing", 0) == dict(ev(store, "a", 0))
    assert ev(store, "a or on() b", 0) == dict(ev(store, "a", 0))
    assert ev(store, "nothing or b", 0) == dict(ev(store, "b", 0))
    assert set(ev(store, "a or on(job) b", 0)) == set(ev(store, "a", 0)) | {
        L(name="b", job="x", inst="9")}


# -- aggregations --------------------------------------------------------------------

AGG = [(L(name="m", job="j", inst="1", dc="x"), [(0, 1.0)]),
       (L(name="m", job="j", inst="2", dc="x"), [(0, 2.0)]),
       (L(name="m", job="k", inst="1", dc="y"), [(0, 6.0)])]


def test_aggregations_by():
    store = store_of(*AGG)

    assert ev(store, "sum by (job) (m)", 0) == {L(job="j"): 3.0, L(job="k"): 6.0}
    assert ev(store, "sum(m) by (job)", 0) == {L(job="j"): 3.0, L(job="k"): 6.0}
    assert ev(store, "avg by (dc) (m)", 0) == {L(dc="x"): 1.5, L(dc="y"): 6.0}
    assert ev(store, "count by (inst) (m)", 0) == {L(inst="1"): 2.0, L(inst="2"): 1.0}
    assert ev(store, "min by (dc) (m)", 0) == {L(dc="x"): 1.0, L(dc="y"): 6.0}
    assert ev(store, "max by (dc) (m)", 0) == {L(dc="x"): 2.0, L(dc="y"): 6.0}
    assert ev(store, "sum(m)", 0) == {(): 9.0}
    assert ev(store, "sum by (nope) (m)", 0) == {(): 9.0}
    assert ev(store, "sum by (__name__) (m)", 0) == {L(name="m"): 9.0}
    assert ev(store, "sum(nothing)", 0) == {}


def test_aggregations_without_drop_the_name_too():
    store = store_of(*AGG)

    assert ev(store, "sum without (inst) (m)", 0) == {L(job="j", dc="x"): 3.0, L(job="k", dc="y"): 6.0}
    assert ev(store, "max without () (m)", 0) == {L(job="j", inst="1", dc="x"): 1.0,
                                                  L(job="j", inst="2", dc="x"): 2.0,
                                                  L(job="k", inst="1", dc="y"): 6.0}


def test_avg_is_prometheus_incremental_mean():
    values = [0.5, 0.4, 0.7, 0.8]
    store = store_of(*[(L(name="v", i=str(i)), [(0, v)]) for i, v in enumerate(values)])

    # Series are aggregated in label order: i="0".."3". mean += v/n - mean/n (no Kahan).
    mean, n = values[0], 1
    for v in values[1:]:
        n += 1
        mean += v / n - mean / n
    assert ev(store, "avg(v)", 0) == {(): mean}
    assert mean != sum(values) / len(values)  # the formula matters to the last bit

    big = store_of((L(name="v", i="0"), [(0, 1e308)]), (L(name="v", i="1"), [(0, 1e308)]))
    assert ev(big, "avg(v)", 0) == {(): 1e308}  # no overflow through a sum


def test_avg_with_infinities():
    def avg(*values):
        s = store_of(*[(L(name="v", i=str(i)), [(0, v)]) for i, v in enumerate(values)])
        return ev(s, "avg(v)", 0)[()]

    assert avg(math.inf, 1.0) == math.inf
    assert avg(1.0, math.inf, 2.0) == math.inf
    assert avg(math.inf, math.inf) == math.inf
    assert math.isnan(avg(math.inf, -math.inf))
    assert math.isnan(avg(math.inf, math.nan))


def test_min_max_with_nan():
    def agg(op, *values):
        s = store_of(*[(L(name="v", i=str(i)), [(0, v)]) for i, v in enumerate(values)])
        return ev(s, f"{op}(v)", 0)[()]

    # a NaN is replaced by any later value; a later NaN never wins
    assert agg("max", math.nan, 1.0, 3.0) == 3.0
    assert agg("max", 1.0, math.nan) == 1.0
    assert agg("min", math.nan, 4.0, 2.0) == 2.0
    assert agg("min", 2.0, math.nan) == 2.0
    assert math.isnan(agg("max", math.nan, math.nan))
    assert agg("sum", 1.0, math.inf) == math.inf
    assert agg("count", math.nan, math.nan) == 2.0


# -- functions -------------------------------------------------------------------------

def test_abs_and_clamp():
    store = store_of((L(name="x", job="a"), [(0, -3.0)]), (L(name="x", job="b"), [(0, 5.0)]),
                     (L(name="x", job="n"), [(0, math.nan)]))

    got = ev(store, "abs(x)", 0)
    assert got[L(job="a")] == 3.0 and got[L(job="b")] == 5.0 and math.isnan(got[L(job="n")])
    got = ev(store, "clamp_min(x, 0)", 0)
    assert got[L(job="a")] == 0.0 and got[L(job="b")] == 5.0 and math.isnan(got[L(job="n")])
    got = ev(store, "clamp_max(x, 0)", 0)
    assert got[L(job="a")] == -3.0 and got[L(job="b")] == 0.0 and math.isnan(got[L(job="n")])
    # a NaN bound gives NaN (math.Max / math.Min)
    assert all(math.isnan(v) for v in ev(store, "clamp_min(x, 0/0)", 0).values())
    assert all(math.isnan(v) for v in ev(store, "clamp_max(x, 0/0)", 0).values())


def test_clamp_with_infinite_bounds_beats_nan_like_go():
    store = store_of((L(name="x"), [(0, math.nan)]))

    assert ev(store, "clamp_min(x, 1/0)", 0) == {(): math.inf}
    assert ev(store, "clamp_max(x, -1/0)", 0) == {(): -math.inf}


def test_clamp_keeps_the_sign_of_zero_like_go():
    store = store_of((L(name="x"), [(0, 0.0)]))

    assert ev(store, "1 / clamp_max(x, -0)", 0) == {(): -math.inf}


def test_absent_labels_come_from_equality_matchers():
    store = store_of((L(name="x", job="a"), [(0, 1.0)]))

    assert ev(store, 'absent(x{job="a"})', 0) == {}
    assert ev(store, 'absent(nope{job="a", inst=~"1", dc!="x", zone="z"})', 0) == {
        L(job="a", zone="z"): 1.0}
    assert ev(store, "absent(nope)", 0) == {(): 1.0}
    assert ev(store, 'absent(nope{job="a", job="b"})', 0) == {(): 1.0}  # repeated: dropped
    assert ev(store, 'absent(nope{job=~"a", job="b"})', 0) == {L(job="b"): 1.0}
    assert ev(store, 'absent(nope{job=""})', 0) == {(): 1.0}
    assert ev(store, 'absent({__name__="nope", job="a"})', 0) == {L(job="a"): 1.0}
    assert ev(store, 'absent((nope{job="a"}))', 0) == {L(job="a"): 1.0}
    assert ev(store, 'absent(sum(nope{job="a"}))', 0) == {(): 1.0}
    assert ev(store, 'absent(x{job="a"})', 6 * M) == {L(job="a"): 1.0}  # out of lookback


def test_absent_over_time():
    store = store_of((L(name="x", job="a"), [(0, 1.0)]))

    assert ev(store, 'absent_over_time(x{job="a"}[10m])', 6 * M) == {}
    assert ev(store, 'absent_over_time(x{job="a"}[5m])', 6 * M) == {L(job="a"): 1.0}
    assert ev(store, 'absent_over_time(x{job=~"a", dc=""}[1m])', 0) == {}
    assert ev(store, 'absent_over_time(x{job=~"a", dc="y"}[1m])', 0) == {L(dc="y"): 1.0}
    # the range [-2m, -1m] holds nothing; job is set by = then deleted by !=
    assert ev(store, 'absent_over_time(x{job="a", job!="b"}[1m] offset 1m)', 0) == {(): 1.0}


def test_scalar_vector_and_time():
    store = store_of((L(name="x", job="a"), [(0, 4.0)]), (L(name="y", job="a"), [(0, 1.0)]),
                     (L(name="y", job="b"), [(0, 2.0)]))

    assert ev(store, "time()", 90_500) == 90.5
    assert ev(store, "scalar(x)", 0) == 4.0
    assert math.isnan(ev(store, "scalar(y)", 0))     # two samples
    assert math.isnan(ev(store, "scalar(nope)", 0))  # none
    assert ev(store, "vector(3)", 0) == {(): 3.0}
    assert ev(store, "vector(time())", 120_000) == {(): 120.0}
    assert ev(store, "y * scalar(x)", 0) == {L(job="a"): 4.0, L(job="b"): 8.0}
    assert compile_expr("vector(1)").vector(store, 0) == [((), 1.0)]
    assert compile_expr("scalar(x) + 1").vector(store, 0) == [((), 5.0)]
    assert compile_expr("time()").kind == "scalar"
    assert compile_expr("x").kind == "vector"


# -- what is refused -------------------------------------------------------------------

@pytest.mark.parametrize("expr, construct", [
    ("a * on(job) group_left b", "group_left"),
    ("a * on(job) group_right b", "group_right"),
    ("max_over_time(x[10m:1m])", "subquery"),
    ("x @ 100", "@ modifier"),
    ("rate(x[5m] @ 100)", "@ modifier"),
    ("topk(1, x)", "topk"),
    ("quantile(0.5, x)", "quantile"),
    ("stddev(x)", "stddev"),
    ("histogram_quantile(0.9, x)", "histogram_quantile"),
    ('label_replace(x, "a", "$1", "b", "(.*)")', "label_replace"),
    ("predict_linear(x[5m], 60)", "predict_linear"),
    ("x offset -5m", "negative offset"),
    ('x{a="1" or a="2"}', "'or'"),
])
def test_unsupported_constructs_are_refused_by_name(expr, construct):
    with pytest.raises(UnsupportedError) as info:
        compile_expr(expr)
    assert construct in str(info.value)
    assert construct in info.value.construct
    assert isinstance(info.value, PromQLError)


@pytest.mark.parametrize("expr", ["sum(", "x{", "x +", "1 > 2", "x + bool x", "rate(x)", ")",
                                  "x[5m", "foo bar"])
def test_unparsable_text_is_a_promql_error(expr):
    with pytest.raises(PromQLError) as info:
        compile_expr(expr)
    assert not isinstance(info.value, UnsupportedError)


def test_max_range_ms_is_how_far_back_a_query_reads():
    assert compile_expr("x").max_range_ms == 5 * M
    assert compile_expr("vector(1)").max_range_ms == 5 * M
    assert compile_expr("x offset 10m").max_range_ms == 15 * M
    assert compile_expr("rate(x[1h])").max_range_ms == 60 * M
    assert compile_expr("rate(x[1h] offset 30m) > y offset 2h").max_range_ms == 125 * M
    assert compile_expr("avg_over_time(x[90m]) + on() avg_over_time(y[2h])").max_range_ms == 120 * M


def test_format_labels_like_promtool():
    assert format_labels(L(name="up", job="a", inst="1")) == 'up{inst="1", job="a"}'
    assert format_labels(L(job="a")) == '{job="a"}'
