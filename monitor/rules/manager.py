"""The rule manager: groups on their intervals, reloads, alert state, notifications.

`RuleManager` owns the loaded groups and evaluates each one when its interval
has passed (`evaluate_due(t)`), in file order, rules in a group in order, so a
recording rule is visible to the rules after it. Each evaluation writes the
rules' output (recorded series, `ALERTS`, `ALERTS_FOR_STATE`) into the series
store with staleness markers for series that went away, and collects the
notifications that are due (Prometheus' schedule).

`replace(groups)` swaps in a new rule set, carrying over the state of every rule
that still exists (same file, group, name and position among equal names), so
a reload does not restart `for:` timers; `state_doc()` / `restore()` do the
same across a restart through the state store.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from monitor.alerts.model import Notification
from monitor.rules.alerts import FIRING, PENDING, Alert, RuleState
from monitor.rules.files import Group
from monitor.rules.promql import EvaluationError
from monitor.series import STALE_NAN, Labels, SeriesStore

log = logging.getLogger(__name__)


@dataclass
class GroupState:
    group: Group
    rules: list[RuleState]
    last_eval_ms: int | None = None
    last_duration_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def due(self, t: int) -> bool:
        return self.last_eval_ms is None or t - self.last_eval_ms >= self.group.interval_ms


def _rule_keys(group: Group) -> list[str]:
    seen: dict[str, int] = {}
    keys = []
    for rule in group.rules:
        n = seen.get(rule.name, 0)
        seen[rule.name] = n + 1
        keys.append(f"{group.key};{rule.kind};{rule.name};{n}")
    return keys


class RuleManager:
    def __init__(self, store: SeriesStore, *, external_labels: dict[str, str] | None = None,
                 external_url: str = "", resend_delay_ms: int = 60_000):
        self.store = store
        self.external_labels = dict(external_labels or {})
        self.external_url = external_url
        self.resend_delay_ms = resend_delay_ms
        self.groups: list[GroupState] = []
        self.evaluations = 0
        self.failures = 0
        self._orphans: set[Labels] = set()  # series of rules a reload removed: to mark stale

    # -- loading -------------------------------------------------------------
    def replace(self, groups: list[Group]) -> None:
        """Use these groups from now on, keeping the state of rules that stay."""
        old = {key: state for g in self.groups
               for key, state in zip(_rule_keys(g.group), g.rules)}
        old_groups = {g.group.key: g for g in self.groups}
        kept: set[str] = set()
        new = []
        for group in groups:
            states = []
            for key, rule in zip(_rule_keys(group), group.rules):
                state = RuleState(rule)
                previous = old.get(key)
                if previous is not None and previous.rule.expr == rule.expr:
                    state.active = previous.active
                    state.previous_series = previous.previous_series
                    kept.add(key)
                states.append(state)
            gs = GroupState(group, states)
            before = old_groups.get(group.key)
            if before is not None:
                gs.last_eval_ms = before.last_eval_ms
            new.append(gs)
        for key, state in old.items():
            if key not in kept:
                self._orphans |= state.previous_series
        self.groups = new

    @property
    def rules(self) -> list[RuleState]:
        return [r for g in self.groups for r in g.rules]

    # -- evaluation ------------------------------------------------------------
    def evaluate_due(self, t: int) -> list[Notification]:
        """Evaluate every group whose interval has passed at t (ms)."""
        out: list[Notification] = []
        for gs in self.groups:
            if gs.due(t):
                out += self.evaluate_group(gs, t)
        return out

    def evaluate_group(self, gs: GroupState, t: int) -> list[Notification]:
        started = time.perf_counter()
        if self._orphans:
            # Series of rules that a reload removed or changed go stale now, as in
            # Prometheus, unless a rule of the new set writes them again.
            written = {labels for g in self.groups for r in g.rules for labels in r.previous_series}
            for labels in self._orphans - written:
                self.store.append(labels, t, STALE_NAN)
            self._orphans = set()
        gs.errors = []
        notifications: list[Notification] = []
        for state in gs.rules:
            self.evaluations += 1
            try:
                samples = state.evaluate(self.store, t, self.external_labels, self.external_url,
                                         gs.group.limit)
            except Exception as exc:  # a rule never takes the daemon down
                self.failures += 1
                state.last_error = str(exc)
                gs.errors.append(f"rule: {state.rule.name}, err: {exc}")
                if isinstance(exc, (EvaluationError, ArithmeticError, ValueError)):
                    log.warning("%s: evaluation failed: %s", state.rule.where, exc)
                else:
                    log.exception("%s: evaluation failed unexpectedly", state.rule.where)
                continue
            state.last_error = None
            self._write(state, samples, t)
            if state.is_alert:
                notifications += state.notifications(t, self.resend_delay_ms,
                                                     gs.group.interval_ms, self._generator_url(state))
        gs.last_eval_ms = t
        gs.last_duration_s = time.perf_counter() - started
        return notifications

    def _write(self, state: RuleState, samples: list[tuple[Labels, float]], t: int) -> None:
        current = set()
        for labels, value in samples:
            if self.store.append(labels, t, value):
                current.add(labels)
        for labels in state.previous_series - current:
            self.store.append(labels, t, STALE_NAN)
        state.previous_series = current
        state.last_samples = len(samples)

    def _generator_url(self, state: RuleState) -> str:
        if not self.external_url:
            return ""
        from urllib.parse import quote

        return f"{self.external_url.rstrip('/')}/api/v1/alerts?rule={quote(state.rule.name)}"

    # -- reading -----------------------------------------------------------------
    def alerts(self, states=(PENDING, FIRING)) -> list[tuple[RuleState, Alert]]:
        return [(r, a) for r in self.rules if r.is_alert
                for a in r.active.values() if a.state in states]

    # -- persistence -------------------------------------------------------------
    def state_doc(self) -> dict:
        """Alert state and group clocks, for the state store."""
        rules = {}
        for gs in self.groups:
            for key, state in zip(_rule_keys(gs.group), gs.rules):
                if state.active:
                    rules[key] = {"expr": state.rule.expr,
                                  "alerts": [a.to_doc() for a in state.active.values()]}
        groups = {gs.group.key: gs.last_eval_ms for gs in self.groups
                  if gs.last_eval_ms is not None}
        return {"version": 1, "rules": rules, "groups": groups}

    def restore(self, doc: dict | None) -> int:
        """Take alert state back from `state_doc()`; returns the alerts restored."""
        if not doc or doc.get("version") != 1:
            return 0
        restored = 0
        rules = doc.get("rules", {})
        groups = doc.get("groups", {})
        for gs in self.groups:
            if gs.group.key in groups:
                gs.last_eval_ms = groups[gs.group.key]
            for key, state in zip(_rule_keys(gs.group), gs.rules):
                saved = rules.get(key)
                if saved is None or saved.get("expr") != state.rule.expr:
                    continue
                for alert_doc in saved.get("alerts", []):
                    alert = Alert.from_doc(alert_doc)
                    state.active[alert.labels] = alert
                    restored += 1
        return restored


def metric_samples(registry, exclude: Callable[[str], bool] | None = None):
    """(labels, value) of every sample a prometheus_client registry exposes, as a
    scrape would give them (`*_created` samples left out)."""
    for family in registry.collect():
        for sample in family.samples:
            name = sample.name
            if name.endswith("_created") or (exclude is not None and exclude(name)):
                continue
            labels = {k: v for k, v in sample.labels.items() if v != ""}
            labels["__name__"] = name
            yield tuple(sorted(labels.items())), float(sample.value)
