"""One tumbling bucket: counts, sums and a latency histogram, all mergeable.

Latencies are counted in DDSketch's logarithmic bins (1% relative accuracy):
the bucket keeps {bin key: count}, which merges by addition and serialises
as plain numbers; quantiles are read through a DDSketch built from the bins.
Memory per bucket is bounded: latencies are clamped to [1e-4 s, 1e5 s], so a
bucket never holds more than ~1,000 bins.

Each bucket also keeps the lineage of its records: the event-time range
(`first_time`, `last_time`; None while empty) and, per Kafka partition, the
lowest and highest offset (`offsets`: {partition: [first, last]}), when the
source gave them. Lineage merges by min/max and is persisted with the bucket
(data written before it existed loads with none).

>>> from types import SimpleNamespace as R
>>> a, b = Bucket(), Bucket()
>>> a.add(R(timestamp=70.0, latency_ms=200.0, mean_logprob=None, feedback_score=None),
...       (False, True, False, False), partition=0, offset=12)
>>> b.add(R(timestamp=65.0, latency_ms=400.0, mean_logprob=-1.0, feedback_score=None),
...       (True, False, False, False), partition=0, offset=9)
>>> a.merge(b); (a.count, a.errors, a.logprob_n)
(2, 1, 1)
>>> c = Bucket.from_bytes(a.to_bytes()); (c.count, c.first_time, c.last_time, c.offsets)
(2, 65.0, 70.0, {0: [9, 12]})
"""

from __future__ import annotations

import orjson
from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping

RELATIVE_ACCURACY = 0.01
_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
_latency_key = _MAPPING.key
_MIN_LATENCY = 1e-4
_MAX_LATENCY = 1e5
_FIELDS = ("count", "errors", "with_output", "refusals", "empty",
           "logprob_sum", "logprob_n", "feedback_sum", "feedback_n")


class Bucket:
    """Accumulates the records of one domain over one bucket of event time."""

    __slots__ = _FIELDS + ("latency", "drift", "first_time", "last_time", "offsets")

    def __init__(self):
        self.count = self.errors = self.with_output = self.refusals = self.empty = 0
        self.logprob_sum = 0.0
        self.logprob_n = 0
        self.feedback_sum = 0.0
        self.feedback_n = 0
        self.latency: dict[int, int] = {}
        # The drift sketch (monitor.windows.sketch), once the domain has a reference.
        self.drift = None
        # Lineage: event-time range of the records, and {partition: [first, last offset]}.
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.offsets: dict[int, list[int]] = {}

    def add(self, record, flags: tuple, partition: int | None = None,
            offset: int | None = None) -> None:
        """Count one record; `flags` comes from `QualityJudge.flags(record)`; the
        record's `partition` and `offset` (both or neither) go into the lineage."""
        is_error, has_output, is_refusal, is_empty = flags
        timestamp = record.timestamp
        first = self.first_time
        if first is None:  # empty, or restored from data written without lineage
            self.first_time = self.last_time = timestamp
        elif timestamp < first:
            self.first_time = timestamp
        elif timestamp > self.last_time:
            self.last_time = timestamp
        if offset is not None:
            try:
                span = self.offsets[partition]
            except KeyError:  # the partition's first record in this bucket
                if partition is not None:
                    self.offsets[partition] = [offset, offset]
            else:
                if offset > span[1]:
                    span[1] = offset
                elif offset < span[0]:
                    span[0] = offset
        self.count += 1
        if is_error:
            self.errors += 1
        if has_output:
            self.with_output += 1
            if is_refusal:
                self.refusals += 1
            if is_empty:
                self.empty += 1
        value = record.mean_logprob
        if value is not None:
            self.logprob_sum += value
            self.logprob_n += 1
        value = record.feedback_score
        if value is not None:
            self.feedback_sum += value
            self.feedback_n += 1
        value = record.latency_ms
        if value is not None:
            key = _latency_key(min(max(value / 1000.0, _MIN_LATENCY), _MAX_LATENCY))
            self.latency[key] = self.latency.get(key, 0) + 1

    def merge(self, other: "Bucket") -> None:
        for name in _FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        latency = self.latency
        for key, count in other.latency.items():
            latency[key] = latency.get(key, 0) + count
        if other.first_time is not None:
            if self.first_time is None or other.first_time < self.first_time:
                self.first_time = other.first_time
            if self.last_time is None or other.last_time > self.last_time:
                self.last_time = other.last_time
        offsets = self.offsets
        for partition, (first, last) in other.offsets.items():
            span = offsets.get(partition)
            if span is None:
                offsets[partition] = [first, last]
            else:
                span[0] = min(span[0], first)
                span[1] = max(span[1], last)

    def latency_sketch(self) -> DDSketch | None:
        """A DDSketch over this bucket's latencies (None without any)."""
        if not self.latency:
            return None
        sketch = DDSketch(RELATIVE_ACCURACY)
        for key, count in self.latency.items():
            sketch.add(_MAPPING.value(key), count)
        return sketch

    def latency_quantiles(self, quantiles) -> dict[float, float]:
        sketch = self.latency_sketch()
        if sketch is None:
            return {}
        return {q: sketch.get_quantile_value(q) for q in quantiles}

    def latency_quantile(self, q: float) -> float | None:
        return self.latency_quantiles((q,)).get(q)

    def to_bytes(self) -> bytes:
        doc = {name: getattr(self, name) for name in _FIELDS}
        doc["latency"] = sorted(self.latency.items())
        doc["first_time"] = self.first_time
        doc["last_time"] = self.last_time
        doc["offsets"] = [[p, first, last] for p, (first, last) in sorted(self.offsets.items())]
        if self.drift is not None:
            doc["drift"] = self.drift.to_doc()
        return orjson.dumps(doc)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Bucket":
        doc = orjson.loads(raw)
        bucket = cls()
        for name in _FIELDS:
            setattr(bucket, name, doc[name])
        bucket.latency = {key: count for key, count in doc.get("latency", ())}
        # Lineage: absent from buckets written before it existed.
        bucket.first_time = doc.get("first_time")
        bucket.last_time = doc.get("last_time")
        bucket.offsets = {p: [first, last] for p, first, last in doc.get("offsets", ())}
        if doc.get("drift") is not None:
            from monitor.windows.sketch import DriftSketch

            bucket.drift = DriftSketch.from_doc(doc["drift"])
        return bucket
