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

import numpy as np

NUMERIC = ("prompt_tokens", "prompt_chars", "output_tokens", "latency_seconds",
           "mean_logprob", "feedback_score")
CATEGORICAL = ("finish_reason", "status")
_LATENCY = NUMERIC.index("latency_seconds")  # raw() holds it in milliseconds
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

    def raw(self, record) -> tuple:
        """The hot-path form kept by the drift sketches until they fold: the record's
        feature values as read (latency in ms, categories not yet cut) and its prompt
        text, in one flat tuple of immutable values (cheap for the garbage collector)."""
        if self._attribute_names:
            attributes = record.attributes or {}
            extra = tuple(None if (v := attributes.get(name)) is None else str(v)
                          for name in self._attribute_names)
            return (record.prompt_tokens, record.prompt_chars, record.output_tokens,
                    record.latency_ms, record.mean_logprob, record.feedback_score,
                    record.finish_reason, record.status) + extra + (record.input_text,)
        return (record.prompt_tokens, record.prompt_chars, record.output_tokens,
                record.latency_ms, record.mean_logprob, record.feedback_score,
                record.finish_reason, record.status, record.input_text)

    def columns(self, raws: list[tuple]) -> tuple[np.ndarray, list, list]:
        """Columns of many `raw()` tuples: a float matrix (records x numeric_names,
        NaN where absent), one list per categorical feature (not cut), the texts."""
        columns = list(zip(*raws))
        numeric = np.array(columns[:len(NUMERIC)], dtype=float).T
        numeric[:, _LATENCY] /= 1000.0
        return numeric, columns[len(NUMERIC):-1], list(columns[-1])

    def row_from_raw(self, raw: tuple) -> tuple[tuple, tuple]:
        """(numeric values as floats, categories cut to MAX_CATEGORY_LENGTH) of one raw tuple."""
        latency = raw[_LATENCY]
        numeric = tuple(None if v is None else float(v) for v in raw[:len(NUMERIC)])
        if latency is not None:
            numeric = numeric[:_LATENCY] + (latency / 1000.0,) + numeric[_LATENCY + 1:]
        categorical = tuple(None if v is None else v[:MAX_CATEGORY_LENGTH]
                            for v in raw[len(NUMERIC):-1])
        return numeric, categorical

    def row(self, record) -> tuple[tuple, tuple]:
        return self.row_from_raw(self.raw(record))

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
