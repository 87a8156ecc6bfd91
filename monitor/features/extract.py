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

from operator import attrgetter

import numpy as np

NUMERIC = ("prompt_tokens", "prompt_chars", "output_tokens", "latency_seconds",
           "mean_logprob", "feedback_score")
CATEGORICAL = ("finish_reason", "status")
_NUMERIC_GETTERS = {name: attrgetter(name) for name in
                    ("prompt_tokens", "prompt_chars", "output_tokens", "mean_logprob",
                     "feedback_score")}
_LATENCY_MS = attrgetter("latency_ms")
_CATEGORICAL_GETTERS = tuple(attrgetter(name) for name in CATEGORICAL)
MAX_CATEGORY_LENGTH = 64


class Features:
    """Numbers and categories of one record; absent values are left out."""

    __slots__ = ("numeric", "categorical")

    def __init__(self, numeric: dict[str, float], categorical: dict[str, str]):
        self.numeric = numeric
        self.categorical = categorical


class FeatureExtractor:
    """Turns a `Record` into `Features`; `attributes` names the attributes kept as categories.

    `row(record)` is the hot-path form used by the drift sketches: two tuples in
    the fixed orders `numeric_names` and `categorical_names`, None where absent.

    >>> from monitor.records import Record
    >>> r = Record(0.0, "d", prompt_tokens=12, finish_reason="stop", latency_ms=500.0)
    >>> FeatureExtractor().row(r)
    ((12.0, None, None, 0.5, None, None), ('stop', None))
    """

    def __init__(self, attributes: list[str] | tuple[str, ...] = ()):
        self._attributes = tuple((name, f"attributes.{name}") for name in attributes)
        self._attribute_names = tuple(attributes)
        self.numeric_names = NUMERIC
        self.categorical_names = CATEGORICAL + tuple(f for _, f in self._attributes)

    def numeric_column(self, records: list, index: int) -> np.ndarray:
        """The `numeric_names[index]` values of `records` as floats, NaN where absent."""
        name = NUMERIC[index]
        if name == "latency_seconds":
            return np.array(list(map(_LATENCY_MS, records)), dtype=float) / 1000.0
        return np.array(list(map(_NUMERIC_GETTERS[name], records)), dtype=float)

    def categorical_column(self, records: list, index: int) -> list:
        """The `categorical_names[index]` values of `records` (None where absent), not
        yet cut to MAX_CATEGORY_LENGTH: callers count first and cut the distinct values."""
        if index < len(CATEGORICAL):
            return list(map(_CATEGORICAL_GETTERS[index], records))
        name = self._attribute_names[index - len(CATEGORICAL)]
        return [None if (a := r.attributes) is None or (v := a.get(name)) is None else str(v)
                for r in records]

    def row(self, record) -> tuple[tuple, tuple]:
        tokens = record.prompt_tokens
        chars = record.prompt_chars
        out = record.output_tokens
        latency = record.latency_ms
        numeric = (None if tokens is None else float(tokens),
                   None if chars is None else float(chars),
                   None if out is None else float(out),
                   None if latency is None else latency / 1000.0,
                   record.mean_logprob, record.feedback_score)
        finish = record.finish_reason
        status = record.status
        categorical = (None if finish is None else finish[:MAX_CATEGORY_LENGTH],
                       None if status is None else status[:MAX_CATEGORY_LENGTH])
        if self._attribute_names:
            attributes = record.attributes or {}
            categorical += tuple(None if (v := attributes.get(name)) is None
                                 else str(v)[:MAX_CATEGORY_LENGTH]
                                 for name in self._attribute_names)
        return numeric, categorical

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
