"""Unit tests of alert state and rule groups (monitor.rules.alerts, monitor.rules.manager).

A SeriesStore and a fake clock in milliseconds: each step scrapes the input
series at t and evaluates the groups that are due, as the daemon does. The
state machine, templating, ALERTS series and notification schedule follow
Prometheus 2.42's rules/alerting.go and rules/manager.go.
"""

from __future__ import annotations

import math

import orjson
import pytest

from monitor.rules.alerts import (
    FIRING,
    INACTIVE,
    PENDING,
    RESOLVED_RETENTION_MS,
    Alert,
    RuleState,
)
from monitor.rules.files import Group, Rule
from monitor.rules.manager import RuleManager, metric_samples
from monitor.rules.promql import EvaluationError, compile_expr
from monitor.series import SeriesStore, is_stale, labels_of

M = 60_000


def L(**labels) -> tuple:
    if "name" in labels:
        labels["__name__"] = labels.pop("name")
    return labels_of(labels)


def rule(name: str, expr: str, *, kind: str = "alert", labels=None, annotations=None,
         for_ms: int = 0, keep_ms: int = 0, index: int = 1) -> Rule:
    return Rule(kind, name, compile_expr(expr), dict(labels or {}), dict(annotations or {}),
                for_ms, keep_ms, "rules/test.yml", index, "g", index)


def group(*rules: Rule, name: str = "g", interval_ms: int = M, limit: int = 0) -> Group:
    for i, r in enumerate(rules, start=1):
        r.index = i
        r.group = name
    return Group(name, "rules/test.yml", interval_ms, list(rules), limit)


class Harness:
    """x{job=...} scraped at each step, then the due groups evaluated."""

    def __init__(self, *groups: Group, resend_ms: int = M, external_labels=None,
                 external_url: str = ""):
        self.store = SeriesStore(retention_ms=10 ** 12)
        self.manager = RuleManager(self.store, external_labels=external_labels,
                                   external_url=external_url, resend_delay_ms=resend_ms)
        self.manager.replace(list(groups))

    def step(self, t: int, **jobs: float):
        self.store.scrape([(L(name="x", job=j), float(v)) for j, v in jobs.items()], t)
        return self.manager.evaluate_due(t)

    def alerts(self, name: str | None = None) -> dict:
        """{labels: Alert} of every alert the rules hold (pending, firing and resolved)."""
        return {labels: a for r in self.manager.rules if name in (None, r.rule.name)
                for labels, a in r.active.items()}

    def query(self, expr: str, t: int) -> dict:
        return dict(compile_expr(expr).evaluate(self.store, t))


A_LABELS = L(alertname="High", job="a")


# -- state machine ---------------------------------------------------------------------

def test_inactive_pending_firing_exactly_at_for():
    h = Harness(group(rule("High", "x > 10", for_ms=2 * M)))

    h.step(0, a=1)
    assert h.alerts() == {}
    h.step(M, a=11)
    assert h.alerts()[A_LABELS].state == PENDING and h.alerts()[A_LABELS].active_at == M
    h.step(2 * M, a=12)
    assert h.alerts()[A_LABELS].state == PENDING          # 1m < 2m
    h.step(3 * M, a=13)
    alert = h.alerts()[A_LABELS]
    assert alert.state == FIRING and alert.fired_at == 3 * M and alert.active_at == M
    assert alert.value == 13.0
    h.step(4 * M, a=14)
    assert h.alerts()[A_LABELS].fired_at == 3 * M and h.alerts()[A_LABELS].value == 14.0


def test_for_zero_fires_at_the_first_evaluation():
    h = Harness(group(rule("High", "x > 10")))

    h.step(0, a=11)

    assert h.alerts()[A_LABELS].state == FIRING and h.alerts()[A_LABELS].fired_at == 0


def test_a_pending_alert_that_clears_is_dropped_without_resolution():
    h = Harness(group(rule("High", "x > 10", for_ms=5 * M)))

    h.step(0, a=11)
    notes = h.step(M, a=1)

    assert h.alerts() == {} and notes == []


def test_a_pending_alert_restarts_its_timer_after_clearing():
    h = Harness(group(rule("High", "x > 10", for_ms=2 * M)))

    h.step(0, a=11)
    h.step(M, a=1)
    h.step(2 * M, a=11)
    h.step(3 * M, a=11)
    assert h.alerts()[A_LABELS].state == PENDING and h.alerts()[A_LABELS].active_at == 2 * M
    h.step(4 * M, a=11)
    assert h.alerts()[A_LABELS].state == FIRING


def test_resolution_and_15_minutes_of_retention():
    h = Harness(group(rule("High", "x > 10")))

    h.step(0, a=11)
    h.step(M, a=1)
    alert = h.alerts()[A_LABELS]
    assert alert.state == INACTIVE and alert.resolved_at == M and alert.fired_at == 0
    assert h.manager.alerts() == []                     # only pending and firing are listed
    assert h.manager.rules[0].firing_or_pending() == []

    t = M
    while t < M + RESOLVED_RETENTION_MS:
        t += M
        h.step(t, a=1)
        assert A_LABELS in h.alerts(), t                 # kept while t - resolved <= 15m
    assert t == M + 15 * M
    h.step(t + M, a=1)
    assert h.alerts() == {}                              # > 15 min: dropped


def test_a_resolved_alert_that_comes_back_is_a_new_pending_alert():
    h = Harness(group(rule("High", "x > 10", for_ms=M)))

    h.step(0, a=11)
    h.step(M, a=11)
    h.step(2 * M, a=1)
    h.step(3 * M, a=11)

    alert = h.alerts()[A_LABELS]
    assert alert.state == PENDING and alert.active_at == 3 * M and alert.resolved_at is None


def test_keep_firing_for():
    h = Harness(group(rule("High", "x > 10", keep_ms=2 * M)))

    h.step(0, a=11)
    h.step(M, a=1)                                       # condition gone: keeps firing
    alert = h.alerts()[A_LABELS]
    assert alert.state == FIRING and alert.keep_firing_since == M and alert.resolved_at is None
    h.step(2 * M, a=1)
    assert h.alerts()[A_LABELS].state == FIRING          # 1m < 2m
    h.step(3 * M, a=1)                                   # 2m: not < 2m, resolves
    alert = h.alerts()[A_LABELS]
    assert alert.state == INACTIVE and alert.resolved_at == 3 * M


def test_keep_firing_for_is_reset_when_the_condition_returns():
    h = Harness(group(rule("High", "x > 10", keep_ms=2 * M)))

    h.step(0, a=11)
    h.step(M, a=1)
    h.step(2 * M, a=11)
    assert h.alerts()[A_LABELS].keep_firing_since is None
    h.step(3 * M, a=1)
    h.step(4 * M, a=1)
    assert h.alerts()[A_LABELS].state == FIRING and h.alerts()[A_LABELS].keep_firing_since == 3 * M
    h.step(5 * M, a=1)
    assert h.alerts()[A_LABELS].state == INACTIVE


def test_keep_firing_for_does_not_apply_to_pending_alerts():
    h = Harness(group(rule("High", "x > 10", for_ms=5 * M, keep_ms=5 * M)))

    h.step(0, a=11)
    h.step(M, a=1)

    assert h.alerts() == {}


def test_one_alert_per_series_and_they_move_independently():
    h = Harness(group(rule("High", "x > 10", for_ms=M)))

    h.step(0, a=11, b=1)
    h.step(M, a=11, b=11)
    assert {dict(k)["job"]: a.state for k, a in h.alerts().items()} == {"a": FIRING, "b": PENDING}
    h.step(2 * M, a=1, b=11)
    assert {dict(k)["job"]: a.state for k, a in h.alerts().items()} == {"a": INACTIVE, "b": FIRING}


# -- labels and annotations ----------------------------------------------------------------

def test_labels_and_annotations_are_templated_with_labels_and_value():
    h = Harness(group(rule(
        "High", "x > 10",
        labels={"severity": "{{ if gt $value 100.0 }}page{{ else }}ticket{{ end }}",
                "team": "ml", "source": "{{ $labels.job }}-{{ $externalLabels.env }}"},
        annotations={"summary": "{{ $labels.job }} is at {{ $value }}",
                     "human": "{{ $value | humanize }}", "url": "{{ $externalURL }}",
                     "name": "{{ $labels.__name__ }}"})),
        external_labels={"env": "prod"}, external_url="http://monitor:9464")

    h.step(0, a=1234567)

    (labels, alert), = h.alerts().items()
    assert dict(labels) == {"alertname": "High", "job": "a", "severity": "page", "team": "ml",
                            "source": "a-prod"}
    assert "__name__" not in dict(labels)
    assert alert.annotations == {"summary": "a is at 1.234567e+06", "human": "1.235M",
                                 "url": "http://monitor:9464", "name": "x"}


def test_annotations_follow_the_latest_value():
    h = Harness(group(rule("High", "x > 10", for_ms=10 * M,
                           annotations={"summary": "{{ $value }}"})))

    h.step(0, a=11)
    h.step(M, a=12.5)

    assert h.alerts()[A_LABELS].annotations == {"summary": "12.5"}


def test_a_template_that_fails_at_execution_gives_an_error_text():
    h = Harness(group(rule("High", "x > 10",
                           annotations={"bad": '{{ index $labels "job" "x" }}'})))

    h.step(0, a=11)

    assert h.alerts()[A_LABELS].annotations["bad"].startswith("<error expanding template: ")


def test_labels_that_template_to_empty_are_dropped():
    h = Harness(group(rule("High", "x > 10", labels={
        "job": "", "maybe": "{{ if false }}y{{ end }}", "sev": "page"})))

    h.step(0, a=11)

    assert list(h.alerts()) == [L(alertname="High", sev="page")]


def test_rule_labels_override_series_labels_and_alertname_wins():
    h = Harness(group(rule("High", "x > 10", labels={"job": "override", "alertname": "Other"})))

    h.step(0, a=11)

    assert list(h.alerts()) == [L(alertname="High", job="override")]


def test_duplicate_labelsets_after_templating_are_an_evaluation_error():
    h = Harness(group(rule("High", "x > 10", labels={"job": "same"})))

    h.step(0, a=11, b=12)

    state = h.manager.rules[0]
    assert state.last_error == ("vector contains metrics with the same labelset after applying "
                                "alert labels")
    assert h.manager.groups[0].errors == [f"rule: High, err: {state.last_error}"]
    assert h.manager.failures == 1 and h.manager.evaluations == 1
    assert h.alerts() == {}
    with pytest.raises(EvaluationError):
        state.evaluate(h.store, 0, {}, "")


def test_recording_rules_with_duplicate_labelsets_after_labels_are_an_error():
    h = Harness(group(rule("r", "x", kind="record", labels={"job": "same"})))

    h.step(0, a=1, b=2)

    assert h.manager.rules[0].last_error == ("vector contains metrics with the same labelset after "
                                             "applying rule labels")


def test_an_evaluation_error_clears_at_the_next_good_evaluation():
    h = Harness(group(rule("High", "x > 10", labels={"job": "same"})))

    h.step(0, a=11, b=12)
    h.step(M, a=11)

    assert h.manager.rules[0].last_error is None
    assert h.manager.groups[0].errors == []
    assert list(h.alerts()) == [L(alertname="High", job="same")]


# -- ALERTS and ALERTS_FOR_STATE -------------------------------------------------------------

def test_alerts_series_follow_the_state_and_go_stale_when_the_alert_is_gone():
    h = Harness(group(rule("High", "x > 10", for_ms=M, labels={"sev": "page"})))
    pending = L(name="ALERTS", alertname="High", alertstate="pending", job="a", sev="page")
    firing = L(name="ALERTS", alertname="High", alertstate="firing", job="a", sev="page")
    for_state = L(name="ALERTS_FOR_STATE", alertname="High", job="a", sev="page")

    h.step(0, a=11)
    assert h.query("ALERTS", 0) == {pending: 1.0}
    assert h.query("ALERTS_FOR_STATE", 0) == {for_state: 0.0}

    h.step(2 * M, a=11)  # active since 0, fired at 2m
    assert h.query("ALERTS", 2 * M) == {firing: 1.0}        # the pending series went stale
    assert is_stale(h.store.series[pending].values[-1])
    assert h.query("ALERTS_FOR_STATE", 2 * M) == {for_state: 0.0}

    h.step(3 * M, a=1)                                       # resolved
    assert h.query("ALERTS", 3 * M) == {}
    assert h.query("ALERTS_FOR_STATE", 3 * M) == {}
    assert is_stale(h.store.series[firing].values[-1])
    assert is_stale(h.store.series[for_state].values[-1])
    assert h.manager.rules[0].last_samples == 0


def test_alerts_for_state_holds_the_active_time_in_whole_seconds():
    h = Harness(group(rule("High", "x > 10", for_ms=10 * M), interval_ms=1_500))

    h.step(91_500, a=11)
    h.step(93_000, a=11)

    assert h.query("ALERTS_FOR_STATE", 93_000) == {
        L(name="ALERTS_FOR_STATE", alertname="High", job="a"): 91.0}


def test_keep_firing_alerts_keep_their_alerts_series():
    h = Harness(group(rule("High", "x > 10", keep_ms=5 * M)))

    h.step(0, a=11)
    h.step(M, a=1)

    assert h.query("ALERTS", M) == {L(name="ALERTS", alertname="High", alertstate="firing",
                                      job="a"): 1.0}


def test_alerts_series_keep_raw_rule_labels_that_template_to_empty_like_prometheus():
    h = Harness(group(rule("High", "x > 10", labels={"drop": "{{ if false }}y{{ end }}"})))

    h.step(0, a=11)

    assert h.query("ALERTS", 0) == {L(name="ALERTS", alertname="High", alertstate="firing", job="a",
                                      drop="{{ if false }}y{{ end }}"): 1.0}


# -- recording rules ----------------------------------------------------------------------

def test_recording_rules_write_series_with_the_rule_name_and_labels():
    h = Harness(group(rule("job:x:double", "x * 2", kind="record", labels={"team": "ml"})))

    h.step(0, a=1, b=2)

    assert h.query("job:x:double", 0) == {L(name="job:x:double", job="a", team="ml"): 2.0,
                                          L(name="job:x:double", job="b", team="ml"): 4.0}
    h.step(M, a=1)
    assert h.query("job:x:double", M) == {L(name="job:x:double", job="a", team="ml"): 2.0}


def test_recording_rule_labels_with_empty_values_remove_the_label():
    h = Harness(group(rule("r", "x", kind="record", labels={"job": ""})))

    h.step(0, a=1)

    assert h.query("r", 0) == {L(name="r"): 1.0}


def test_a_scalar_rule_records_one_sample_without_labels():
    h = Harness(group(rule("r:time", "time() * 2", kind="record")))

    h.step(30 * 1000)

    assert h.query("r:time", 30_000) == {L(name="r:time"): 60.0}


def test_recording_outputs_are_visible_to_later_rules_in_the_same_group():
    h = Harness(group(rule("job:x:sum", "sum by (job) (x)", kind="record"),
                      rule("High", "job:x:sum > 10")))

    h.step(0, a=11)

    assert list(h.alerts()) == [A_LABELS]


def test_a_recording_rule_after_the_alert_is_seen_only_at_the_next_evaluation():
    h = Harness(group(rule("High", "job:x:sum > 10"),
                      rule("job:x:sum", "sum by (job) (x)", kind="record")))

    h.step(0, a=11)
    assert h.alerts() == {}
    h.step(M, a=11)
    assert list(h.alerts()) == [A_LABELS]


def test_groups_are_evaluated_on_their_own_intervals():
    fast = group(rule("fast", "vector(1)", kind="record"), name="fast", interval_ms=30_000)
    slow = group(rule("slow", "vector(1)", kind="record"), name="slow", interval_ms=2 * M)
    h = Harness(fast, slow)

    for t in range(0, 4 * M + 1, 30_000):
        h.step(t)

    assert list(h.store.series[L(name="fast")].times) == list(range(0, 4 * M + 1, 30_000))
    assert list(h.store.series[L(name="slow")].times) == [0, 2 * M, 4 * M]
    assert [g.last_eval_ms for g in h.manager.groups] == [4 * M, 4 * M]


def test_the_group_limit_fails_rules_with_too_many_alerts_or_series():
    h = Harness(group(rule("High", "x > 10"), rule("r", "x", kind="record"), limit=1))

    h.step(0, a=11, b=12)

    alert, record = h.manager.rules
    assert alert.last_error == "exceeded limit of 1 with 2 alerts"
    assert alert.active == {}
    assert record.last_error == "exceeded limit of 1 with 2 series"


# -- notifications --------------------------------------------------------------------------

def test_notifications_none_while_pending_then_resent_after_the_resend_delay():
    h = Harness(group(rule("High", "x > 10", for_ms=M, annotations={"s": "{{ $value }}"})),
                resend_ms=2 * M, external_url="http://monitor:9464/")

    assert h.step(0, a=11) == []                         # pending: nothing sent
    notes = h.step(M, a=12)                              # fires
    assert len(notes) == 1
    n = notes[0]
    assert n.labels == {"alertname": "High", "job": "a"}
    assert n.annotations == {"s": "12"}
    assert n.starts_at == 60.0                           # FiredAt
    # valid until t + 4 * max(resend 2m, interval 1m)
    assert n.ends_at == (M + 4 * 2 * M) / 1000
    assert n.firing(M / 1000)
    assert n.generator_url == "http://monitor:9464/api/v1/alerts?rule=High"
    assert h.step(2 * M, a=12) == []
    assert h.step(3 * M, a=12) == []                     # last + 2m is not before 3m
    notes = h.step(4 * M, a=13)
    assert len(notes) == 1 and notes[0].ends_at == (4 * M + 8 * M) / 1000
    assert notes[0].starts_at == 60.0
    assert h.alerts()[A_LABELS].last_sent_at == 4 * M
    assert h.alerts()[A_LABELS].valid_until == 12 * M


def test_valid_until_uses_the_group_interval_when_it_is_longer():
    h = Harness(group(rule("High", "x > 10"), interval_ms=5 * M), resend_ms=M)

    notes = h.step(0, a=11)

    assert notes[0].ends_at == 4 * 5 * M / 1000


def test_resolved_alerts_are_sent_with_ends_at_the_resolution_time():
    h = Harness(group(rule("High", "x > 10")), resend_ms=5 * M)

    assert len(h.step(0, a=11)) == 1
    notes = h.step(M, a=1)
    assert len(notes) == 1
    n = notes[0]
    assert n.ends_at == 60.0 and n.starts_at == 0.0 and not n.firing(60.0)
    # sent once: not at the next evaluations within the resend delay ...
    for t in range(2 * M, 7 * M, M):
        assert h.step(t, a=1) == [], t
    # ... and, as Prometheus does (needsSending), again every resend delay while it is kept
    notes = h.step(7 * M, a=1)
    assert len(notes) == 1 and notes[0].ends_at == 60.0
    for t in range(8 * M, 17 * M, M):
        h.step(t, a=1)
    assert A_LABELS in h.alerts()                        # 16m - 1m = 15m: still kept
    assert h.step(17 * M, a=1) == []
    assert h.alerts() == {}


def test_no_generator_url_without_an_external_url():
    h = Harness(group(rule("High", "x > 10")))

    assert h.step(0, a=11)[0].generator_url == ""


def test_needs_sending():
    alert = Alert(A_LABELS, {}, PENDING, 0, 1.0)
    assert not alert.needs_sending(10 * M, M)
    alert.state = FIRING
    assert alert.needs_sending(0, M)                     # never sent
    alert.last_sent_at = 0
    assert not alert.needs_sending(M, M) and alert.needs_sending(M + 1, M)
    alert.state, alert.resolved_at = INACTIVE, 30_000
    assert alert.needs_sending(30_000, M)                # resolved after the last send


# -- reload and restart ------------------------------------------------------------------------

def test_replace_keeps_the_state_of_unchanged_rules():
    def groups():
        return [group(rule("High", "x > 10", for_ms=2 * M), rule("r", "x", kind="record"))]
    h = Harness(*groups())

    h.step(0, a=11)
    h.manager.replace(groups())                          # a reload of the same files
    h.step(M, a=11)
    assert h.alerts()[A_LABELS].active_at == 0           # the for timer was not reset
    h.step(2 * M, a=11)
    assert h.alerts()[A_LABELS].state == FIRING and h.alerts()[A_LABELS].fired_at == 2 * M


def test_replace_keeps_the_group_clock():
    h = Harness(group(rule("r", "vector(1)", kind="record"), interval_ms=2 * M))

    h.step(0)
    h.manager.replace([group(rule("r", "vector(1)", kind="record"), interval_ms=2 * M)])
    h.step(M)

    assert list(h.store.series[L(name="r")].times) == [0]      # not due yet after the reload


def test_replace_resets_a_rule_whose_expression_changed():
    h = Harness(group(rule("High", "x > 10", for_ms=2 * M)))

    h.step(0, a=11)
    h.step(M, a=11)
    h.manager.replace([group(rule("High", "x > 5", for_ms=2 * M))])
    h.step(2 * M, a=11)

    alert = h.alerts()[A_LABELS]
    assert alert.state == PENDING and alert.active_at == 2 * M


def test_replace_matches_rules_by_name_and_position_among_equal_names():
    def two(first: str, second: str):
        return group(rule("High", first, for_ms=5 * M), rule("High", second, for_ms=5 * M))
    h = Harness(two("x > 10", "x > 100"))

    h.step(0, a=1000)
    h.manager.replace([two("x > 10", "x > 200")])        # only the second one changed
    h.step(M, a=1000)

    first, second = h.manager.rules
    assert [a.active_at for a in first.active.values()] == [0]
    assert [a.active_at for a in second.active.values()] == [M]


def test_a_removed_rule_s_series_go_stale_at_the_next_evaluation():
    h = Harness(group(rule("old", "x", kind="record"), rule("keep", "x", kind="record")))

    h.step(0, a=1)
    h.manager.replace([group(rule("keep", "x", kind="record"))])
    h.step(M, a=1)

    assert h.query("old", M) == {}


def test_state_doc_and_restore_round_trip_through_json():
    def groups():
        return [group(rule("High", "x > 10", for_ms=2 * M, keep_ms=M,
                           annotations={"v": "{{ $value }}"}),
                      rule("Nan", "x != 0", labels={"kind": "nan"}),
                      rule("r", "x", kind="record"))]
    h = Harness(*groups())
    h.step(0, a=11, n=math.nan, p=math.inf, m=-math.inf)
    h.step(M, a=11, n=math.nan, p=math.inf, m=-math.inf)

    doc = orjson.loads(orjson.dumps(h.manager.state_doc()))  # as the state store keeps it

    assert doc["version"] == 1 and doc["groups"] == {"rules/test.yml;g": M}
    assert set(doc["rules"]) == {"rules/test.yml;g;alert;High;0", "rules/test.yml;g;alert;Nan;0"}
    fresh = RuleManager(h.store, resend_delay_ms=M)
    fresh.replace(groups())
    assert fresh.restore(doc) == 2 + 4               # High{a,p} and Nan{a,n,p,m}
    before = {(r.rule.name, k): a for r in h.manager.rules for k, a in r.active.items()}
    after = {(r.rule.name, k): a for r in fresh.rules for k, a in r.active.items()}
    assert before.keys() == after.keys()
    for key, a in before.items():
        b = after[key]
        assert (a.labels, a.annotations, a.state, a.active_at, a.fired_at, a.resolved_at,
                a.keep_firing_since, a.last_sent_at, a.valid_until) == (
                b.labels, b.annotations, b.state, b.active_at, b.fired_at, b.resolved_at,
                b.keep_firing_since, b.last_sent_at, b.valid_until)
        assert a.value == b.value or (math.isnan(a.value) and math.isnan(b.value))
    values = {dict(k[1]).get("job"): a.value for k, a in after.items() if k[0] == "Nan"}
    assert math.isnan(values["n"]) and values["p"] == math.inf and values["m"] == -math.inf
    assert fresh.groups[0].last_eval_ms == M

    # the restored pending alert fires on time: the for timer survived the restart
    fresh.store.scrape([(L(name="x", job="a"), 11.0)], 2 * M)
    fresh.evaluate_due(2 * M)
    high = fresh.rules[0].active[A_LABELS]
    assert high.state == FIRING and high.fired_at == 2 * M and high.active_at == 0


def test_alert_state_survives_the_state_store(tmp_path):
    from monitor.state.store import StateStore

    def groups():
        return [group(rule("High", "x > 10", for_ms=2 * M), rule("Nan", "x != 0"))]
    h = Harness(*groups())
    h.step(0, a=11, n=math.nan, p=math.inf)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url)
    try:
        assert store.rule_state() is None
        store.save_rule_state(h.manager.state_doc(), 0.0)
    finally:
        store.close()

    store = StateStore(url)  # a restart
    try:
        doc = store.rule_state()
    finally:
        store.close()
    fresh = RuleManager(SeriesStore())
    fresh.replace(groups())

    assert fresh.restore(doc) == 2 + 3                   # High{a,p}, Nan{a,n,p}
    values = {dict(k).get("job"): a.value for k, a in fresh.rules[1].active.items()}
    assert values["a"] == 11.0 and values["p"] == math.inf and math.isnan(values["n"])
    assert fresh.rules[0].active[A_LABELS].active_at == 0


def test_restore_skips_rules_whose_expression_changed_and_unknown_documents():
    h = Harness(group(rule("High", "x > 10", for_ms=5 * M)))
    h.step(0, a=11)
    doc = orjson.loads(orjson.dumps(h.manager.state_doc()))

    changed = RuleManager(SeriesStore())
    changed.replace([group(rule("High", "x > 11", for_ms=5 * M))])
    assert changed.restore(doc) == 0 and changed.rules[0].active == {}

    same = RuleManager(SeriesStore())
    same.replace([group(rule("High", "x > 10", for_ms=5 * M))])
    assert same.restore(None) == 0
    assert same.restore({}) == 0
    assert same.restore({**doc, "version": 2}) == 0
    assert same.restore(doc) == 1


def test_state_doc_of_an_idle_manager():
    manager = RuleManager(SeriesStore())
    manager.replace([group(rule("High", "x > 10"))])

    assert manager.state_doc() == {"version": 1, "rules": {}, "groups": {}}


def test_alert_to_doc_writes_non_finite_values_as_strings():
    for value, text in ((math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")):
        doc = Alert(A_LABELS, {}, FIRING, 0, value).to_doc()
        assert doc["value"] == text
        back = Alert.from_doc(orjson.loads(orjson.dumps(doc))).value
        assert back == value or (math.isnan(back) and math.isnan(value))
    assert Alert(A_LABELS, {}, FIRING, 0, 2.5).to_doc()["value"] == 2.5


# -- odds and ends ------------------------------------------------------------------------------

def test_rule_state_evaluate_returns_what_it_writes():
    state = RuleState(rule("High", "x > 10"))
    store = SeriesStore()
    store.append(L(name="x", job="a"), 0, 11.0)

    samples = state.evaluate(store, 0, {}, "")

    assert sorted(samples) == [(L(name="ALERTS", alertname="High", alertstate="firing", job="a"), 1.0),
                               (L(name="ALERTS_FOR_STATE", alertname="High", job="a"), 0.0)]
    assert state.is_alert


def test_metric_samples_reads_a_registry_like_a_scrape():
    from prometheus_client import CollectorRegistry, Counter, Gauge

    registry = CollectorRegistry()
    Counter("hits", "h", ["job"], registry=registry).labels("a").inc(3)
    Gauge("temp", "t", registry=registry).set(1.5)

    samples = dict(metric_samples(registry))

    assert samples == {L(name="hits_total", job="a"): 3.0, L(name="temp"): 1.5}
    assert dict(metric_samples(registry, exclude=lambda n: n == "temp")) == {
        L(name="hits_total", job="a"): 3.0}
