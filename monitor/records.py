"""Inference log record, schema v1 (DESIGN.md §3): decoding and validation.

`decode(raw)` turns the bytes of one Kafka message into a `Record` or raises
`RecordError` with a reason from `REJECT_REASONS`. It never raises anything
else, whatever the input (a hypothesis test holds it to that).

>>> r = decode(b'{"schema_version": 1, "timestamp": 0, "domain": "legal", "input": {"tokens": 3}}')
>>> (r.domain, r.prompt_tokens, r.timestamp)
('legal', 3, 0.0)
"""

from __future__ import annotations

import functools
import math
import re
from datetime import datetime

_fromisoformat = datetime.fromisoformat
_rfc3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})").fullmatch

import orjson

from monitor.errors import RecordError
from monitor.records_struct import decode_struct

SCHEMA_VERSION = 1
DEFAULT_MAX_BYTES = 1_048_576

# The fixed set of reasons a record is rejected for; the label values of
# monitor_records_rejected_total{reason}.
INVALID_JSON = "invalid_json"
NOT_OBJECT = "not_object"
TOO_LARGE = "too_large"
MISSING_FIELD = "missing_field"
BAD_TYPE = "bad_type"
BAD_VALUE = "bad_value"
BAD_TIMESTAMP = "bad_timestamp"
UNSUPPORTED_VERSION = "unsupported_version"
LATE = "late"
DOMAIN_LIMIT = "domain_limit"
REJECT_REASONS = (
    INVALID_JSON, NOT_OBJECT, TOO_LARGE, MISSING_FIELD, BAD_TYPE, BAD_VALUE,
    BAD_TIMESTAMP, UNSUPPORTED_VERSION, LATE, DOMAIN_LIMIT,
)

DOMAIN_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


@functools.lru_cache(maxsize=4096)
def _domain_ok(domain: str) -> bool:
    # Cached: the same few domain names arrive over and over on the hot path.
    return DOMAIN_PATTERN.fullmatch(domain) is not None

_MIN_TS = 0.0  # 1970-01-01
_MAX_TS = 7258118400.0  # 2200-01-01
_MAX_TS_MS = 7258118400000
_MAX_COUNT = 2**64 - 1  # orjson reads larger integers as floats
# Bound on summed numbers (mean_logprob, feedback.score, latency_ms): keeps every
# window sum finite, however many records a bucket takes.
MAX_MAGNITUDE = 1e9
_ATTRIBUTE_TYPES = (str, int, float, bool)


class Record:
    """One accepted record, reduced to what the pipeline uses."""

    __slots__ = (
        "timestamp", "domain", "request_id", "model_kind", "model_version",
        "prompt_tokens", "prompt_chars", "input_text", "output_text", "output_tokens",
        "finish_reason", "mean_logprob", "latency_ms", "status", "feedback_score",
        "attributes",
    )

    def __init__(self, timestamp, domain, request_id=None, model_kind=None, model_version=None,
                 prompt_tokens=None, prompt_chars=None, input_text=None, output_text=None,
                 output_tokens=None, finish_reason=None, mean_logprob=None, latency_ms=None,
                 status=None, feedback_score=None, attributes=None):
        self.timestamp = timestamp
        self.domain = domain
        self.request_id = request_id
        self.model_kind = model_kind
        self.model_version = model_version
        self.prompt_tokens = prompt_tokens
        self.prompt_chars = prompt_chars
        self.input_text = input_text
        self.output_text = output_text
        self.output_tokens = output_tokens
        self.finish_reason = finish_reason
        self.mean_logprob = mean_logprob
        self.latency_ms = latency_ms
        self.status = status
        self.feedback_score = feedback_score
        self.attributes = attributes

    def __repr__(self) -> str:
        return f"Record(domain={self.domain!r}, timestamp={self.timestamp!r})"


def _fail(reason: str, message: str):
    raise RecordError(reason, message)


def _number(obj: dict, key: str, where: str):
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is bool or not isinstance(value, (int, float)):
        _fail(BAD_TYPE, f"{where}{key} must be a number, got {type(value).__name__}")
    if not -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:
        _fail(BAD_VALUE, f"{where}{key} must be finite and within ±{MAX_MAGNITUDE:g}")
    return float(value)


def _count(obj: dict, key: str, where: str):
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is not int:
        _fail(BAD_TYPE, f"{where}{key} must be an integer, got {type(value).__name__}")
    if value < 0:
        _fail(BAD_VALUE, f"{where}{key} must be >= 0")
    return value


def _string(obj: dict, key: str, where: str):
    value = obj.get(key)
    if value is None or type(value) is str:
        return value
    _fail(BAD_TYPE, f"{where}{key} must be a string, got {type(value).__name__}")


def _object(obj: dict, key: str) -> dict | None:
    value = obj.get(key)
    if value is None or type(value) is dict:
        return value
    _fail(BAD_TYPE, f"{key} must be an object, got {type(value).__name__}")


def parse_timestamp(value) -> float:
    """Epoch seconds from an RFC 3339 string or epoch milliseconds."""
    if type(value) is str:
        if _rfc3339(value) is None:
            _fail(BAD_TIMESTAMP, f"timestamp {value[:40]!r} is not RFC 3339 "
                                 "(YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM))")
        try:
            seconds = _fromisoformat(value.upper()).timestamp()
        except ValueError:
            _fail(BAD_TIMESTAMP, f"timestamp {value[:40]!r} is not a valid date and time")
    elif type(value) in (int, float):
        if not math.isfinite(value):
            _fail(BAD_TIMESTAMP, "timestamp must be finite")
        seconds = value / 1000.0
    else:
        _fail(BAD_TIMESTAMP, f"timestamp must be an RFC 3339 string or epoch milliseconds, "
                             f"got {type(value).__name__}")
    if not _MIN_TS <= seconds < _MAX_TS:
        _fail(BAD_TIMESTAMP, "timestamp is outside 1970..2200")
    return seconds


def decode(raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Record:
    """Decode and validate one message value; raise `RecordError` on any problem."""
    if raw is None:
        _fail(INVALID_JSON, "empty message (tombstone)")
    if len(raw) > max_bytes:
        _fail(TOO_LARGE, f"{len(raw)} bytes exceeds the limit of {max_bytes}")
    # Fast path: msgspec checks types in C. Whatever it or the checks after it
    # refuse is decoded again by the orjson path, which names the reason.
    try:
        r = decode_struct(raw)
    except Exception:  # invalid JSON or UTF-8, wrong types, ...: let the orjson path say which
        return decode_diagnostic(raw)
    ts = r.timestamp
    if type(ts) is str:
        if _rfc3339(ts) is None:
            return decode_diagnostic(raw)
        try:
            timestamp = _fromisoformat(ts.upper()).timestamp()
        except ValueError:
            return decode_diagnostic(raw)
        if not _MIN_TS <= timestamp < _MAX_TS:
            return decode_diagnostic(raw)
    elif 0 <= ts < _MAX_TS_MS:
        timestamp = ts / 1000.0
    else:
        return decode_diagnostic(raw)
    domain = r.domain
    if len(domain) > 128 or not _domain_ok(domain):
        return decode_diagnostic(raw)
    inp = r.input
    input_text = inp.text
    prompt_tokens = inp.tokens
    if (input_text is None and prompt_tokens is None) or (
            prompt_tokens is not None and prompt_tokens > _MAX_COUNT):
        return decode_diagnostic(raw)
    out = r.output
    model = r.model
    feedback = r.feedback
    if out is None:
        output_text = output_tokens = finish_reason = mean_logprob = None
    else:
        output_text, output_tokens = out.text, out.tokens
        finish_reason, mean_logprob = out.finish_reason, out.mean_logprob
        if output_tokens is not None and output_tokens > _MAX_COUNT:
            return decode_diagnostic(raw)
    return Record(
        timestamp, domain, r.request_id,
        model.kind if model is not None else None,
        model.version if model is not None else None,
        prompt_tokens, len(input_text) if input_text is not None else None, input_text,
        output_text, output_tokens, finish_reason, mean_logprob, r.latency_ms, r.status,
        feedback.score if feedback is not None else None, r.attributes,
    )


def decode_diagnostic(raw: bytes) -> Record:
    """The orjson path: the same verdict as `decode`, with the exact reason and
    message of the first problem found."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        _fail(INVALID_JSON, str(exc)[:200])
    if type(doc) is not dict:
        _fail(NOT_OBJECT, f"record must be a JSON object, got {type(doc).__name__}")
    return _validate(doc)


def _validate(doc: dict) -> Record:
    """Check a parsed document field by field; the first problem raises."""
    if "schema_version" not in doc or doc["schema_version"] is None:
        _fail(MISSING_FIELD, "schema_version is required")
    version = doc["schema_version"]
    if type(version) is not int:
        _fail(BAD_TYPE, f"schema_version must be an integer, got {type(version).__name__}")
    if version != SCHEMA_VERSION:
        _fail(UNSUPPORTED_VERSION, f"schema_version {version} is not supported (expected 1)")
    if doc.get("timestamp") is None:
        _fail(MISSING_FIELD, "timestamp is required")
    timestamp = parse_timestamp(doc["timestamp"])
    domain = doc.get("domain")
    if domain is None:
        _fail(MISSING_FIELD, "domain is required")
    if type(domain) is not str:
        _fail(BAD_TYPE, f"domain must be a string, got {type(domain).__name__}")
    if len(domain) > 128 or not _domain_ok(domain):
        _fail(BAD_VALUE, "domain must match [A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")

    inp = _object(doc, "input")
    if inp is None or (inp.get("text") is None and inp.get("tokens") is None):
        _fail(MISSING_FIELD, "input.text or input.tokens is required")
    input_text = _string(inp, "text", "input.")
    prompt_tokens = _count(inp, "tokens", "input.")

    out = _object(doc, "output") or {}
    output_text = _string(out, "text", "output.")
    output_tokens = _count(out, "tokens", "output.")
    finish_reason = _string(out, "finish_reason", "output.")
    mean_logprob = _number(out, "mean_logprob", "output.")

    model = _object(doc, "model") or {}
    model_kind = _string(model, "kind", "model.")
    model_version = _string(model, "version", "model.")

    latency_ms = _number(doc, "latency_ms", "")
    if latency_ms is not None and latency_ms < 0:
        _fail(BAD_VALUE, "latency_ms must be >= 0")
    feedback_score = _number(_object(doc, "feedback") or {}, "score", "feedback.")
    request_id = _string(doc, "request_id", "")
    status = _string(doc, "status", "")

    attributes = _object(doc, "attributes")
    for key, value in (attributes or {}).items():
        if value is not None and type(value) not in _ATTRIBUTE_TYPES:
            _fail(BAD_TYPE, f"attributes.{key[:40]} must be a string, number or boolean")

    return Record(
        timestamp, domain, request_id, model_kind, model_version, prompt_tokens,
        len(input_text) if input_text is not None else None, input_text, output_text,
        output_tokens, finish_reason, mean_logprob, latency_ms, status, feedback_score,
        attributes,
    )
