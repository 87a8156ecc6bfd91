"""Unit tests of alerts in `monitor replay` (monitor.replay, DESIGN.md §8): rules are
evaluated in event time over a JSONL file, deterministically, through the API and
through the command line."""

from __future__ import annotations

import random
import re
from datetime import datetime

import orjson
import pytest

from monitor.cli import main
from monitor.config import Config
from monitor.replay import replay
from monitor.synthetic import Shape, shaped_record

START = 1_764_359_640.0          # 2025-11-28T19:54:00Z
BURST = (300.0, 600.0)           # errors only from 19:59:00 to 20:04:00
SECONDS = 1200.0                 # 20 minutes of event time
FOR_S = 120.0
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

RULES = """\
groups:
  - name: quality
    rules:
      - alert: ErrorBurst
        expr: sum by (domain) (monitor_quality{signal="error_ratio"}) > 0.5
        for: 2m
        labels: {severity: page}
        annotations: {summary: "{{ $labels.domain }} error ratio {{ $value }}"}
"""

CONFIG = {"drift": {"enabled": False, "embeddings": {"enabled": False}},
          "windows": {"bucket_seconds": 60, "length_seconds": 120}}
CONFIG_YAML = """\
drift:
  enabled: false
  embeddings: {enabled: false}
windows: {bucket_seconds: 60, length_seconds: 120}
"""


def log_lines(every: float = 1.0, domain: str = "legal") -> bytes:
    """One record every `every` seconds for 20 minutes; all of them errors in BURST."""
    rng = random.Random(5)
    ok, bad = Shape(error_rate=0.0, refusal_rate=0.0), Shape(error_rate=1.0, refusal_rate=0.0)
    lines, i = [], 0
    while i * every < SECONDS:
        t = i * every
        shape = bad if BURST[0] <= t < BURST[1] else ok
        lines.append(orjson.dumps(shaped_record(rng, domain, START + t, shape, None, i)))
        i += 1
    return b"\n".join(lines) + b"\n"


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp() - START


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    """main() reads ./monitor.yaml when present: run in an empty directory."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


@pytest.fixture
def files(tmp_path):
    log = tmp_path / "logs.jsonl"
    log.write_bytes(log_lines())
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    config = tmp_path / "monitor.yaml"
    config.write_text(CONFIG_YAML)
    return log, rules, config


def alerts_of(log, rules, every=None) -> list[dict]:
    return replay(str(log), Config.model_validate(CONFIG), rule_paths=[str(rules)]).to_json()["alerts"]


def test_the_error_burst_fires_and_resolves_in_event_time(files):
    log, rules, _ = files

    alerts = alerts_of(log, rules)

    assert len(alerts) == 1
    alert = alerts[0]
    assert alert["alertname"] == "ErrorBurst"
    assert alert["labels"] == {"domain": "legal", "severity": "page"}
    assert alert["annotations"] == {"summary": "legal error ratio 1"}
    assert RFC3339.match(alert["fired_at"]) and RFC3339.match(alert["resolved_at"])
    fired, resolved = seconds(alert["fired_at"]), seconds(alert["resolved_at"])
    # event time, not the wall clock: on rule ticks (whole minutes), at least `for`
    # after the burst began, while it lasts; resolved after it ended, within the
    # window length and an evaluation interval or two
    assert fired % 60 == 0 and resolved % 60 == 0
    assert BURST[0] + FOR_S <= fired <= BURST[1]
    assert BURST[1] <= resolved <= BURST[1] + 120 + 2 * 60
    assert fired < resolved


def test_replay_alerts_are_deterministic(files):
    log, rules, _ = files

    assert alerts_of(log, rules) == alerts_of(log, rules)


def test_no_alert_without_errors(tmp_path):
    rng = random.Random(1)
    ok = Shape(error_rate=0.0, refusal_rate=0.0)
    log = tmp_path / "calm.jsonl"
    log.write_bytes(b"".join(orjson.dumps(shaped_record(rng, "legal", START + t, ok, None, t)) + b"\n"
                             for t in range(900)))
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)

    assert alerts_of(log, rules) == []


def test_an_alert_still_firing_at_the_end_of_the_file_is_not_resolved(tmp_path):
    rng = random.Random(2)
    ok, bad = Shape(error_rate=0.0, refusal_rate=0.0), Shape(error_rate=1.0, refusal_rate=0.0)
    log = tmp_path / "tail.jsonl"
    log.write_bytes(b"".join(
        orjson.dumps(shaped_record(rng, "legal", START + t, bad if t >= 300 else ok, None, t)) + b"\n"
        for t in range(900)))
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)

    (alert,) = alerts_of(log, rules)

    assert alert["resolved_at"] is None and seconds(alert["fired_at"]) >= 300 + FOR_S


def test_the_command_line_gives_the_same_alerts(files, capsys):
    log, rules, config = files
    expected = alerts_of(log, rules)

    code = main(["replay", str(log), "--rules", str(rules), "--json-out", "-",
                 "--config", str(config)])

    out = capsys.readouterr().out
    assert code == 0
    doc = orjson.loads(out)
    assert doc["alerts"] == expected
    assert doc["records"]["accepted"] == 1200 and doc["records"]["rejected"] == 0


def test_the_command_line_writes_the_alerts_to_a_file(files, tmp_path):
    log, rules, config = files
    out = tmp_path / "result.json"

    code = main(["replay", str(log), "--rules", str(rules), "--json-out", str(out),
                 "--config", str(config)])

    assert code == 0
    assert orjson.loads(out.read_bytes())["alerts"] == alerts_of(log, rules)


def test_a_bad_rule_file_is_exit_2(files, capsys):
    log, rules, config = files
    rules.write_text(RULES.replace("> 0.5", "> "))

    code = main(["replay", str(log), "--rules", str(rules), "--json-out", "-",
                 "--config", str(config)])

    assert code == 2
    err = capsys.readouterr().err
    assert f'{rules}: 5:15: group "quality", rule 1, "ErrorBurst": could not parse expression' in err


def test_a_missing_rule_file_is_exit_2(files, tmp_path, capsys):
    log, _, config = files

    code = main(["replay", str(log), "--rules", str(tmp_path / "nope.yml"), "--config", str(config)])

    assert code == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_replay_refuses_bad_rules_through_the_api(files):
    from monitor.errors import ConfigError

    log, rules, _ = files
    rules.write_text("groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: topk(1, x)\n")

    with pytest.raises(ConfigError, match="aggregation topk is not supported"):
        replay(str(log), Config.model_validate(CONFIG), rule_paths=[str(rules)])


def test_alert_times_do_not_depend_on_how_dense_the_file_is(tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    results = []
    for every in (1.0, 2.0):
        log = tmp_path / f"every{every}.jsonl"
        log.write_bytes(log_lines(every=every))
        results.append([(a["fired_at"], a["resolved_at"]) for a in alerts_of(log, rules)])

    assert results[0] == results[1]
    # and never before the data could say so: at 19:59:00 (the burst's first record)
    # the window holds at most one error, so the alert cannot be pending then
    assert seconds(results[1][0][0]) > BURST[0] + FOR_S


def test_a_sparse_file_still_fires_the_alert(tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    log = tmp_path / "sparse.jsonl"
    log.write_bytes(log_lines(every=10.0))

    alerts = alerts_of(log, rules)

    assert len(alerts) == 1
    assert BURST[0] + FOR_S <= seconds(alerts[0]["fired_at"]) <= BURST[1]
