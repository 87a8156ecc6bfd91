"""`monitor replay`: the daemon's pipeline over a JSONL file, in event time.

Deterministic: the clock is the latest event time read so far, never the wall
clock, so the same file and config always give the same output. Drift is
evaluated each time event time crosses a multiple of
`drift.evaluation_interval_seconds`, and once more at the end of the file;
references are built from each domain's first records in the file, as the
daemon builds them. Nothing is written to the daemon's state store.

Rules are evaluated in event time too: each time event time crosses a multiple
of the shortest group interval, the metrics the daemon would expose at that
moment are appended to the series store and the due groups run, so `for:`,
`rate()` and `offset` see the same history as in the daemon. Every alert that
fires is listed in `alerts` with the event times it fired and resolved at.

Actions are decided as the daemon decides them, in event time (cooldowns
included), and listed in `actions`: `dry_run` unless `apply`, which executes
them against the registry and records them in the state store, like the
daemon (`pending_approval` actions wait for `monitor actions approve`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from monitor.config import Config
from monitor.exporter import make_registry, SnapshotHolder
from monitor.rules.alerts import FIRING
from monitor.rules.engine import RuleEngine
from monitor.rules.manager import metric_samples
from monitor.ingest.dlq import MemoryDeadLetters
from monitor.ingest.file import read_jsonl
from monitor.drift.evaluate import DriftEvaluation, drift_by_domain
from monitor.pipeline import Pipeline, Snapshot
from monitor.timestamps import rfc3339


@dataclass
class ReplayResult:
    snapshot: Snapshot
    rejected_examples: list = field(default_factory=list)
    alerts: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    drift_events: list = field(default_factory=list)
    evaluations: int = 0

    def to_json(self) -> dict:
        """The document of DESIGN.md §8 (plus per-reason and per-domain detail)."""
        snap = self.snapshot
        return {
            "records": {"accepted": snap.accepted, "rejected": sum(snap.rejected.values()),
                        "rejected_by_reason": dict(sorted(snap.rejected.items()))},
            "domains": {d.domain: {"records": d.records_total, "window_samples": d.samples,
                                   "quality": d.quality,
                                   "latency_seconds": {repr(q): v for q, v in d.latency.items()},
                                   "drift": drift_by_domain(snap.drift).get(d.domain, {}),
                                   "reference": _reference(snap.references.get(d.domain))}
                        for d in snap.domains},
            "drift": {"evaluations": self.evaluations,
                      "semantic": bool(snap.drift and snap.drift.semantic),
                      "events": list(self.drift_events)},
            "alerts": list(self.alerts),
            "actions": list(self.actions),
        }


def _reference(reference) -> dict | None:
    if reference is None:
        return None
    return {"id": reference.id, "version": reference.version, "records": reference.count,
            "time_range": [rfc3339(reference.start), rfc3339(reference.end)]}


class _DriftEvents:
    """Turns evaluations into a timeline of detected / cleared transitions."""

    def __init__(self, result: ReplayResult):
        self.result = result
        self.state: dict[tuple[str, str], bool] = {}

    def __call__(self, evaluation: DriftEvaluation) -> None:
        self.result.evaluations += 1
        scores = {(r.domain, r.feature, r.method): r.score for r in evaluation.results}
        for d in evaluation.decisions:
            key = (d.domain, d.feature)
            if d.detected != self.state.get(key, False):
                self.state[key] = d.detected
                self.result.drift_events.append({
                    "at": rfc3339(evaluation.at), "domain": d.domain, "feature": d.feature,
                    "detected": d.detected, "method": d.rule.effect,
                    "score": scores.get((d.domain, d.feature, d.rule.effect)),
                    "adjusted_pvalue": d.adjusted_pvalue})


class _Alerts:
    """Rule rounds in event time; collects fired alerts into the result.

    The pipeline calls `advance(t)` before counting the first record at or after
    the next round's time, so a round at T sees exactly the records before T,
    as the daemon's round would; every round of a gap in the file runs."""

    def __init__(self, engine: RuleEngine, pipeline, result: ReplayResult, actions=None):
        self.actions = actions
        self.engine = engine
        self.pipeline = pipeline
        self.result = result
        self.holder = SnapshotHolder()
        self.registry = make_registry(self.holder, engine)
        self.open: dict[tuple, dict] = {}
        self.next_at: float | None = None

    @property
    def step(self) -> float:
        return self.engine.interval_ms / 1000

    def advance(self, now: float) -> float:
        """Run every round due up to `now`; return the time of the next one."""
        if self.next_at is None:
            self.next_at = math.floor(now / self.step) * self.step + self.step
            return self.next_at
        while now >= self.next_at:
            self.tick(self.next_at)
            self.next_at += self.step
        return self.next_at

    def tick(self, at: float) -> None:
        self.holder.publish(self.pipeline.snapshot())
        self.engine.tick(at, metric_samples(self.registry))
        firing = {}
        for rule, alert in self.engine.manager.alerts():
            if alert.state == FIRING:
                firing[(rule.rule.name, alert.labels)] = alert
        for key, alert in firing.items():
            if key not in self.open:
                entry = {"alertname": key[0],
                         "labels": {k: v for k, v in alert.labels if k != "alertname"},
                         "annotations": dict(alert.annotations),
                         "fired_at": rfc3339(alert.fired_at / 1000), "resolved_at": None}
                self.open[key] = entry
                self.result.alerts.append(entry)
        for key in [k for k in self.open if k not in firing]:
            self.open.pop(key)["resolved_at"] = rfc3339(at)
        if self.actions is not None:
            self.actions.clock = lambda: at
            self.actions.executor.clock = lambda: at
            firing_now = [(r, a) for r, a in self.engine.manager.alerts() if a.state == FIRING]
            for action in self.actions.on_alerts(firing_now):
                self.result.actions.append(_action_entry(action))


def _action_entry(action: dict) -> dict:
    doc = action["doc"]
    entry = {"action": action["action"], "domain": action["domain"],
             "status": action["status"], "at": rfc3339(action["created_at"]),
             "id": action["id"],
             "alert": (doc.get("reason") or {}).get("alert", {}).get("alertname")}
    for key in ("plan", "result", "error", "skipped"):
        if doc.get(key):
            entry[key] = doc[key]
    return entry


def _action_service(config: Config, pipeline, path: str, apply: bool, registry_path):
    """The action service of a replay: dry run over an in-memory store, or (apply)
    executing over the configured store; the clock is set per rule round."""
    from pathlib import Path

    from monitor.actions.execute import Executor
    from monitor.actions.retrain import retrain_context
    from monitor.actions.service import ActionService
    from monitor.actions.store import ActionStore
    from monitor.state import StateStore
    from monitor.state.store import stored_verdicts

    state = StateStore(config.state.url if apply else "sqlite://")
    actions = ActionStore(state)
    registry = registry_path or config.registry.path
    if registry_path is None and not Path(registry).exists():
        registry = None
    # A dry run plans with the configured store's verdicts, read only.
    verdicts = None if apply else (lambda: stored_verdicts(config.state.url))
    executor = Executor(actions, config, registry, verdicts=verdicts)

    def context(domain, action_id, write):
        return retrain_context(pipeline, config, str(path), domain, action_id, write)

    return ActionService(actions, executor, config.actions, dry_run=not apply,
                         retrain_context=context)


def replay(path: str, config: Config, examples: int = 20, embedder=None,
           rule_paths: list[str] | None = None, apply: bool = False,
           registry_path: str | None = None) -> ReplayResult:
    """Run every line of `path` through the pipeline; keep the first `examples` rejects.
    `embedder` (see monitor.features.embeddings) turns semantic drift on; rules
    come from `rule_paths` (default: the config's `rules.paths`). Actions are
    reported as dry runs, or executed with `apply` (see the module docstring)."""
    pipeline: Pipeline | None = None

    def clock() -> float:
        # Event time: the latest record time seen in any domain (computed only
        # when a window needs "now", which is rare: on a new bucket or a snapshot).
        return max((w.watermark for w in pipeline.windows.domains.values()), default=-math.inf)

    pipeline = Pipeline(config, clock, reject_future=False, embedder=embedder,
                        event_time_evaluation=True)
    result = ReplayResult(Snapshot())
    pipeline.on_evaluation = _DriftEvents(result)
    engine = RuleEngine(config, rule_paths)
    ok, errors = engine.reload()
    if not ok:
        from monitor.errors import ConfigError

        raise ConfigError(errors, "rule files")
    service = None
    if config.actions.enabled and engine.manager.groups:
        service = _action_service(config, pipeline, path, apply, registry_path)
    alerts = _Alerts(engine, pipeline, result, service)
    if engine.manager.groups:
        pipeline.on_event_time(alerts.advance)
    dead_letters = MemoryDeadLetters(limit=examples)
    for batch in read_jsonl(path):
        for message in batch:
            # Lineage of a file: partition 0, the 0-based line number as the offset.
            error = pipeline.process(message.value, 0, message.offset - 1)
            if error is not None:
                dead_letters.send(message, error)
    if pipeline.windows.domains:
        pipeline.evaluate(at=clock())
    result.snapshot = pipeline.snapshot()
    if service is not None:
        if apply:
            from monitor.actions.publish import Publisher

            publisher = Publisher(service.actions, config)
            try:
                publisher.publish_due()
            finally:
                publisher.kafka.close()
        service.actions.state.close()
    result.rejected_examples = [
        {"line": m.offset, "reason": e.reason, "message": e.message} for m, e in dead_letters.letters]
    return result
