"""Unit tests of the rule engine the daemon and replay hold (monitor.rules.engine).

Reloads are all or nothing, `tick()` scrapes then evaluates the due groups,
`collect()` exposes monitor_alerts and monitor_rules_last_reload_successful,
`active_alerts()` has the shape of Prometheus' /api/v1/alerts.
"""

from __future__ import annotations

import re
import textwrap

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import Config
from monitor.exporter import SnapshotHolder, make_registry
from monitor.rules.engine import RuleEngine
from monitor.rules.promql import format_e
from monitor.series import labels_of

START = 1_764_359_640.0  # 2025-11-28T19:54:00Z, a whole minute


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def config(paths=None, **rules) -> Config:
    doc: dict = {"rules": dict(rules)}
    if paths is not None:
        doc["rules"]["paths"] = [str(p) for p in paths]
    return Config.model_validate(doc)


def quality(domain: str, value: float):
    return labels_of({"__name__": "monitor_quality", "domain": domain, "signal": "error_ratio"}), value


ALERT_RULES = """
groups:
  - name: quality
    rules:
      - alert: ErrorsHigh
        expr: monitor_quality{signal="error_ratio"} > 0.5
        for: 1m
        labels: {severity: page, action: rollback}
        annotations:
          summary: "{{ $labels.domain }} errors at {{ $value }}"
"""

BROKEN = """
groups:
  - name: quality
    rules:
      - alert: ErrorsHigh
        expr: sum(
"""


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    """The default rules/ folder is relative: run in an empty directory."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir


def reload_gauge(engine: RuleEngine) -> float:
    for family in engine.collect():
        if family.name == "monitor_rules_last_reload_successful":
            return family.samples[0].value
    raise AssertionError("no monitor_rules_last_reload_successful")


# -- reload ----------------------------------------------------------------------------

def test_reload_loads_the_configured_files(tmp_path):
    path = write(tmp_path / "rules" / "q.yml", ALERT_RULES)
    engine = RuleEngine(config([path.parent]))

    assert engine.reload() == (True, [])

    assert [g.group.name for g in engine.manager.groups] == ["quality"]
    assert engine.last_reload_successful and engine.last_errors == []
    assert engine.reloads == {"success": 1, "failure": 0}
    assert reload_gauge(engine) == 1.0


def test_reload_is_all_or_nothing(tmp_path):
    good = write(tmp_path / "rules" / "a.yml", ALERT_RULES)
    other = write(tmp_path / "rules" / "b.yml",
                  "groups:\n  - name: other\n    rules:\n      - record: r\n        expr: vector(1)\n")
    engine = RuleEngine(config([good.parent]))
    assert engine.reload()[0]
    groups_before = engine.manager.groups

    write(other, BROKEN)  # one bad file among good ones
    ok, errors = engine.reload()

    assert not ok
    assert len(errors) == 1 and errors[0].startswith(f'{other}: 5:15: group "quality", rule 1, '
                                                     '"ErrorsHigh": could not parse expression')
    assert engine.manager.groups is groups_before            # the old rules keep running
    assert [g.group.name for g in engine.manager.groups] == ["quality", "other"]
    assert not engine.last_reload_successful and engine.last_errors == errors
    assert reload_gauge(engine) == 0.0
    assert engine.reloads == {"success": 1, "failure": 1}

    write(other, "groups: []\n")                             # fixed
    assert engine.reload() == (True, [])
    assert [g.group.name for g in engine.manager.groups] == ["quality"]
    assert engine.last_reload_successful and engine.last_errors == []
    assert reload_gauge(engine) == 1.0


def test_a_failed_reload_keeps_alert_state(tmp_path):
    path = write(tmp_path / "rules" / "q.yml", ALERT_RULES)
    engine = RuleEngine(config([path]))
    engine.reload()
    engine.tick(START, [quality("legal", 0.9)])

    write(path, BROKEN)
    assert not engine.reload()[0]
    engine.tick(START + 60, [quality("legal", 0.9)])

    assert [a["state"] for a in engine.active_alerts()] == ["firing"]


def test_a_successful_reload_keeps_the_for_timer(tmp_path):
    path = write(tmp_path / "rules" / "q.yml", ALERT_RULES)
    engine = RuleEngine(config([path]))
    engine.reload()
    engine.tick(START, [quality("legal", 0.9)])

    write(path, ALERT_RULES + "      - alert: Another\n        expr: vector(1) == 2\n")
    assert engine.reload()[0]
    engine.tick(START + 60, [quality("legal", 0.9)])

    assert [(a["state"], a["activeAt"]) for a in engine.active_alerts()] == [
        ("firing", "2025-11-28T19:54:00.000Z")]


def test_the_default_rules_folder_may_be_missing(_cwd):
    engine = RuleEngine(Config())

    assert engine.paths == ["rules/"] and engine.missing_ok
    assert engine.reload() == (True, [])
    assert engine.manager.groups == []


def test_the_default_rules_folder_is_read_when_present(_cwd):
    write(_cwd / "rules" / "q.yml", ALERT_RULES)
    engine = RuleEngine(Config())

    assert engine.reload() == (True, [])
    assert [g.group.name for g in engine.manager.groups] == ["quality"]


def test_an_explicit_missing_path_is_an_error(tmp_path):
    missing = tmp_path / "nope.yml"

    for engine in (RuleEngine(config([missing])), RuleEngine(Config(), [str(missing)]),
                   RuleEngine(Config(), ["rules/"])):
        assert not engine.missing_ok
        ok, errors = engine.reload()
        assert not ok and len(errors) == 1 and "no such file or folder" in errors[0]
        assert reload_gauge(engine) == 0.0


def test_paths_given_to_the_engine_override_the_config(tmp_path):
    a = write(tmp_path / "a.yml", ALERT_RULES)
    b = write(tmp_path / "b.yml", "groups:\n  - name: b\n    rules: []\n")
    engine = RuleEngine(config([a]), [str(b)])

    engine.reload()

    assert [g.group.name for g in engine.manager.groups] == ["b"]
    assert engine.describe_paths() == str(b)


def test_the_retention_warning_does_not_fail_a_reload(tmp_path, caplog):
    path = write(tmp_path / "w.yml", """
        groups:
          - name: g
            rules:
              - alert: Long
                expr: rate(x[3h]) > 0
        """)
    engine = RuleEngine(config([path], retention_seconds=3600))

    assert engine.reload() == (True, [])
    assert any("reads 3h back" in r.getMessage() for r in caplog.records)


# -- tick and intervals ----------------------------------------------------------------------

GROUPS = """
groups:
  - name: fast
    interval: 30s
    rules:
      - record: fast:q
        expr: monitor_quality
  - name: slow
    interval: 2m
    rules:
      - record: slow:q
        expr: monitor_quality
  - name: default
    rules:
      - record: default:q
        expr: monitor_quality
"""


def test_tick_scrapes_then_evaluates_only_due_groups(tmp_path):
    path = write(tmp_path / "g.yml", GROUPS)
    engine = RuleEngine(config([path], evaluation_interval_seconds=60))
    engine.reload()

    assert engine.interval_ms == 30_000
    for k in range(9):                                   # every 30 s for 4 minutes
        now = START + 30 * k
        assert engine.due(now)
        engine.tick(now, [quality("legal", float(k))])
        assert not engine.due(now + 29.999)

    def times(name):
        series = engine.store.series[labels_of({"__name__": name, "domain": "legal",
                                                "signal": "error_ratio"})]
        return [int(t / 1000 - START) for t in series.times], list(series.values)

    assert times("monitor_quality")[0] == list(range(0, 241, 30))
    assert times("fast:q") == (list(range(0, 241, 30)), [float(k) for k in range(9)])
    assert times("slow:q") == ([0, 120, 240], [0.0, 4.0, 8.0])
    assert times("default:q") == ([0, 60, 120, 180, 240], [0.0, 2.0, 4.0, 6.0, 8.0])
    assert engine.last_tick_ms == int((START + 240) * 1000)


def test_interval_ms_is_the_default_without_groups(tmp_path):
    engine = RuleEngine(config(evaluation_interval_seconds=15))
    engine.reload()

    assert engine.interval_ms == 15_000
    assert engine.due(START)


def test_the_default_interval_applies_to_groups_without_one(tmp_path):
    path = write(tmp_path / "q.yml", ALERT_RULES)
    engine = RuleEngine(config([path], evaluation_interval_seconds=20))
    engine.reload()

    assert engine.manager.groups[0].group.interval_ms == 20_000
    assert engine.interval_ms == 20_000


def test_tick_returns_the_notifications_due(tmp_path):
    path = write(tmp_path / "q.yml", ALERT_RULES)
    engine = RuleEngine(Config.model_validate({
        "rules": {"paths": [str(path)]},
        "alerting": {"external_url": "http://mon:9464", "resend_delay_seconds": 60}}))
    engine.reload()

    assert engine.tick(START, [quality("legal", 0.9)]) == []      # pending
    notes = engine.tick(START + 60, [quality("legal", 0.8)])      # firing

    assert len(notes) == 1
    n = notes[0]
    assert n.labels == {"alertname": "ErrorsHigh", "domain": "legal", "signal": "error_ratio",
                        "severity": "page", "action": "rollback"}
    assert n.annotations == {"summary": "legal errors at 0.8"}
    assert n.starts_at == START + 60 and n.ends_at == START + 60 + 240
    assert n.generator_url == "http://mon:9464/api/v1/alerts?rule=ErrorsHigh"
    assert [a.state for _, a in engine.firing()] == ["firing"]

    notes = engine.tick(START + 120, [quality("legal", 0.1)])     # resolved
    assert len(notes) == 1 and notes[0].ends_at == START + 120
    assert engine.firing() == [] and engine.active_alerts() == []


def test_a_series_missing_from_a_scrape_goes_stale(tmp_path):
    path = write(tmp_path / "q.yml", ALERT_RULES.replace("for: 1m", "for: 5m"))
    engine = RuleEngine(config([path]))
    engine.reload()

    engine.tick(START, [quality("legal", 0.9), quality("medical", 0.9)])
    engine.tick(START + 60, [quality("legal", 0.9)])

    assert [a["labels"]["domain"] for a in engine.active_alerts()] == ["legal"]


# -- what is exposed ----------------------------------------------------------------------------

def test_collect_exposes_alerts_with_their_labels_and_state(tmp_path):
    path = write(tmp_path / "q.yml", ALERT_RULES)
    engine = RuleEngine(config([path]))
    engine.reload()
    engine.tick(START, [quality("legal", 0.9)])
    engine.tick(START + 60, [quality("legal", 0.9), quality("medical", 0.7)])

    body = generate_latest(make_registry(SnapshotHolder(), engine)).decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))

    alert = {"alertname": "ErrorsHigh", "signal": "error_ratio", "severity": "page",
             "action": "rollback"}
    assert sorted(samples["monitor_alerts"], key=lambda s: s[0]["domain"]) == [
        ({**alert, "domain": "legal", "alertstate": "firing"}, 1.0),
        ({**alert, "domain": "medical", "alertstate": "pending"}, 1.0)]
    assert samples["monitor_rules_last_reload_successful"] == [({}, 1.0)]
    assert samples["monitor_rule_evaluations_total"] == [({}, 2.0)]
    assert samples["monitor_rule_evaluation_failures_total"] == [({}, 0.0)]
    assert samples["monitor_rule_group_last_duration_seconds"][0][0] == {
        "rule_group": f"{path};quality"}
    assert samples["monitor_rule_series"][0][1] > 0
    assert re.search(r"^# TYPE monitor_alerts gauge$", body, re.MULTILINE)
    assert re.search(r"^# TYPE monitor_rules_last_reload_successful gauge$", body, re.MULTILINE)


def test_collect_without_alerts(tmp_path):
    engine = RuleEngine(config())
    engine.reload()

    families = {f.name: f for f in engine.collect()}

    assert families["monitor_alerts"].samples == []
    assert families["monitor_rules_last_reload_successful"].samples[0].value == 1.0


def test_active_alerts_have_the_shape_of_prometheus_api(tmp_path):
    path = write(tmp_path / "q.yml", ALERT_RULES)
    engine = RuleEngine(config([path]))
    engine.reload()
    engine.tick(START + 0.25, [quality("legal", 0.75)])
    engine.tick(START + 60.25, [quality("legal", 0.75), quality("medical", 0.5625)])
    engine.tick(START + 120.25, [quality("legal", 0.75), quality("medical", 0.625)])

    alerts = engine.active_alerts()

    assert alerts == [
        {"labels": {"alertname": "ErrorsHigh", "domain": "legal", "signal": "error_ratio",
                    "severity": "page", "action": "rollback"},
         "annotations": {"summary": "legal errors at 0.75"},
         "state": "firing", "activeAt": "2025-11-28T19:54:00.250Z", "value": alerts[0]["value"]},
        {"labels": {"alertname": "ErrorsHigh", "domain": "medical", "signal": "error_ratio",
                    "severity": "page", "action": "rollback"},
         "annotations": {"summary": "medical errors at 0.625"},
         "state": "firing", "activeAt": "2025-11-28T19:55:00.250Z", "value": alerts[1]["value"]},
    ]
    assert all(isinstance(a["value"], str) for a in alerts)
    assert float(alerts[0]["value"]) == 0.75 and float(alerts[1]["value"]) == 0.625


@pytest.mark.parametrize("value, text", [(float("nan"), "NaN"), (float("inf"), "+Inf"),
                                         (float("-inf"), "-Inf")])
def test_api_values_for_special_floats(value, text):
    assert format_e(value) == text


def test_api_values_are_formatted_like_prometheus():
    assert [format_e(v) for v in (1.0, 0.5, 1e6, 1234.5)] == ["1e+00", "5e-01", "1e+06",
                                                                "1.2345e+03"]


def test_every_group_runs_on_its_own_interval(tmp_path):
    path = write(tmp_path / "g.yml", """
        groups:
          - name: a
            interval: 30s
            rules:
              - record: a:q
                expr: vector(1)
          - name: b
            interval: 45s
            rules:
              - record: b:q
                expr: vector(1)
        """)
    engine = RuleEngine(config([path]))
    engine.reload()
    now = START
    while now <= START + 180:
        if engine.due(now):
            engine.tick(now, [])
        now += 1

    times = engine.store.series[labels_of({"__name__": "b:q"})].times
    assert [int(t / 1000 - START) for t in times] == [0, 45, 90, 135, 180]
