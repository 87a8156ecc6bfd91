"""`monitor reference build`: a domain's reference profile from a JSONL file.

Records are decoded and validated exactly as the daemon does; rejected lines
and other domains' records are counted and skipped. The result becomes the
domain's active reference in the state store, and a running daemon switches to
it at its next drift evaluation.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from monitor.config import Config
from monitor.drift.reference import Reference
from monitor.drift.tracker import DriftTracker
from monitor.errors import RecordError
from monitor.ingest.file import read_jsonl
from monitor.records import decode


@dataclass
class BuildResult:
    reference: Reference | None
    lines: int = 0
    rejected: Counter = field(default_factory=Counter)
    other_domains: Counter = field(default_factory=Counter)
    skipped_over_limit: int = 0


def build_from_file(path: str, domain: str, config: Config, version: str = "",
                    limit: int | None = 200_000, built_at: float | None = None) -> BuildResult:
    """Build the reference of `domain` from the first `limit` of its records in `path`."""
    import time

    tracker = DriftTracker(config.drift)
    builder = tracker.builder_for_file(domain, version)
    key = random.Random(0).random  # which prompt texts the reference keeps
    result = BuildResult(None)
    for batch in read_jsonl(path):
        for message in batch:
            result.lines += 1
            try:
                record = decode(message.value, config.records.max_bytes)
            except RecordError as error:
                result.rejected[error.reason] += 1
                continue
            if record.domain != domain:
                result.other_domains[record.domain] += 1
            elif limit is not None and builder.count >= limit:
                result.skipped_over_limit += 1
            else:
                numeric, categorical = tracker.features.row(record)
                builder.add(numeric, categorical, record.input_text, record.timestamp, key())
    if builder.count >= 2:
        result.reference = builder.build(built_at=time.time() if built_at is None else built_at,
                                         source=str(path))
    return result
