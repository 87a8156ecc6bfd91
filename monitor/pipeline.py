"""The per-record pipeline: decode -> quality flags -> windows -> drift sketches,
with the counters that go with it, and the drift evaluation over the windows. Sources (Kafka, a replay file) feed it raw
message values; it never raises on a bad record, it returns the `RecordError`.

>>> p = Pipeline(Config(), clock=lambda: 0.0)
>>> p.process(b'{"schema_version": 1, "timestamp": 1000, "domain": "legal", "input": {"tokens": 7}}')
>>> p.process(b'not json').reason
'invalid_json'
>>> p.records_total, p.rejected
({'legal': 1}, {'invalid_json': 1})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from monitor.config import Config
from monitor.drift.evaluate import DriftEvaluation
from monitor.drift.reference import Reference
from monitor.drift.tracker import DriftTracker
from monitor.errors import RecordError
from monitor.quality import QualityJudge, quality_signals
from monitor.records import decode
from monitor.state import StateChanges, StoredState
from monitor.windows import Bucket, WindowSet
from monitor.windows.recent import RecentRecords


@dataclass(frozen=True)
class DomainSnapshot:
    domain: str
    records_total: int
    samples: int
    quality: dict[str, float]
    latency: dict[float, float]


@dataclass(frozen=True)
class Snapshot:
    """An immutable view of the pipeline, taken after a state commit: what
    /metrics serves and what `replay` prints."""

    domains: tuple[DomainSnapshot, ...] = ()
    rejected: dict[str, int] = field(default_factory=dict)
    consumer_lag: dict[tuple[str, int], int] = field(default_factory=dict)
    drift: DriftEvaluation | None = None
    references: dict[str, Reference] = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        return sum(d.records_total for d in self.domains)


class Pipeline:
    """Holds window state and counters; `process(raw)` is the hot path."""

    def __init__(self, config: Config, clock: Callable[[], float], reject_future: bool = True,
                 embedder=None, event_time_evaluation: bool = False):
        """`clock` gives "now" for the windows; with `reject_future` (the daemon, on
        the wall clock) records too far ahead of it are rejected. `embedder` turns
        prompt texts into sentence embeddings (None: semantic drift is off). With
        `event_time_evaluation` (replay) drift is evaluated when a record's time
        crosses the next multiple of `drift.evaluation_interval_seconds`, before
        that record is counted; the daemon calls `maybe_evaluate()` instead."""
        w = config.windows
        self.windows = WindowSet(w.bucket_seconds, w.length_seconds, w.allowed_lateness_seconds,
                                 w.max_domains, clock,
                                 w.max_future_seconds if reject_future else None)
        quality = config.quality
        # The last records of each domain, for retrain snapshots (in memory only).
        self.recent = RecentRecords(config.actions.retrain.snapshot_records, w.max_domains)
        self._recent_rings = self.recent.rings
        self._flags = QualityJudge(quality.refusal_patterns, quality.refusal_scan_chars,
                                   quality.refusal_phrases).flags
        self._max_bytes = config.records.max_bytes
        self._quantiles = tuple(config.quality.latency_quantiles)
        self.records_total: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self._changed_reasons: set[str] = set()
        self.clock = clock
        self.drift = DriftTracker(config.drift, embedder) if config.drift.enabled else None
        self._observe = self.drift.observe if self.drift is not None else None
        self._interval = config.drift.evaluation_interval_seconds
        self._next_evaluation = float("-inf") if event_time_evaluation else None
        self.on_evaluation: Callable[[DriftEvaluation], None] | None = None
        # Replay's event-time clock for rules: called with a record's time, before the
        # record is counted, once it reaches the time the hook asked for last.
        self._event_hook: Callable[[float], float] | None = None
        self._next_hook = float("inf")

    def process(self, raw: bytes, partition: int | None = None,
                offset: int | None = None) -> RecordError | None:
        """Apply one message value; return the error when the record is rejected.
        `partition` and `offset` say where it was read (the windows' lineage and
        `recent` keep them for accepted records)."""
        try:
            record = decode(raw, self._max_bytes)
            if self._next_evaluation is not None and record.timestamp >= self._next_evaluation:
                self._evaluate_event_time(record.timestamp)
            if record.timestamp >= self._next_hook:
                self._next_hook = self._event_hook(record.timestamp)
            bucket = self.windows.add(record, self._flags(record), partition, offset)
        except RecordError as error:
            self.rejected[error.reason] = self.rejected.get(error.reason, 0) + 1
            self._changed_reasons.add(error.reason)
            return error
        domain = record.domain
        self.records_total[domain] = self.records_total.get(domain, 0) + 1
        try:  # RecentRecords.add, inlined: this is the hot path
            self._recent_rings[domain].append((record.timestamp, partition, offset, raw))
        except KeyError:  # the domain's first record
            self.recent.add(domain, record.timestamp, partition, offset, raw)
        if self._observe is not None:
            self._observe(record, bucket)
        return None

    def on_event_time(self, hook: Callable[[float], float], first: float = float("-inf")) -> None:
        """Call `hook(t)` before counting the first record with time >= `first`, and
        then before the first record at or after the time each call returns."""
        self._event_hook = hook
        self._next_hook = first

    def set_embedder(self, embedder) -> None:
        """Turn semantic drift on; call before `restore` (sketch layouts change)."""
        if self.drift is not None:
            versions = self.drift.versions  # the registry's active versions, read already
            self.drift = DriftTracker(self.drift.cfg, embedder)
            self.drift.versions.update(versions)
            self._observe = self.drift.observe

    def _evaluate_event_time(self, timestamp: float) -> None:
        boundary = (timestamp // self._interval) * self._interval
        if self._next_evaluation != float("-inf") and self.windows.domains:
            self.evaluate(at=boundary)
        self._next_evaluation = boundary + self._interval

    def evaluate(self, at: float | None = None) -> DriftEvaluation | None:
        """Evaluate drift over the current windows now (or at event time `at`)."""
        if self.drift is None:
            return None
        evaluation = self.drift.evaluate(self.windows, self.clock() if at is None else at)
        if self.on_evaluation is not None:
            self.on_evaluation(evaluation)
        return evaluation

    def maybe_evaluate(self, now: float) -> DriftEvaluation | None:
        """Evaluate when `drift.evaluation_interval_seconds` have passed since the last time."""
        if self.drift is None:
            return None
        last = self.drift.last
        if last is not None and now - last.at < self._interval:
            return None
        return self.evaluate(now)

    def restore(self, stored: StoredState) -> None:
        """Load counters and windows read back from the state store."""
        self.records_total = dict(stored.records_total)
        self.rejected = dict(stored.rejected)
        for domain, watermark in stored.watermarks.items():
            buckets = {start: Bucket.from_bytes(data)
                       for start, data in stored.buckets.get(domain, {}).items()}
            self.windows.restore(domain, watermark, buckets)
        if self.drift is not None:
            for reference in stored.references.values():
                self.drift.use(reference)

    def take_changes(self, offsets: dict[tuple[str, int], int]) -> StateChanges:
        """What changed since the last call, with the offsets it corresponds to."""
        changed, dropped, watermarks = self.windows.take_changes()
        domains = {d: (w, self.records_total.get(d, 0)) for d, w in watermarks.items()}
        rejected = {r: self.rejected[r] for r in self._changed_reasons}
        self._changed_reasons.clear()
        references = self.drift.take_built() if self.drift is not None else []
        return StateChanges(buckets=changed, dropped_buckets=dropped, domains=domains,
                            rejected=rejected, offsets=dict(offsets), references=references)

    def snapshot(self, consumer_lag: dict[tuple[str, int], int] | None = None) -> Snapshot:
        domains = []
        for domain in sorted(self.windows.domains):
            summary = self.windows.summary(domain)
            merged = summary.merged
            latency = merged.latency_quantiles(self._quantiles)
            domains.append(DomainSnapshot(domain, self.records_total.get(domain, 0),
                                          summary.samples, quality_signals(merged), latency))
        drift = self.drift.last if self.drift is not None else None
        references = dict(self.drift.references) if self.drift is not None else {}
        return Snapshot(tuple(domains), dict(self.rejected), dict(consumer_lag or {}), drift,
                        references)
