"""The rule engine the daemon and `monitor replay` hold: files, series, alerts, reloads.

`RuleEngine.tick(now, samples)` is one evaluation round: the daemon's own
metrics (`samples`, as a scrape of its /metrics would give them) are appended
to the series store at `now`, and every group whose interval has passed is
evaluated. It returns the notifications due for delivery.

`reload()` reads every rule file again, all or nothing: on any error the rules
already running stay, the errors are logged with their file, line and column,
and `monitor_rules_last_reload_successful` turns 0 until a reload succeeds.
It is safe to call from another thread (SIGHUP handler, `POST /-/reload`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from monitor import metrics as m
from monitor.alerts.model import Notification
from monitor.config import Config
from monitor.rules.alerts import FIRING
from monitor.rules.files import RuleLoadError, load_files
from monitor.rules.manager import RuleManager
from monitor.rules.promql import format_e
from monitor.series import Labels, SeriesStore
from monitor.timestamps import rfc3339

log = logging.getLogger(__name__)


class RuleEngine:
    def __init__(self, config: Config, paths: list[str] | None = None):
        rules = config.rules
        self.paths = list(paths if paths is not None else rules.paths)
        # The default folder may be absent (no rules); a path given explicitly may not.
        self.missing_ok = paths is None and self.paths == ["rules/"]
        self.default_interval_ms = int(rules.evaluation_interval_seconds * 1000)
        self.retention_ms = int(rules.retention_seconds * 1000)
        self.store = SeriesStore(self.retention_ms, rules.max_series)
        external_url = config.alerting.external_url or f"http://{config.http.address}"
        self.manager = RuleManager(self.store, external_url=external_url,
                                   resend_delay_ms=int(config.alerting.resend_delay_seconds * 1000))
        self.lock = threading.RLock()
        self.last_reload_successful = True
        self.last_reload_at: float | None = None
        self.last_errors: list[str] = []
        self.reloads = {"success": 0, "failure": 0}
        self.last_tick_ms: int | None = None

    # -- loading -----------------------------------------------------------------
    def reload(self) -> tuple[bool, list[str]]:
        """Load every rule file again; on any error keep the running rules."""
        try:
            groups = load_files(self.paths, self.default_interval_ms,
                                retention_ms=self.retention_ms, missing_ok=self.missing_ok)
        except RuleLoadError as exc:
            with self.lock:
                self.last_reload_successful = False
                self.last_errors = exc.errors
                self.reloads["failure"] += 1
            kept = ("the previous rules keep running" if self.reloads["success"]
                    else "no rules are running")
            log.error("rule files not loaded, %s (%d error(s)):\n%s", kept, len(exc.errors),
                      "\n".join(exc.errors))
            return False, exc.errors
        for warning in (w for g in groups for w in g.warnings):
            log.warning("%s", warning)
        with self.lock:
            self.manager.replace(groups)
            self.last_reload_successful = True
            self.last_reload_at = time.time()
            self.last_errors = []
            self.reloads["success"] += 1
        rules = sum(len(g.rules) for g in groups)
        files = len({g.file for g in groups})
        if rules or not self.missing_ok:
            log.info("loaded %d rule(s) in %d group(s) from %d file(s) (%s)", rules, len(groups),
                     files, ", ".join(map(str, self.paths)))
        else:
            log.info("no rule files in %s: no alerts will fire", ", ".join(self.paths))
        return True, []

    @property
    def interval_ms(self) -> int:
        """How often `tick` should run: the greatest common divisor of the group
        intervals (at least 1 s), so that every group runs on its own interval."""
        intervals = {gs.group.interval_ms for gs in self.manager.groups} or {self.default_interval_ms}
        return max(1000, math.gcd(*intervals))

    def due(self, now: float) -> bool:
        return self.last_tick_ms is None or int(now * 1000) - self.last_tick_ms >= self.interval_ms

    # -- evaluation ----------------------------------------------------------------
    def tick(self, now: float, samples: Iterable[tuple[Labels, float]]) -> list[Notification]:
        t = int(now * 1000)
        with self.lock:
            self.store.scrape(samples, t)
            self.last_tick_ms = t
            return self.manager.evaluate_due(t)

    # -- reading ---------------------------------------------------------------------
    def active_alerts(self) -> list[dict]:
        """Pending and firing alerts, in the shape of Prometheus' /api/v1/alerts."""
        with self.lock:
            pairs = self.manager.alerts()
        out = []
        for _rule, alert in sorted(pairs, key=lambda p: p[1].labels):
            out.append({"labels": dict(alert.labels), "annotations": dict(alert.annotations),
                        "state": alert.state, "activeAt": rfc3339(alert.active_at / 1000),
                        "value": format_e(alert.value)})
        return out

    def collect(self):
        """monitor_alerts, monitor_rules_last_reload_successful and the engine's own counters."""
        alerts = Metric(m.ALERTS, "1 per pending or firing alert, with its labels.", "gauge")
        with self.lock:
            pairs = self.manager.alerts()
            for _rule, alert in pairs:
                alerts.add_sample(m.ALERTS, {**dict(alert.labels), "alertstate": alert.state}, 1.0)
            reload_ok = GaugeMetricFamily(m.RULES_LAST_RELOAD_SUCCESSFUL,
                                          "1 when the last rule reload succeeded.")
            reload_ok.add_metric([], 1.0 if self.last_reload_successful else 0.0)
            evaluations = CounterMetricFamily(m.RULE_EVALUATIONS.removesuffix("_total"),
                                              "Rule evaluations.")
            evaluations.add_metric([], self.manager.evaluations)
            failures = CounterMetricFamily(m.RULE_EVALUATION_FAILURES.removesuffix("_total"),
                                           "Rule evaluations that failed (logged with the rule).")
            failures.add_metric([], self.manager.failures)
            duration = GaugeMetricFamily(m.RULE_GROUP_DURATION, "Seconds the group's last "
                                         "evaluation took.", labels=["rule_group"])
            for gs in self.manager.groups:
                duration.add_metric([gs.group.key], gs.last_duration_s)
            series = GaugeMetricFamily(m.SERIES_STORE_SERIES, "Series in the rule evaluator's "
                                       "in-memory store.")
            series.add_metric([], len(self.store.series))
        yield from (alerts, reload_ok, evaluations, failures, duration, series)

    def firing(self) -> list:
        with self.lock:
            return [(r, a) for r, a in self.manager.alerts() if a.state == FIRING]

    def describe_paths(self) -> str:
        return ", ".join(str(Path(p)) for p in self.paths)
