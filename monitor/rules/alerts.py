"""Alert and recording rule evaluation with Prometheus' state machine.

An alerting rule's active alerts move inactive -> pending -> firing (after
`for`), stay firing for `keep_firing_for` after the condition clears, then
resolve; a resolved alert is kept 15 minutes so the resolution is sent. This is
Prometheus 2.42's `AlertingRule.Eval` (rules/alerting.go), including its
templating data ($labels, $value, $externalLabels, $externalURL), its
`ALERTS` / `ALERTS_FOR_STATE` series and its notification schedule
(`needsSending`: firing alerts are re-sent every resend delay, valid for
4 x max(resend delay, group interval)).
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.alerts.model import Notification
from monitor.rules import template
from monitor.rules.files import Rule
from monitor.rules.promql import EvaluationError
from monitor.series import Labels, SeriesStore

RESOLVED_RETENTION_MS = 15 * 60_000

INACTIVE, PENDING, FIRING = "inactive", "pending", "firing"


@dataclass
class Alert:
    labels: Labels               # sorted, includes alertname
    annotations: dict[str, str]
    state: str
    active_at: int               # ms
    value: float
    fired_at: int | None = None
    resolved_at: int | None = None
    keep_firing_since: int | None = None
    last_sent_at: int | None = None
    valid_until: int | None = None

    def to_doc(self) -> dict:
        return {"labels": [list(p) for p in self.labels], "annotations": self.annotations,
                "state": self.state, "active_at": self.active_at, "value": _num(self.value),
                "fired_at": self.fired_at, "resolved_at": self.resolved_at,
                "keep_firing_since": self.keep_firing_since, "last_sent_at": self.last_sent_at,
                "valid_until": self.valid_until}

    @classmethod
    def from_doc(cls, doc: dict) -> "Alert":
        value = doc["value"]
        return cls(labels=tuple(tuple(p) for p in doc["labels"]),
                   annotations=dict(doc["annotations"]), state=doc["state"],
                   active_at=doc["active_at"], value=float(value),
                   fired_at=doc.get("fired_at"), resolved_at=doc.get("resolved_at"),
                   keep_firing_since=doc.get("keep_firing_since"),
                   last_sent_at=doc.get("last_sent_at"), valid_until=doc.get("valid_until"))

    def needs_sending(self, t: int, resend_delay_ms: int) -> bool:
        if self.state == PENDING:
            return False
        if self.resolved_at is not None and (self.last_sent_at is None
                                             or self.resolved_at > self.last_sent_at):
            return True
        return self.last_sent_at is None or self.last_sent_at + resend_delay_ms < t


def _num(value: float):
    return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)


class RuleState:
    """A compiled rule plus what it remembers between evaluations."""

    def __init__(self, rule: Rule):
        self.rule = rule
        self.active: dict[Labels, Alert] = {}
        self.last_error: str | None = None
        self.last_samples = 0
        self.previous_series: set[Labels] = set()  # written last time, for stale markers

    @property
    def is_alert(self) -> bool:
        return self.rule.kind == "alert"

    # -- evaluation ------------------------------------------------------------
    def evaluate(self, store: SeriesStore, t: int, external_labels: dict[str, str],
                 external_url: str, limit: int = 0) -> list[tuple[Labels, float]]:
        """Evaluate at t (ms); returns the samples this rule writes (records, ALERTS).
        `limit` is the group's: more alerts or series than that fail the rule."""
        vector = self.rule.query.vector(store, t)
        if self.is_alert:
            samples = self._alerts(vector, t, external_labels, external_url)
            active = sum(1 for a in self.active.values() if a.state in (PENDING, FIRING))
            if limit > 0 and active > limit:
                self.active = {}
                raise EvaluationError(f"exceeded limit of {limit} with {active} alerts")
            return samples
        samples = self._record(vector)
        if limit > 0 and len(samples) > limit:
            raise EvaluationError(f"exceeded limit of {limit} with {len(samples)} series")
        return samples

    def _record(self, vector) -> list[tuple[Labels, float]]:
        out, seen = [], set()
        for labels, value in vector:
            d = dict(labels)
            d["__name__"] = self.rule.name
            for k, v in self.rule.labels.items():
                if v == "":
                    d.pop(k, None)
                else:
                    d[k] = v
            key = tuple(sorted(d.items()))
            if key in seen:
                raise EvaluationError("vector contains metrics with the same labelset after "
                                      "applying rule labels")
            seen.add(key)
            out.append((key, value))
        return out

    def _alerts(self, vector, t: int, external_labels, external_url) -> list:
        rule = self.rule
        found: dict[Labels, Alert] = {}
        for labels, value in vector:
            sample_labels = dict(labels)

            def expand(text: str) -> str:
                try:
                    return template.expand(text, sample_labels, value, external_labels,
                                           external_url)
                except template.TemplateError as exc:
                    return f"<error expanding template: {exc}>"

            d = {k: v for k, v in labels if k != "__name__"}
            for k, v in rule.labels.items():
                expanded = expand(v)
                if expanded == "":
                    d.pop(k, None)
                else:
                    d[k] = expanded
            d["alertname"] = rule.name
            annotations = {k: expand(v) for k, v in rule.annotations.items()}
            key = tuple(sorted(d.items()))
            if key in found:
                raise EvaluationError("vector contains metrics with the same labelset after "
                                      "applying alert labels")
            found[key] = Alert(key, annotations, PENDING, t, value)
        for key, alert in found.items():
            current = self.active.get(key)
            if current is not None and current.state != INACTIVE:
                current.value = alert.value
                current.annotations = alert.annotations
                continue
            self.active[key] = alert
        samples = []
        for key in list(self.active):
            alert = self.active[key]
            if key not in found:
                keep_firing = False
                if alert.state == FIRING and rule.keep_firing_for_ms > 0:
                    if alert.keep_firing_since is None:
                        alert.keep_firing_since = t
                    keep_firing = t - alert.keep_firing_since < rule.keep_firing_for_ms
                if alert.state == PENDING or (alert.resolved_at is not None
                                              and t - alert.resolved_at > RESOLVED_RETENTION_MS):
                    del self.active[key]
                if alert.state != INACTIVE and not keep_firing:
                    alert.state = INACTIVE
                    alert.resolved_at = t
                if not keep_firing:
                    continue
            else:
                alert.keep_firing_since = None
            if alert.state == PENDING and t - alert.active_at >= rule.for_ms:
                alert.state = FIRING
                alert.fired_at = t
            # Prometheus starts from the rule's raw labels (templates unexpanded), then
            # the alert's: a label that expanded to "" keeps its template text here.
            base = {**rule.labels, **dict(alert.labels)}
            samples.append((tuple(sorted({**base, "__name__": "ALERTS",
                                          "alertstate": alert.state}.items())), 1.0))
            samples.append((tuple(sorted({**base, "__name__": "ALERTS_FOR_STATE"}.items())),
                            float(alert.active_at // 1000)))
        return samples

    # -- notifications -----------------------------------------------------------
    def notifications(self, t: int, resend_delay_ms: int, interval_ms: int,
                      generator_url: str) -> list[Notification]:
        out = []
        delta = max(resend_delay_ms, interval_ms)
        for alert in self.active.values():
            if not alert.needs_sending(t, resend_delay_ms):
                continue
            alert.last_sent_at = t
            alert.valid_until = t + 4 * delta
            ends = alert.resolved_at if alert.resolved_at is not None else alert.valid_until
            starts = alert.fired_at if alert.fired_at is not None else alert.active_at
            out.append(Notification(dict(alert.labels), dict(alert.annotations), starts / 1000,
                                    ends / 1000, generator_url))
        return out

    def firing_or_pending(self) -> list[Alert]:
        return [a for a in self.active.values() if a.state in (PENDING, FIRING)]
