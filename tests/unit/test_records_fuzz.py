"""Property tests of monitor.records.decode: whatever the input, it returns a
`Record` or raises `RecordError` with a reason from REJECT_REASONS, nothing else."""

from __future__ import annotations

import copy
import math

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.errors import RecordError
from monitor.records import DOMAIN_PATTERN, REJECT_REASONS, Record, decode, decode_diagnostic

from .test_records import FULL_RECORD

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID = FULL_RECORD

# Paths into VALID (and a few unknown ones) that a mutation may replace or delete.
PATHS = [
    ("schema_version",), ("request_id",), ("timestamp",), ("domain",), ("model",),
    ("model", "kind"), ("model", "version"), ("input",), ("input", "text"), ("input", "tokens"),
    ("output",), ("output", "text"), ("output", "tokens"), ("output", "finish_reason"),
    ("output", "mean_logprob"), ("latency_ms",), ("status",), ("feedback",), ("feedback", "score"),
    ("attributes",), ("attributes", "language"), ("attributes", "channel"), ("unknown",),
]

# orjson serialises integers in the signed/unsigned 64-bit range only.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    # values near the edges of what decode checks
    | st.sampled_from([0, 1, 2, -1, 0.0, -0.0, 1.0, "", "1", "legal", "legal team",
                       "2026-11-28T19:54:09Z", "2026-11-28T19:54:09", "2026-11-28",
                       "1969-12-31T23:59:59Z", "2200-01-01T00:00:00Z", 7258118399999,
                       7258118400000, 1795895649123, 2 ** 63 - 1, 1e308])
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children,
                                                                     max_size=4),
    max_leaves=12,
)


def verdict(decoder, raw):
    try:
        record = decoder(raw)
    except RecordError as error:
        return "rejected", error.reason
    return "accepted", {name: getattr(record, name) for name in Record.__slots__}


def check_decodes_or_rejects(raw) -> Record | None:
    """decode(raw) must return a sane Record or raise RecordError with a known reason,
    and its fast (msgspec) path must agree with the orjson path on everything."""
    assert verdict(decode, raw) == verdict(decode_diagnostic, raw)
    try:
        record = decode(raw)
    except RecordError as error:
        assert error.reason in REJECT_REASONS, error.reason
        assert isinstance(error.message, str)
        return None
    # What an accepted record promises the rest of the pipeline.
    assert isinstance(record, Record)
    assert type(record.timestamp) is float and 0.0 <= record.timestamp < 7258118400.0
    assert type(record.domain) is str and DOMAIN_PATTERN.fullmatch(record.domain)
    assert record.input_text is not None or record.prompt_tokens is not None
    for name in ("prompt_tokens", "output_tokens"):
        value = getattr(record, name)
        assert value is None or (type(value) is int and value >= 0), (name, value)
    for name in ("mean_logprob", "latency_ms", "feedback_score"):
        value = getattr(record, name)
        assert value is None or (type(value) is float and math.isfinite(value)), (name, value)
    assert record.latency_ms is None or record.latency_ms >= 0
    for name in ("input_text", "output_text", "finish_reason", "status", "request_id",
                 "model_kind", "model_version"):
        value = getattr(record, name)
        assert value is None or type(value) is str, (name, value)
    if record.input_text is not None:
        assert record.prompt_chars == len(record.input_text)
    assert record.attributes is None or isinstance(record.attributes, dict)
    return record


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_record_error(raw):
    check_decodes_or_rejects(raw)


@FUZZ
@given(st.binary(max_size=60))
def test_arbitrary_bytes_inside_a_valid_prefix_never_raise_anything_but_record_error(tail):
    check_decodes_or_rejects(b'{"schema_version": 1, "timestamp": ' + tail)


@FUZZ
@given(json_values)
def test_arbitrary_json_values_decode_or_raise_record_error(value):
    check_decodes_or_rejects(orjson.dumps(value))


@FUZZ
@given(st.dictionaries(st.sampled_from([p[0] for p in PATHS]), json_values, max_size=8))
def test_arbitrary_objects_with_known_keys_decode_or_raise_record_error(doc):
    check_decodes_or_rejects(orjson.dumps(doc))


def _mutate(doc: dict, path: tuple, value, delete: bool) -> None:
    parent = doc
    for key in path[:-1]:
        child = parent.get(key)
        if not isinstance(child, dict):
            return  # an earlier mutation replaced the parent: nothing to do
        parent = child
    if delete:
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = value


mutations = st.lists(st.tuples(st.sampled_from(PATHS), json_values, st.booleans()),
                     min_size=1, max_size=4)


@FUZZ
@given(mutations)
def test_mutated_valid_record_decodes_or_raises_record_error(changes):
    doc = copy.deepcopy(VALID)
    for path, value, delete in changes:
        _mutate(doc, path, value, delete)

    record = check_decodes_or_rejects(orjson.dumps(doc))

    if record is not None:
        assert record.domain == doc["domain"]


def test_unmutated_valid_record_is_accepted():
    assert check_decodes_or_rejects(orjson.dumps(VALID)) is not None


@pytest.mark.parametrize("raw", [
    b'{"schema_version": 1, "schema_version": 2, "timestamp": 0, "domain": "d", "input": {"tokens": 1}}',
    b'{"schema_version": 1, "timestamp": 0, "domain": "d", "domain": 5, "input": {"tokens": 1}}',
    b'{"schema_version": 1, "timestamp": 0, "domain": "d", "input": {"text": "\\ud800"}}',
    b'{"schema_version": 1, "timestamp": 0, "domain": "d", "input": {"text": "\xff"}}',
    b'{"schema_version": 1, "timestamp": 0, "domain": "d", "input": {"tokens": 1}, "model": {"base": 1e999}}',
    b'{"schema_version": 1, "timestamp": 0, "domain": "d", "input": {"tokens": 18446744073709551616}}',
    b'{"schema_version": 1, "timestamp": 1.5, "domain": "d", "input": {"tokens": 1}} ',
    b' {"schema_version": 1, "timestamp": 0, "domain": "d", "input": {"tokens": 1}}\n',
    b'{"schema_version": 1, "timestamp": 0, "domain": "d", "input": {"tokens": 1}}{}',
    b'{"schema_version": 1, "timestamp": 0, "domain": "d", "input": {"tokens": 1}, "attributes": {"n": 5}}',
])
def test_fast_and_diagnostic_paths_agree_on_edge_cases(raw):
    assert verdict(decode, raw) == verdict(decode_diagnostic, raw)


def test_the_fast_path_bound_matches_the_diagnostic_one():
    from monitor import records, records_struct

    assert records_struct.MAX_MAGNITUDE == records.MAX_MAGNITUDE
