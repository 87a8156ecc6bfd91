"""One tumbling bucket: counts, sums and a latency histogram, all mergeable.

Latencies are counted in DDSketch's logarithmic bins (1% relative accuracy):
the bucket keeps {bin key: count}, which merges by addition and serialises
as plain numbers; quantiles are read through a DDSketch built from the bins.
Memory per bucket is bounded: latencies are clamped to [1e-4 s, 1e5 s], so a
bucket never holds more than ~1,000 bins.

>>> from types import SimpleNamespace as R
>>> a, b = Bucket(), Bucket()
>>> a.add(R(latency_ms=200.0, mean_logprob=None, feedback_score=None), (False, True, False, False))
>>> b.add(R(latency_ms=400.0, mean_logprob=-1.0, feedback_score=None), (True, False, False, False))
>>> a.merge(b); (a.count, a.errors, a.logprob_n)
(2, 1, 1)
>>> Bucket.from_bytes(a.to_bytes()).count
2
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

    __slots__ = _FIELDS + ("latency", "drift")

    def __init__(self):
        self.count = self.errors = self.with_output = self.refusals = self.empty = 0
        self.logprob_sum = 0.0
        self.logprob_n = 0
        self.feedback_sum = 0.0
        self.feedback_n = 0
        self.latency: dict[int, int] = {}
        # The drift sketch (monitor.windows.sketch), once the domain has a reference.
        self.drift = None

    def add(self, record, flags: tuple) -> None:
        """Count one record; `flags` comes from `QualityJudge.flags(record)`."""
        is_error, has_output, is_refusal, is_empty = flags
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
        if doc.get("drift") is not None:
            from monitor.windows.sketch import DriftSketch

            bucket.drift = DriftSketch.from_doc(doc["drift"])
        return bucket
