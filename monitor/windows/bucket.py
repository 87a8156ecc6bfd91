"""One tumbling bucket: counts, sums and a latency sketch, all mergeable.

Memory per bucket is bounded: a handful of numbers plus a DDSketch whose
key range is bounded by clamping latencies to [1e-4 s, 1e5 s] (under a
thousand bins at 1% relative accuracy).

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

import base64

import orjson
from ddsketch import DDSketch
from ddsketch.pb.ddsketch_pb2 import DDSketch as DDSketchMessage
from ddsketch.pb.proto import DDSketchProto

RELATIVE_ACCURACY = 0.01
_MIN_LATENCY = 1e-4
_MAX_LATENCY = 1e5
_FIELDS = ("count", "errors", "with_output", "refusals", "empty",
           "logprob_sum", "logprob_n", "feedback_sum", "feedback_n")


class Bucket:
    """Accumulates the records of one domain over one bucket of event time."""

    __slots__ = _FIELDS + ("latency",)

    def __init__(self):
        self.count = self.errors = self.with_output = self.refusals = self.empty = 0
        self.logprob_sum = 0.0
        self.logprob_n = 0
        self.feedback_sum = 0.0
        self.feedback_n = 0
        self.latency: DDSketch | None = None

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
            if self.latency is None:
                self.latency = DDSketch(RELATIVE_ACCURACY)
            self.latency.add(min(max(value / 1000.0, _MIN_LATENCY), _MAX_LATENCY))

    def merge(self, other: "Bucket") -> None:
        for name in _FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.latency is not None and other.latency.count:
            if self.latency is None:
                self.latency = DDSketch(RELATIVE_ACCURACY)
            self.latency.merge(other.latency)

    def latency_quantile(self, q: float) -> float | None:
        if self.latency is None or not self.latency.count:
            return None
        return self.latency.get_quantile_value(q)

    def to_bytes(self) -> bytes:
        doc = {name: getattr(self, name) for name in _FIELDS}
        if self.latency is not None:
            raw = DDSketchProto.to_proto(self.latency).SerializeToString()
            doc["latency"] = base64.b64encode(raw).decode("ascii")
        return orjson.dumps(doc)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Bucket":
        doc = orjson.loads(raw)
        bucket = cls()
        for name in _FIELDS:
            setattr(bucket, name, doc[name])
        if "latency" in doc:
            message = DDSketchMessage.FromString(base64.b64decode(doc["latency"]))
            bucket.latency = DDSketchProto.from_proto(message)
        return bucket
