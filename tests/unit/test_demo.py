"""The demo's parts that need no broker: the scaled rule copy and the Watcher's
events (tests/integration/test_demo.py runs the whole scenario)."""

from __future__ import annotations

from pathlib import Path

from monitor.demo.run import DEFAULT_RULES, scaled_rules
from monitor.demo.timeline import Timeline, Watcher, describe
from monitor.rules.files import load_files


def test_the_scaled_rules_are_the_default_pack_on_a_faster_clock(tmp_path):
    written = scaled_rules(DEFAULT_RULES, tmp_path, speedup=20)

    assert sorted(p.name for p in written) == sorted(p.name for p in DEFAULT_RULES.glob("*.yml"))
    original = {(g.name, r.name): (g.interval_ms, r.for_ms, r.expr)
                for g in load_files([DEFAULT_RULES]) for r in g.rules}
    scaled = {(g.name, r.name): (g.interval_ms, r.for_ms, r.expr)
              for g in load_files([tmp_path]) for r in g.rules}
    assert scaled.keys() == original.keys()
    for key, (interval, for_ms, expr) in original.items():
        assert scaled[key][0] == max(1000, round(interval / 20 / 1000) * 1000)
        assert scaled[key][1] == (max(1000, round(for_ms / 20 / 1000) * 1000) if for_ms else 0)
        assert scaled[key][2] == expr  # the expressions are untouched
    assert original[("golden", "GoldenRegression")][1] == 300_000
    assert scaled[("golden", "GoldenRegression")][1] == 15_000


class Fake(Watcher):
    """A Watcher fed by hand instead of by HTTP."""

    def __init__(self):
        super().__init__("http://unused", Timeline(start=0.0, echo=False, clock=lambda: 0.0))

    def feed(self, metrics: dict, alerts: list[dict], actions: list[dict]) -> list[tuple]:
        before = len(self.timeline.events)
        self.metrics = metrics
        self._references()
        self._drift()
        self._golden()
        self._active()
        self._alerts(alerts)
        self._actions(actions)
        return [(e.kind, e.domain, e.text) for e in self.timeline.events[before:]]


def alert(name: str, state: str, domain: str = "legal", action: str = "rollback") -> dict:
    return {"labels": {"alertname": name, "domain": domain, "action": action},
            "annotations": {"summary": f"{name} of {domain}"}, "state": state}


def test_each_change_becomes_one_event_and_nothing_repeats():
    w = Fake()
    detected = {"monitor_drift_detected": [({"domain": "support", "feature": "prompt_tokens"}, 0)],
                "monitor_drift_score": [({"domain": "support", "feature": "prompt_tokens",
                                          "method": "psi"}, 0.05)],
                "monitor_adapter_active_info": [({"domain": "legal", "version": "v1"}, 1)]}
    first = w.feed(detected, [], [])
    assert [k for k, _, _ in first] == ["reference", "active_version"]
    assert w.feed(detected, [], []) == []  # nothing changed, nothing said

    drifted = dict(detected, monitor_drift_detected=[
        ({"domain": "support", "feature": "prompt_tokens"}, 1)], monitor_drift_score=[
        ({"domain": "support", "feature": "prompt_tokens", "method": "psi"}, 0.61)])
    events = w.feed(drifted, [alert("GoldenRegression", "pending")], [])
    assert ("drift_detected", "support", "DRIFT detected in prompt_tokens (PSI 0.61)") in events
    assert ("alert_pending", "legal", "alert GoldenRegression PENDING: GoldenRegression of legal") \
        in events

    action = {"id": "a1", "domain": "legal", "action": "rollback", "status": "executing",
              "created_at": "2026-11-29T00:00:00Z", "actor": "rule:GoldenRegression",
              "plan": {"from": "v2", "to": "v1"}}
    events = w.feed(drifted, [alert("GoldenRegression", "firing")], [action])
    assert [k for k, _, _ in events] == ["alert_firing", "action"]
    assert "-> action rollback" in events[0][2]
    done = dict(action, status="executed", result={"from": "v2", "to": "v1"})
    moved = dict(drifted, monitor_adapter_active_info=[({"domain": "legal", "version": "v1"}, 1)])
    events = w.feed(moved, [], [done])
    assert ("active_version", "legal", "active version v1 -> v1") not in events
    assert ("alert_resolved", "legal", "alert GoldenRegression resolved") in events
    assert ("action", "legal", "rollback EXECUTED: v2 -> v1  [by rule:GoldenRegression]") in events
    assert w.feed(moved, [], [done]) == []


def test_a_golden_verdict_names_the_baselines_it_regressed_against():
    w = Fake()
    events = w.feed({"monitor_golden_score": [
        ({"domain": "legal", "version": "v2", "metric": "nll"}, 4.9),
        ({"domain": "legal", "version": "v2", "metric": "exact_match"}, 0.0)],
        "monitor_golden_regression": [
        ({"domain": "legal", "version": "v2", "metric": "nll", "baseline": "v1"}, 1),
        ({"domain": "legal", "version": "v2", "metric": "nll", "baseline": "base"}, 0)]}, [], [])
    assert events == [("golden_evaluated", "legal", "golden set: v2 evaluated, NLL 4.900, exact "
                       "match 0.00: REGRESSED against v1")]


def test_a_retrain_line_says_what_was_published():
    line = describe({"action": "retrain", "status": "executed", "actor": "rule:InputDrift",
                     "request": {"lineage": {"topic": "logs", "records": 120, "partitions": {
                         "1": {"first_offset": 5, "last_offset": 90}}},
                         "snapshot": {"path": "/x/snapshots/support-ab.jsonl", "records": 100}}})
    assert line == ("retrain EXECUTED: request published, 120 records of logs (offsets p1:5-90), "
                    "snapshot support-ab.jsonl (100 records)  [by rule:InputDrift]")


def test_the_timeline_file_holds_one_json_event_per_line(tmp_path: Path):
    import json

    timeline = Timeline(start=10.0, path=tmp_path / "t.jsonl", echo=False, clock=lambda: 12.0)
    timeline.emit("scenario", "legal", "v2 rolled out", mark="v2 rolled out")
    [line] = (tmp_path / "t.jsonl").read_text().splitlines()
    assert json.loads(line) == {"t": 2.0, "kind": "scenario", "domain": "legal",
                                "text": "v2 rolled out", "data": {"mark": "v2 rolled out"}}
