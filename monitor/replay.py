"""`monitor replay`: the daemon's pipeline over a JSONL file, in event time.

Deterministic: the clock is the latest event time read so far, never the wall
clock, so the same file and config always give the same output. Nothing is
written to the daemon's state store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from monitor.config import Config
from monitor.ingest.dlq import MemoryDeadLetters
from monitor.ingest.file import read_jsonl
from monitor.pipeline import Pipeline, Snapshot


@dataclass
class ReplayResult:
    snapshot: Snapshot
    rejected_examples: list = field(default_factory=list)
    alerts: list = field(default_factory=list)
    actions: list = field(default_factory=list)

    def to_json(self) -> dict:
        """The document of DESIGN.md §8 (plus per-reason and per-domain detail)."""
        snap = self.snapshot
        return {
            "records": {"accepted": snap.accepted, "rejected": sum(snap.rejected.values()),
                        "rejected_by_reason": dict(sorted(snap.rejected.items()))},
            "domains": {d.domain: {"records": d.records_total, "window_samples": d.samples,
                                   "quality": d.quality,
                                   "latency_seconds": {repr(q): v for q, v in d.latency.items()}}
                        for d in snap.domains},
            "alerts": list(self.alerts),
            "actions": list(self.actions),
        }


def replay(path: str, config: Config, examples: int = 20) -> ReplayResult:
    """Run every line of `path` through the pipeline; keep the first `examples` rejects."""
    pipeline: Pipeline | None = None

    def clock() -> float:
        # Event time: the latest record time seen in any domain (computed only
        # when a window needs "now", which is rare: on a new bucket or a snapshot).
        return max((w.watermark for w in pipeline.windows.domains.values()), default=-math.inf)

    pipeline = Pipeline(config, clock, reject_future=False)
    dead_letters = MemoryDeadLetters(limit=examples)
    for batch in read_jsonl(path):
        for message in batch:
            error = pipeline.process(message.value)
            if error is not None:
                dead_letters.send(message, error)
    result = ReplayResult(pipeline.snapshot())
    result.rejected_examples = [
        {"line": m.offset, "reason": e.reason, "message": e.message} for m, e in dead_letters.letters]
    return result
