"""Unit tests of monitor.records.decode: the inference log record, schema v1 (DESIGN.md §3)."""

from __future__ import annotations

import copy
from datetime import datetime, timezone

import orjson
import pytest

from monitor.errors import RecordError
from monitor.records import (
    DEFAULT_MAX_BYTES,
    DOMAIN_LIMIT,
    LATE,
    REJECT_REASONS,
    Record,
    decode,
    parse_timestamp,
)

FULL_RECORD = {
    "schema_version": 1,
    "request_id": "7f6c-0001",
    "timestamp": "2026-11-28T19:54:09.123Z",
    "domain": "legal",
    "model": {"base": "llama-3.1-8b", "kind": "lora", "version": "v3"},
    "input": {"text": "What is a tort?", "tokens": 412},
    "output": {"text": "A tort is…", "tokens": 96, "finish_reason": "stop", "mean_logprob": -0.71},
    "latency_ms": 842.1,
    "status": "ok",
    "feedback": {"score": 1.0},
    "attributes": {"language": "en", "channel": "web"},
}

MINIMAL = {"schema_version": 1, "timestamp": 0, "domain": "legal", "input": {"tokens": 3}}

# 2026-11-28T19:54:09.123Z as epoch seconds.
EPOCH_SECONDS = datetime(2026, 11, 28, 19, 54, 9, 123000, tzinfo=timezone.utc).timestamp()


def encode(doc) -> bytes:
    return orjson.dumps(doc)


def with_changes(base: dict, **changes) -> dict:
    """A deep copy of `base` with top-level keys replaced (a value of `...` deletes the key)."""
    doc = copy.deepcopy(base)
    for key, value in changes.items():
        if value is ...:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def reason_of(raw, **kwargs) -> str:
    with pytest.raises(RecordError) as info:
        decode(raw, **kwargs)
    return info.value.reason


# -- accepted records ----------------------------------------------------------

def test_full_valid_record_decodes_with_every_field():
    record = decode(encode(FULL_RECORD))

    assert isinstance(record, Record)
    assert record.timestamp == pytest.approx(EPOCH_SECONDS, abs=1e-6)
    assert record.domain == "legal"
    assert record.request_id == "7f6c-0001"
    assert record.model_kind == "lora"
    assert record.model_version == "v3"
    assert record.prompt_tokens == 412
    assert record.input_text == "What is a tort?"
    assert record.prompt_chars == len("What is a tort?")
    assert record.output_text == "A tort is…"
    assert record.output_tokens == 96
    assert record.finish_reason == "stop"
    assert record.mean_logprob == pytest.approx(-0.71)
    assert record.latency_ms == pytest.approx(842.1)
    assert record.status == "ok"
    assert record.feedback_score == 1.0
    assert record.attributes == {"language": "en", "channel": "web"}


def test_minimal_record_with_only_required_fields_decodes_and_leaves_the_rest_none():
    record = decode(encode(MINIMAL))

    assert (record.domain, record.timestamp, record.prompt_tokens) == ("legal", 0.0, 3)
    for name in ("request_id", "model_kind", "model_version", "prompt_chars", "input_text",
                 "output_text", "output_tokens", "finish_reason", "mean_logprob", "latency_ms",
                 "status", "feedback_score", "attributes"):
        assert getattr(record, name) is None, name


def test_input_text_alone_is_enough_and_gives_prompt_chars():
    record = decode(encode(with_changes(MINIMAL, input={"text": "héllo"})))

    assert record.prompt_tokens is None
    assert record.input_text == "héllo"
    assert record.prompt_chars == 5


def test_empty_input_text_counts_as_present():
    record = decode(encode(with_changes(MINIMAL, input={"text": ""})))

    assert record.input_text == ""
    assert record.prompt_chars == 0


def test_explicit_nulls_in_optional_fields_are_treated_as_absent():
    doc = with_changes(MINIMAL, output=None, model=None, latency_ms=None, status=None,
                       feedback=None, attributes=None, request_id=None)

    record = decode(encode(doc))

    assert record.output_text is None and record.latency_ms is None and record.attributes is None


def test_unknown_fields_are_ignored_at_every_level():
    doc = copy.deepcopy(FULL_RECORD)
    doc["future_field"] = {"nested": [1, 2, 3]}
    doc["input"]["embedding_hint"] = "x"
    doc["output"]["tool_calls"] = [{"name": "search"}]
    doc["model"]["quantization"] = "int4"
    doc["feedback"]["comment"] = "great"

    record = decode(encode(doc))

    assert record.domain == "legal"
    assert record.output_tokens == 96


@pytest.mark.parametrize("field, value, attribute, expected", [
    ("mean_logprob", -1, "mean_logprob", -1.0),
    ("mean_logprob", 0, "mean_logprob", 0.0),
])
def test_integer_mean_logprob_is_accepted_as_float(field, value, attribute, expected):
    doc = copy.deepcopy(FULL_RECORD)
    doc["output"][field] = value

    record = decode(encode(doc))

    assert getattr(record, attribute) == expected
    assert type(getattr(record, attribute)) is float


@pytest.mark.parametrize("value", [0, 842, 10_000])
def test_integer_latency_ms_is_accepted_as_float(value):
    record = decode(encode(with_changes(FULL_RECORD, latency_ms=value)))

    assert record.latency_ms == float(value)
    assert type(record.latency_ms) is float


def test_integer_feedback_score_is_accepted():
    record = decode(encode(with_changes(FULL_RECORD, feedback={"score": 0})))

    assert record.feedback_score == 0.0


def test_zero_tokens_are_valid_counts():
    doc = copy.deepcopy(FULL_RECORD)
    doc["input"]["tokens"] = 0
    doc["output"]["tokens"] = 0

    record = decode(encode(doc))

    assert (record.prompt_tokens, record.output_tokens) == (0, 0)


@pytest.mark.parametrize("value", [True, 3, 2.5, None, "x"])
def test_attribute_values_may_be_strings_numbers_booleans_or_null(value):
    record = decode(encode(with_changes(MINIMAL, attributes={"language": value})))

    assert record.attributes == {"language": value}


@pytest.mark.parametrize("domain", ["legal", "a", "L-2.support_v1:eu", "9" * 128])
def test_domains_matching_the_pattern_are_accepted(domain):
    assert decode(encode(with_changes(MINIMAL, domain=domain))).domain == domain


def test_record_repr_names_domain_and_timestamp():
    assert repr(decode(encode(MINIMAL))) == "Record(domain='legal', timestamp=0.0)"


def test_a_message_exactly_at_the_size_limit_is_accepted():
    raw = encode(MINIMAL)

    assert decode(raw, max_bytes=len(raw)).domain == "legal"


# -- timestamps ----------------------------------------------------------------

@pytest.mark.parametrize("timestamp", [
    1795895649123,                          # epoch milliseconds (int)
    1795895649123.0,                        # epoch milliseconds (float)
    "2026-11-28T19:54:09.123Z",
    "2026-11-28T19:54:09.123+00:00",
    "2026-11-28T21:54:09.123+02:00",
    "2026-11-28T14:24:09.123-05:30",
    "2026-11-29T05:54:09.123+10:00",      # the next calendar day locally
])
def test_epoch_ms_and_rfc3339_timestamps_give_the_same_epoch_seconds(timestamp):
    record = decode(encode(with_changes(MINIMAL, timestamp=timestamp)))

    assert record.timestamp == pytest.approx(EPOCH_SECONDS, abs=1e-6)


def test_rfc3339_timestamp_without_fraction_is_accepted():
    assert parse_timestamp("2026-11-28T19:54:09Z") == pytest.approx(EPOCH_SECONDS - 0.123, abs=1e-6)


def test_epoch_zero_is_the_earliest_valid_timestamp():
    assert parse_timestamp(0) == 0.0
    assert parse_timestamp("1970-01-01T00:00:00Z") == 0.0


# -- rejected records ----------------------------------------------------------

def _nested(section: str, key: str, value) -> dict:
    doc = copy.deepcopy(FULL_RECORD)
    doc[section][key] = value
    return doc


REJECTED = [
    # invalid_json
    pytest.param(b"{not json", "invalid_json", id="not-json"),
    pytest.param(b"", "invalid_json", id="empty-bytes"),
    pytest.param(None, "invalid_json", id="tombstone-none"),
    pytest.param(b'{"schema_version": 1,', "invalid_json", id="truncated"),
    pytest.param(b"\xff\xfe{}", "invalid_json", id="not-utf8"),
    pytest.param(b'{"a": NaN}', "invalid_json", id="nan-literal"),
    pytest.param(b'{"schema_version":1,"timestamp":1e400,"domain":"d","input":{"tokens":1}}',
                 "invalid_json", id="float-overflow"),
    # not_object
    pytest.param(b"[1, 2, 3]", "not_object", id="array"),
    pytest.param(b'"legal"', "not_object", id="string"),
    pytest.param(b"42", "not_object", id="number"),
    pytest.param(b"null", "not_object", id="null"),
    pytest.param(b"true", "not_object", id="bool"),
    # missing_field
    pytest.param(encode(with_changes(MINIMAL, schema_version=...)), "missing_field",
                 id="no-schema-version"),
    pytest.param(encode(with_changes(MINIMAL, schema_version=None)), "missing_field",
                 id="null-schema-version"),
    pytest.param(encode(with_changes(MINIMAL, timestamp=...)), "missing_field", id="no-timestamp"),
    pytest.param(encode(with_changes(MINIMAL, domain=...)), "missing_field", id="no-domain"),
    pytest.param(encode(with_changes(MINIMAL, input=...)), "missing_field", id="no-input"),
    pytest.param(encode(with_changes(MINIMAL, input={})), "missing_field",
                 id="input-without-text-or-tokens"),
    pytest.param(encode(with_changes(MINIMAL, input={"text": None, "tokens": None})), "missing_field",
                 id="input-with-null-text-and-tokens"),
    pytest.param(encode({}), "missing_field", id="empty-object"),
    # bad_type
    pytest.param(encode(with_changes(MINIMAL, schema_version="1")), "bad_type",
                 id="schema-version-string"),
    pytest.param(encode(with_changes(MINIMAL, schema_version=1.0)), "bad_type",
                 id="schema-version-float"),
    pytest.param(encode(with_changes(MINIMAL, schema_version=True)), "bad_type",
                 id="schema-version-bool"),
    pytest.param(encode(with_changes(MINIMAL, domain=7)), "bad_type", id="domain-number"),
    pytest.param(encode(with_changes(MINIMAL, domain=["legal"])), "bad_type", id="domain-list"),
    pytest.param(encode(with_changes(MINIMAL, input="hello")), "bad_type", id="input-string"),
    pytest.param(encode(with_changes(MINIMAL, input=[1])), "bad_type", id="input-list"),
    pytest.param(encode(with_changes(MINIMAL, input={"text": 5})), "bad_type", id="input-text-number"),
    pytest.param(encode(with_changes(MINIMAL, input={"tokens": "3"})), "bad_type",
                 id="input-tokens-string"),
    pytest.param(encode(with_changes(MINIMAL, input={"tokens": 3.0})), "bad_type",
                 id="input-tokens-float"),
    pytest.param(encode(with_changes(MINIMAL, input={"tokens": True})), "bad_type",
                 id="input-tokens-bool"),
    pytest.param(encode(with_changes(FULL_RECORD, output="text")), "bad_type", id="output-string"),
    pytest.param(encode(_nested("output", "tokens", "x")), "bad_type", id="output-tokens-string"),
    pytest.param(encode(_nested("output", "tokens", 1.5)), "bad_type", id="output-tokens-float"),
    pytest.param(encode(_nested("output", "tokens", False)), "bad_type", id="output-tokens-bool"),
    pytest.param(encode(_nested("output", "text", 12)), "bad_type", id="output-text-number"),
    pytest.param(encode(_nested("output", "finish_reason", 1)), "bad_type",
                 id="output-finish-reason-number"),
    pytest.param(encode(_nested("output", "mean_logprob", "-0.7")), "bad_type",
                 id="output-mean-logprob-string"),
    pytest.param(encode(_nested("output", "mean_logprob", True)), "bad_type",
                 id="output-mean-logprob-bool"),
    pytest.param(encode(with_changes(FULL_RECORD, model="v3")), "bad_type", id="model-string"),
    pytest.param(encode(_nested("model", "kind", 1)), "bad_type", id="model-kind-number"),
    pytest.param(encode(_nested("model", "version", 3)), "bad_type", id="model-version-number"),
    pytest.param(encode(with_changes(FULL_RECORD, latency_ms="fast")), "bad_type",
                 id="latency-string"),
    pytest.param(encode(with_changes(FULL_RECORD, latency_ms=True)), "bad_type", id="latency-bool"),
    pytest.param(encode(with_changes(FULL_RECORD, latency_ms=[1.0])), "bad_type", id="latency-list"),
    pytest.param(encode(with_changes(FULL_RECORD, status=500)), "bad_type", id="status-number"),
    pytest.param(encode(with_changes(FULL_RECORD, request_id=123)), "bad_type",
                 id="request-id-number"),
    pytest.param(encode(with_changes(FULL_RECORD, feedback=1.0)), "bad_type", id="feedback-number"),
    pytest.param(encode(with_changes(FULL_RECORD, feedback={"score": "good"})), "bad_type",
                 id="feedback-score-string"),
    pytest.param(encode(with_changes(FULL_RECORD, feedback={"score": True})), "bad_type",
                 id="feedback-score-bool"),
    pytest.param(encode(with_changes(FULL_RECORD, attributes=["en"])), "bad_type",
                 id="attributes-list"),
    pytest.param(encode(with_changes(FULL_RECORD, attributes={"language": ["en"]})), "bad_type",
                 id="attribute-value-list"),
    pytest.param(encode(with_changes(FULL_RECORD, attributes={"language": {"code": "en"}})),
                 "bad_type", id="attribute-value-object"),
    # bad_value
    pytest.param(encode(with_changes(MINIMAL, domain="legal team")), "bad_value",
                 id="domain-with-space"),
    pytest.param(encode(with_changes(MINIMAL, domain="")), "bad_value", id="domain-empty"),
    pytest.param(encode(with_changes(MINIMAL, domain="-legal")), "bad_value",
                 id="domain-leading-dash"),
    pytest.param(encode(with_changes(MINIMAL, domain="légal")), "bad_value", id="domain-non-ascii"),
    pytest.param(encode(with_changes(MINIMAL, domain="x" * 129)), "bad_value", id="domain-too-long"),
    pytest.param(encode(with_changes(MINIMAL, domain="legal\n")), "bad_value",
                 id="domain-trailing-newline"),
    pytest.param(encode(with_changes(MINIMAL, input={"tokens": -1})), "bad_value",
                 id="input-tokens-negative"),
    pytest.param(encode(_nested("output", "tokens", -5)), "bad_value", id="output-tokens-negative"),
    pytest.param(encode(with_changes(FULL_RECORD, latency_ms=-1.0)), "bad_value",
                 id="latency-negative-float"),
    pytest.param(encode(with_changes(FULL_RECORD, latency_ms=-3)), "bad_value",
                 id="latency-negative-int"),
    # bad_timestamp
    pytest.param(encode(with_changes(MINIMAL, timestamp="2026-11-28T19:54:09")), "bad_timestamp",
                 id="naive-timestamp"),
    pytest.param(encode(with_changes(MINIMAL, timestamp="2026-11-28T19:54:09.123")), "bad_timestamp",
                 id="naive-timestamp-with-fraction"),
    pytest.param(encode(with_changes(MINIMAL, timestamp="2026-11-28")), "bad_timestamp",
                 id="date-only"),
    pytest.param(encode(with_changes(MINIMAL, timestamp="yesterday")), "bad_timestamp",
                 id="free-text"),
    pytest.param(encode(with_changes(MINIMAL, timestamp="")), "bad_timestamp", id="empty-string"),
    pytest.param(encode(with_changes(MINIMAL, timestamp="2026-13-01T00:00:00Z")), "bad_timestamp",
                 id="month-13"),
    pytest.param(encode(with_changes(MINIMAL, timestamp=True)), "bad_timestamp", id="bool"),
    pytest.param(encode(with_changes(MINIMAL, timestamp=[0])), "bad_timestamp", id="list"),
    pytest.param(encode(with_changes(MINIMAL, timestamp={"ms": 0})), "bad_timestamp", id="object"),
    pytest.param(encode(with_changes(MINIMAL, timestamp=-1)), "bad_timestamp", id="before-1970"),
    pytest.param(encode(with_changes(MINIMAL, timestamp="1969-12-31T23:59:59Z")), "bad_timestamp",
                 id="rfc3339-before-1970"),
    pytest.param(encode(with_changes(MINIMAL, timestamp=7258118400 * 1000)), "bad_timestamp",
                 id="year-2200"),
    pytest.param(encode(with_changes(MINIMAL, timestamp=2 ** 64 - 1)), "bad_timestamp",
                 id="huge-integer"),
    pytest.param(encode(with_changes(MINIMAL, timestamp="9999-12-31T23:59:59Z")), "bad_timestamp",
                 id="year-9999"),
    # unsupported_version
    pytest.param(encode(with_changes(MINIMAL, schema_version=2)), "unsupported_version",
                 id="schema-version-2"),
    pytest.param(encode(with_changes(MINIMAL, schema_version=0)), "unsupported_version",
                 id="schema-version-0"),
    pytest.param(encode(with_changes(MINIMAL, schema_version=-1)), "unsupported_version",
                 id="schema-version-negative"),
]


@pytest.mark.parametrize("raw, reason", REJECTED)
def test_rejected_record_has_the_expected_reason(raw, reason):
    assert reason_of(raw) == reason


@pytest.mark.parametrize("raw, reason", REJECTED)
def test_rejection_reason_is_one_of_reject_reasons_and_has_a_message(raw, reason):
    with pytest.raises(RecordError) as info:
        decode(raw)
    error = info.value

    assert error.reason in REJECT_REASONS
    assert error.message
    assert str(error).startswith(f"{error.reason}: ")
    assert isinstance(error, ValueError)


def test_message_over_max_bytes_is_rejected_as_too_large():
    raw = encode(MINIMAL)

    assert reason_of(raw, max_bytes=len(raw) - 1) == "too_large"


def test_message_over_the_default_limit_is_rejected_as_too_large_before_parsing():
    raw = b"{" + b" " * DEFAULT_MAX_BYTES + b"}"   # would otherwise be valid-ish JSON

    assert reason_of(raw) == "too_large"


def test_size_limit_is_checked_before_json_validity():
    assert reason_of(b"x" * 100, max_bytes=10) == "too_large"


def test_first_problem_in_field_order_decides_the_reason():
    # Both the version and the domain are wrong; the version is checked first.
    doc = with_changes(MINIMAL, schema_version=2, domain="bad domain")

    assert reason_of(encode(doc)) == "unsupported_version"


def test_every_reason_decode_can_produce_is_covered_by_the_cases_above():
    produced = {values[1] for values in (p.values for p in REJECTED)} | {"too_large"}

    # `late` and `domain_limit` come from the windows, never from decode.
    assert produced == set(REJECT_REASONS) - {LATE, DOMAIN_LIMIT}


# -- known deviations from RFC 3339 (bugs) ---------------------------------------

@pytest.mark.parametrize("timestamp", [
    "2026-W48-5T19:54:09Z",         # ISO week date
    "20261128T195409.123+0200",     # ISO basic format
    "2026-11-28T19:54+02:00",       # no seconds
    "2026-11-28T19:54:09+0200",     # offset without colon
    "2026-11-28T19:54:09+02",       # hour-only offset
    "2026-11-28T19:54:09,123Z",     # comma as the decimal sign
])
def test_timestamp_that_is_iso8601_but_not_rfc3339_is_rejected(timestamp):
    assert reason_of(encode(with_changes(MINIMAL, timestamp=timestamp))) == "bad_timestamp"


def test_rfc3339_timestamp_with_lower_case_t_and_z_is_accepted():
    record = decode(encode(with_changes(MINIMAL, timestamp="2026-11-28t19:54:09.123z")))

    assert record.timestamp == pytest.approx(EPOCH_SECONDS, abs=1e-6)


@pytest.mark.parametrize("field, value", [
    ("feedback", {"score": 1e308}),
    ("feedback", {"score": -2e9}),
    ("output", {"mean_logprob": 1e10}),
    ("latency_ms", 1e300),
])
def test_numbers_too_large_to_sum_safely_are_rejected_as_bad_value(field, value):
    doc = dict(FULL_RECORD, **{field: value})

    with pytest.raises(RecordError) as info:
        decode(orjson.dumps(doc))

    assert info.value.reason == "bad_value"


def test_a_huge_invalid_domain_is_rejected_without_being_cached():
    doc = dict(FULL_RECORD, domain="x" * 100_000)

    with pytest.raises(RecordError) as info:
        decode(orjson.dumps(doc))

    assert info.value.reason == "bad_value"
