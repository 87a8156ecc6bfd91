"""The demo's timeline: what the daemon did, read from its own endpoints as it happens.

`Watcher.poll()` reads `/metrics`, `/api/v1/alerts` and `/api/v1/actions?status=all`
and turns every change since the previous poll into an `Event`: a reference
ready, drift detected or cleared per feature, a version evaluated on its golden
set (and its verdict), the active version changed, an alert pending, firing or
resolved, an action created or moved to another status. `Timeline` prints each
event as one line and appends it to a JSONL file, which the demo's test reads.

>>> t = Timeline(start=100.0, clock=lambda: 112.5)
>>> t.emit("scenario", "legal", "v2 rolled out")
  00:12  legal     v2 rolled out
Event(t=12.5, kind='scenario', domain='legal', text='v2 rolled out', data={})
>>> t.format(t.events[0])
'  00:12  legal     v2 rolled out'
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Event:
    t: float        # seconds since the scenario started
    kind: str       # scenario, reference, drift_detected, drift_cleared, golden_evaluated,
                    # active_version, alert_pending, alert_firing, alert_resolved, action, progress
    domain: str     # "" for events that concern no domain
    text: str
    data: dict = field(default_factory=dict)


class Timeline:
    def __init__(self, start: float, path: Path | None = None, echo: bool = True,
                 clock: Callable[[], float] = time.time):
        self.start = start
        self.path = path
        self.echo = echo
        self.clock = clock
        self.events: list[Event] = []

    def emit(self, kind: str, domain: str, text: str, **data) -> Event:
        event = Event(round(self.clock() - self.start, 1), kind, domain, text, data)
        self.events.append(event)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(json.dumps(asdict(event), sort_keys=True) + "\n")
        if self.echo:
            print(self.format(event), flush=True)
        return event

    @staticmethod
    def format(event: Event) -> str:
        minutes, seconds = divmod(int(event.t), 60)
        return f"  {minutes:02d}:{seconds:02d}  {event.domain or '-':<9} {event.text}"

    def of(self, kind: str, domain: str | None = None) -> list[Event]:
        return [e for e in self.events if e.kind == kind and (domain is None or e.domain == domain)]


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return reply.read()


def scrape(url: str) -> dict[str, list[tuple[dict, float]]]:
    """{sample name: [(labels, value)]} from the daemon's /metrics."""
    out: dict = {}
    for family in text_string_to_metric_families(get(url + "/metrics").decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _alert_key(alert: dict) -> tuple:
    return tuple(sorted(alert["labels"].items()))


class Watcher:
    """Polls one daemon at `url`; every change becomes an event on `timeline`."""

    def __init__(self, url: str, timeline: Timeline):
        self.url = url
        self.timeline = timeline
        self.detected: dict[tuple[str, str], float] = {}
        self.referenced: set[str] = set()
        self.evaluated: set[tuple[str, str]] = set()
        self.active: dict[str, str] = {}
        self.alerts: dict[tuple, str] = {}
        self.actions: dict[str, str] = {}
        self.metrics: dict = {}

    def poll(self) -> bool:
        """One look at the daemon; False when it did not answer in time (a busy
        machine: the next poll sees what this one missed)."""
        try:
            self._poll()
        except OSError:  # URLError and timeouts included
            return False
        return True

    def _poll(self) -> None:
        self.metrics = scrape(self.url)
        self._references()
        self._drift()
        self._golden()
        self._active()
        self._alerts(json.loads(get(self.url + "/api/v1/alerts"))["data"]["alerts"])
        self._actions(json.loads(get(self.url + "/api/v1/actions?status=all"))["data"]["actions"])

    # -- the daemon's metrics ---------------------------------------------------------
    def values(self, name: str) -> list[tuple[dict, float]]:
        return self.metrics.get(name, [])

    def _references(self) -> None:
        for labels, _ in self.values("monitor_drift_score"):
            domain = labels["domain"]
            if domain not in self.referenced:
                self.referenced.add(domain)
                self.timeline.emit("reference", domain, "reference ready (its first records):"
                                   " drift is measured against it from now on")

    def _drift(self) -> None:
        scores = {(l["domain"], l["feature"], l["method"]): v
                  for l, v in self.values("monitor_drift_score")}
        now = {(l["domain"], l["feature"]): v for l, v in self.values("monitor_drift_detected")}
        for domain in sorted({d for d, _ in now}):
            new = sorted(f for (d, f), v in now.items()
                         if d == domain and v == 1 and self.detected.get((d, f)) != 1)
            gone = sorted(f for (d, f), v in now.items()
                          if d == domain and v == 0 and self.detected.get((d, f)) == 1)
            if new:
                shown = ", ".join(_with_score(domain, f, scores) for f in new)
                self.timeline.emit("drift_detected", domain, f"DRIFT detected in {shown}",
                                   features=new)
            if gone:
                self.timeline.emit("drift_cleared", domain, f"drift cleared in {', '.join(gone)}",
                                   features=gone)
        self.detected = now

    def _golden(self) -> None:
        scores: dict[tuple[str, str], dict[str, float]] = {}
        for labels, value in self.values("monitor_golden_score"):
            scores.setdefault((labels["domain"], labels["version"]), {})[labels["metric"]] = value
        regressed: dict[tuple[str, str], set[str]] = {}
        for labels, value in self.values("monitor_golden_regression"):
            if value == 1:
                regressed.setdefault((labels["domain"], labels["version"]), set()).add(
                    labels["baseline"])
        for key in sorted(scores.keys() - self.evaluated):
            self.evaluated.add(key)
            domain, version = key
            s = scores[key]
            against = regressed.get(key)
            verdict = (f"REGRESSED against {', '.join(sorted(against))}" if against else "pass")
            self.timeline.emit(
                "golden_evaluated", domain,
                f"golden set: {version} evaluated, NLL {s.get('nll', float('nan')):.3f}, exact "
                f"match {s.get('exact_match', float('nan')):.2f}: {verdict}",
                version=version, verdict="regressed" if against else "pass", scores=s)

    def _active(self) -> None:
        now = {l["domain"]: l["version"] for l, v in self.values("monitor_adapter_active_info")
               if v == 1}
        for domain in sorted(now):
            before = self.active.get(domain)
            if before is None:
                self.timeline.emit("active_version", domain, f"serving {now[domain]}",
                                   version=now[domain])
            elif before != now[domain]:
                self.timeline.emit("active_version", domain,
                                   f"active version {before} -> {now[domain]}",
                                   version=now[domain], previous=before)
        self.active.update(now)

    # -- alerts and actions ----------------------------------------------------------
    def _alerts(self, alerts: list[dict]) -> None:
        seen: dict[tuple, str] = {}
        for alert in alerts:
            key = _alert_key(alert)
            seen[key] = alert["state"]
            if self.alerts.get(key) == alert["state"]:
                continue
            labels = alert["labels"]
            summary = alert["annotations"].get("summary", "")
            action = labels.get("action", "alert")
            text = f"alert {labels['alertname']} {alert['state'].upper()}"
            if alert["state"] == "firing" and action != "alert":
                text += f" -> action {action}"
            self.timeline.emit(f"alert_{alert['state']}", labels.get("domain", ""),
                               f"{text}: {summary}" if summary else text,
                               alertname=labels["alertname"], action=action)
        for key in self.alerts.keys() - seen.keys():
            labels = dict(key)
            self.timeline.emit("alert_resolved", labels.get("domain", ""),
                               f"alert {labels['alertname']} resolved",
                               alertname=labels["alertname"])
        self.alerts = seen

    def _actions(self, actions: list[dict]) -> None:
        for action in sorted(actions, key=lambda a: a["created_at"]):
            if self.actions.get(action["id"]) == action["status"]:
                continue
            self.actions[action["id"]] = action["status"]
            self.timeline.emit("action", action["domain"], describe(action),
                               action=action["action"], status=action["status"],
                               id=action["id"])


def _with_score(domain: str, feature: str, scores: dict) -> str:
    for method in ("psi", "mmd", "js"):
        value = scores.get((domain, feature, method))
        if value is not None:
            name = "MMD²" if method == "mmd" else method.upper()
            return f"{feature} ({name} {value:.2f})"
    return feature


def describe(action: dict) -> str:
    """One line for an action of /api/v1/actions."""
    kind, status = action["action"], action["status"]
    by = action.get("actor") or ""
    text = f"{kind} {status.replace('_', ' ').upper()}"
    plan = action.get("result") or action.get("plan") or {}
    if kind == "rollback" and "from" in plan:
        text += f": {plan['from']} -> {plan['to']}"
    request = action.get("request") or {}
    if kind == "retrain" and status == "executed":
        lineage = request.get("lineage") or {}
        offsets = ", ".join(f"p{p}:{o['first_offset']}-{o['last_offset']}"
                            for p, o in sorted((lineage.get("partitions") or {}).items()))
        text += f": request published, {lineage.get('records', 0)} records of {lineage.get('topic')}"
        text += f" (offsets {offsets})" if offsets else ""
        snapshot = request.get("snapshot") or {}
        if snapshot.get("path"):
            text += f", snapshot {Path(snapshot['path']).name} ({snapshot.get('records')} records)"
    if action.get("skipped"):
        text += f" ({action['skipped']})"
    if action.get("error"):
        text += f": {action['error']}"
    return f"{text}  [by {by}]" if by else text
