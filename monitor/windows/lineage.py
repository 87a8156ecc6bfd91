"""Where the records of a domain's current window came from (for a retrain request).

Computed from the lineage each bucket keeps (`Bucket.first_time`,
`Bucket.last_time`, `Bucket.offsets`) over the buckets of the domain's current
window, as `WindowSet.summary` merges them: the Kafka topic, per partition the
first and last offset of those records, and their event-time range. A
partition's offset range may hold other domains' records too (domains share
partitions); the consumer filters by domain. Buckets written by a version
without lineage contribute their records to the count but no offsets or times.

>>> from monitor.records import Record
>>> ws = WindowSet(bucket_seconds=60, length_seconds=300, allowed_lateness_seconds=60,
...                max_domains=10, clock=lambda: 0.0)
>>> for offset, t in enumerate((1000.0, 1010.0, 1070.0)):
...     _ = ws.add(Record(t, "legal"), (False,) * 4, partition=2, offset=40 + offset)
>>> lineage = window_lineage(ws, "legal", "inference-logs")
>>> lineage["partitions"], lineage["records"], lineage["event_time"]["end"]
({'2': {'first_offset': 40, 'last_offset': 42}}, 3, '1970-01-01T00:17:50.000Z')
>>> window_lineage(ws, "support", "inference-logs") is None
True
"""

from __future__ import annotations

from monitor.timestamps import rfc3339
from monitor.windows.window import WindowSet


def window_lineage(windows: WindowSet, domain: str, topic: str) -> dict | None:
    """The lineage of `domain`'s current window as a JSON-able document; None when
    the domain has no window. Partition keys are strings; times are RFC 3339 (None
    when no bucket of the window has lineage)."""
    summary = windows.summary(domain)
    if summary is None:
        return None
    merged = summary.merged
    return {
        "topic": topic,
        "partitions": {str(partition): {"first_offset": first, "last_offset": last}
                       for partition, (first, last) in sorted(merged.offsets.items())},
        "event_time": {"start": rfc3339(merged.first_time), "end": rfc3339(merged.last_time)},
        "window": {"start": rfc3339(summary.start), "end": rfc3339(summary.end)},
        "records": merged.count,
    }
