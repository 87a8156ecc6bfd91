"""Prometheus collector over the latest `Snapshot` (DESIGN.md §4).

Metrics are yielded fresh at scrape time from an immutable snapshot that the
pipeline publishes after each state commit, so a scrape never sees a number
that a crash could take back.
"""

from __future__ import annotations

import threading
from typing import Callable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from monitor import __version__
from monitor import metrics as m
from monitor.pipeline import Snapshot


class SnapshotHolder:
    """The latest snapshot, swapped atomically by the pipeline thread."""

    def __init__(self, snapshot: Snapshot | None = None):
        self._snapshot = snapshot or Snapshot()
        self._lock = threading.Lock()

    def publish(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    def get(self) -> Snapshot:
        with self._lock:
            return self._snapshot


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    # CounterMetricFamily appends `_total` itself.
    return CounterMetricFamily(name.removesuffix("_total"), doc, labels=labels)


class MonitorCollector(Collector):
    """Yields the ingest metrics of DESIGN.md §4 from `snapshot()`."""

    def __init__(self, snapshot: Callable[[], Snapshot]):
        self._snapshot = snapshot

    def collect(self):
        snap = self._snapshot()
        records = _counter(m.RECORDS_TOTAL, "Records accepted, per domain.", ["domain"])
        samples = GaugeMetricFamily(m.WINDOW_SAMPLES, "Records in the domain's current window.",
                                    labels=["domain"])
        quality = GaugeMetricFamily(m.QUALITY, "Quality signals over the current window.",
                                    labels=["domain", "signal"])
        latency = GaugeMetricFamily(m.LATENCY_SECONDS, "Request latency quantiles over the "
                                    "current window (1% relative accuracy).",
                                    labels=["domain", "quantile"])
        for d in snap.domains:
            records.add_metric([d.domain], d.records_total)
            samples.add_metric([d.domain], d.samples)
            for signal, value in sorted(d.quality.items()):
                quality.add_metric([d.domain, signal], value)
            for q, value in sorted(d.latency.items()):
                latency.add_metric([d.domain, repr(q)], value)
        rejected = _counter(m.RECORDS_REJECTED_TOTAL, "Records rejected, per reason; each is in "
                            "the dead-letter topic.", ["reason"])
        for reason, count in sorted(snap.rejected.items()):
            rejected.add_metric([reason], count)
        lag = GaugeMetricFamily(m.CONSUMER_LAG, "Messages behind the partition's end offset.",
                                labels=["topic", "partition"])
        for (topic, partition), value in sorted(snap.consumer_lag.items()):
            lag.add_metric([topic, str(partition)], value)
        build = GaugeMetricFamily(m.BUILD_INFO, "Build of the monitor.", labels=["version"])
        build.add_metric([__version__], 1)
        yield from (records, rejected, samples, quality, latency, lag, build)
        if snap.drift is not None:
            yield from _drift(snap.drift)


def _drift(evaluation):
    score = GaugeMetricFamily(m.DRIFT_SCORE, "Drift score of the current window against the "
                              "domain's reference, per feature and method.",
                              labels=["domain", "feature", "method"])
    pvalue = GaugeMetricFamily(m.DRIFT_PVALUE, "Unadjusted p-value of the drift test (methods "
                               "with a test only).", labels=["domain", "feature", "method"])
    for r in evaluation.results:
        score.add_metric([r.domain, r.feature, r.method], r.score)
        if r.pvalue is not None:
            pvalue.add_metric([r.domain, r.feature, r.method], r.pvalue)
    detected = GaugeMetricFamily(m.DRIFT_DETECTED, "1 when the feature drifted: enough samples, "
                                 "effect above its threshold and Benjamini-Hochberg adjusted "
                                 "p-value below alpha.", labels=["domain", "feature"])
    for d in evaluation.decisions:
        detected.add_metric([d.domain, d.feature], 1.0 if d.detected else 0.0)
    return score, pvalue, detected


class ActiveAdapters:
    """The registry the daemon serves from; `collect()` yields
    `monitor_adapter_active_info{domain, version, kind, base_model} 1` per domain
    with an active version. `registry` is swapped whole when it is reloaded."""

    def __init__(self, registry=None):
        self.registry = registry

    def collect(self):
        info = GaugeMetricFamily(m.ADAPTER_ACTIVE_INFO, "The version each domain serves "
                                 "(always 1).", labels=["domain", "version", "kind", "base_model"])
        registry = self.registry
        if registry is not None:
            for name, domain in sorted(registry.domains.items()):
                if domain.active:
                    info.add_metric([name, domain.active, domain.kind, domain.base_model], 1.0)
        yield info


EVAL_DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


EVAL_QUEUE_STATES = ("queued", "running")


def eval_queue_counts(store) -> dict[str, int]:
    """{state: jobs} of the evaluation queue (`monitor_eval_jobs` rows queued or
    running), by one `GROUP BY` count, with every state of `EVAL_QUEUE_STATES`
    (0 when none). Called from the daemon loop with the other eval results
    (`EvalResults.refresh`), never at scrape time."""
    from sqlalchemy import func, select

    from monitor.state import schema

    table = schema.eval_jobs
    counts = dict.fromkeys(EVAL_QUEUE_STATES, 0)
    with store.engine.connect() as conn:
        for state, count in conn.execute(select(table.c.state, func.count())
                                         .where(table.c.state.in_(EVAL_QUEUE_STATES))
                                         .group_by(table.c.state)):
            counts[state] = int(count)
    return counts


class EvalResults:
    """Golden-set metrics from the evaluation runs in the state store. The daemon
    calls `refresh(store)` from its loop; scrapes only read what it published."""

    def __init__(self):
        self._families: list = []
        self._lock = threading.Lock()

    def refresh(self, store) -> None:
        self.publish(store.eval_runs(), eval_queue_counts(store))

    def publish(self, runs: list[dict], queue: dict[str, int] | None = None) -> None:
        """Publish the families of `runs` (oldest first) and of `queue` ({job state:
        count}, as `eval_queue_counts` returns; None or missing states count 0)."""
        score = GaugeMetricFamily(m.GOLDEN_SCORE, "Golden-set score of a version (nll: mean "
                                  "token NLL, lower is better; exact_match: share).",
                                  labels=["domain", "version", "metric"])
        delta = GaugeMetricFamily(m.GOLDEN_DELTA, "Candidate minus baseline, higher = better "
                                  "(for nll: baseline NLL minus candidate NLL).",
                                  labels=["domain", "version", "metric", "baseline"])
        regression = GaugeMetricFamily(m.GOLDEN_REGRESSION, "1 when the paired interval lies "
                                       "entirely on the bad side of the margin.",
                                       labels=["domain", "version", "metric", "baseline"])
        last = GaugeMetricFamily(m.EVAL_LAST_SUCCESS, "When the domain's last evaluation "
                                 "finished (Unix seconds).", labels=["domain"])
        duration = HistogramMetricFamily(m.EVAL_DURATION,
                                         "Evaluation durations.", labels=["domain"])
        latest: dict[tuple[str, str], dict] = {}
        last_success: dict[str, float] = {}
        durations: dict[str, list[float]] = {}
        for run in runs:  # oldest first
            if run["status"] != "done":
                continue
            latest[(run["domain"], run["version"])] = run
            last_success[run["domain"]] = max(last_success.get(run["domain"], 0.0),
                                              run["finished_at"])
            durations.setdefault(run["domain"], []).append(run["finished_at"] - run["started_at"])
        for (domain, version), run in sorted(latest.items()):
            doc = run["doc"]
            for metric, value in sorted(doc.get("scores", {}).items()):
                score.add_metric([domain, version, metric], value)
            for c in doc.get("comparisons", []):
                labels = [domain, version, c["metric"], c["baseline"]]
                delta.add_metric(labels, c["delta"])
                regression.add_metric(labels, 1.0 if c["regressed"] else 0.0)
        for domain, at in sorted(last_success.items()):
            last.add_metric([domain], at)
        for domain, values in sorted(durations.items()):
            buckets = [(repr(b), sum(1 for v in values if v <= b)) for b in EVAL_DURATION_BUCKETS]
            buckets.append(("+Inf", len(values)))
            duration.add_metric([domain], buckets, sum(values))
        jobs = GaugeMetricFamily(m.EVAL_QUEUE_LENGTH, "Evaluation jobs queued or running "
                                 "(rows of monitor_eval_jobs).", labels=["state"])
        for state in EVAL_QUEUE_STATES:
            jobs.add_metric([state], float((queue or {}).get(state, 0)))
        with self._lock:
            self._families = [score, delta, regression, last, duration, jobs]

    def collect(self):
        with self._lock:
            families = list(self._families)
        yield from families


class ActionCounts:
    """`monitor_actions_total{domain, action, outcome}` from the actions in the
    state store (so it survives restarts); `refresh(actions)` from the loop."""

    def __init__(self):
        self._counts: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()

    def refresh(self, actions) -> None:
        counts = actions.counts()
        with self._lock:
            self._counts = counts

    def collect(self):
        family = CounterMetricFamily(m.ACTIONS_TOTAL.removesuffix("_total"),
                                     "Actions by outcome (executed, dry_run, pending_approval, "
                                     "skipped_cooldown, rejected, failed).",
                                     labels=["domain", "action", "outcome"])
        with self._lock:
            counts = dict(self._counts)
        for (domain, action, outcome), count in sorted(counts.items()):
            family.add_metric([domain, action, outcome], count)
        yield family


class _Collect(Collector):
    """Adapts any object with a `collect()` generator (rule engine, delivery)."""

    def __init__(self, source):
        self._source = source

    def collect(self):
        yield from self._source.collect()


def make_registry(holder: SnapshotHolder, *sources) -> CollectorRegistry:
    """The /metrics registry: the snapshot's metrics, then each source's `collect()`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(holder.get))
    for source in sources:
        if source is not None:
            registry.register(_Collect(source))
    return registry
