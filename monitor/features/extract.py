"""Feature extraction from one accepted record (DESIGN.md §3, built-in features).

The per-feature drift statistics are built on these values; the quality
signals read records directly and do not need them.

>>> from monitor.records import decode
>>> r = decode(b'{"schema_version":1,"timestamp":0,"domain":"d","input":{"text":"hi"},'
...            b'"latency_ms":250,"attributes":{"language":"en"}}')
>>> f = FeatureExtractor(attributes=["language"]).extract(r)
>>> f.numeric
{'prompt_chars': 2.0, 'latency_seconds': 0.25}
>>> f.categorical
{'attributes.language': 'en'}
"""

from __future__ import annotations

NUMERIC = ("prompt_tokens", "prompt_chars", "output_tokens", "latency_seconds",
           "mean_logprob", "feedback_score")
CATEGORICAL = ("finish_reason", "status")
MAX_CATEGORY_LENGTH = 64


class Features:
    """Numbers and categories of one record; absent values are left out."""

    __slots__ = ("numeric", "categorical")

    def __init__(self, numeric: dict[str, float], categorical: dict[str, str]):
        self.numeric = numeric
        self.categorical = categorical


class FeatureExtractor:
    """Turns a `Record` into `Features`; `attributes` names the attributes kept as categories."""

    def __init__(self, attributes: list[str] | tuple[str, ...] = ()):
        self._attributes = tuple((name, f"attributes.{name}") for name in attributes)

    def extract(self, record) -> Features:
        numeric = {}
        if record.prompt_tokens is not None:
            numeric["prompt_tokens"] = float(record.prompt_tokens)
        if record.prompt_chars is not None:
            numeric["prompt_chars"] = float(record.prompt_chars)
        if record.output_tokens is not None:
            numeric["output_tokens"] = float(record.output_tokens)
        if record.latency_ms is not None:
            numeric["latency_seconds"] = record.latency_ms / 1000.0
        if record.mean_logprob is not None:
            numeric["mean_logprob"] = record.mean_logprob
        if record.feedback_score is not None:
            numeric["feedback_score"] = record.feedback_score
        categorical = {}
        if record.finish_reason is not None:
            categorical["finish_reason"] = record.finish_reason[:MAX_CATEGORY_LENGTH]
        if record.status is not None:
            categorical["status"] = record.status[:MAX_CATEGORY_LENGTH]
        attributes = record.attributes
        if attributes:
            for name, feature in self._attributes:
                value = attributes.get(name)
                if value is not None:
                    categorical[feature] = str(value)[:MAX_CATEGORY_LENGTH]
        return Features(numeric, categorical)
