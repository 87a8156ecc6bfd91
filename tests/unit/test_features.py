"""Unit tests of monitor.features.FeatureExtractor (DESIGN.md §3, built-in features)."""

from __future__ import annotations

import orjson
import pytest

from monitor.features import CATEGORICAL, NUMERIC, FeatureExtractor
from monitor.records import decode


def record(**fields):
    doc = {"schema_version": 1, "timestamp": 0, "domain": "d", "input": {"tokens": 1}}
    doc.update(fields)
    return decode(orjson.dumps(doc))


FULL = dict(
    input={"text": "hello", "tokens": 412},
    output={"text": "…", "tokens": 96, "finish_reason": "stop", "mean_logprob": -0.71},
    latency_ms=842.0,
    status="ok",
    feedback={"score": 1.0},
    attributes={"language": "en", "channel": "web", "tenant": "acme"},
)


def test_numeric_features_of_a_full_record():
    features = FeatureExtractor().extract(record(**FULL))

    assert features.numeric == {
        "prompt_tokens": 412.0,
        "prompt_chars": 5.0,
        "output_tokens": 96.0,
        "latency_seconds": pytest.approx(0.842),
        "mean_logprob": pytest.approx(-0.71),
        "feedback_score": 1.0,
    }
    assert set(features.numeric) == set(NUMERIC)
    assert all(type(v) is float for v in features.numeric.values())


def test_categorical_features_of_a_full_record_with_configured_attributes():
    features = FeatureExtractor(attributes=["language", "channel"]).extract(record(**FULL))

    assert features.categorical == {
        "finish_reason": "stop",
        "status": "ok",
        "attributes.language": "en",
        "attributes.channel": "web",
    }
    assert set(CATEGORICAL) <= set(features.categorical)


def test_only_configured_attributes_become_categories():
    features = FeatureExtractor(attributes=["tenant"]).extract(record(**FULL))

    assert {k for k in features.categorical if k.startswith("attributes.")} == {"attributes.tenant"}


def test_no_configured_attributes_means_no_attribute_categories():
    features = FeatureExtractor().extract(record(**FULL))

    assert not any(k.startswith("attributes.") for k in features.categorical)


def test_configured_attribute_missing_or_null_in_the_record_is_left_out():
    features = FeatureExtractor(attributes=["language", "region"]).extract(
        record(attributes={"language": None}))

    assert features.categorical == {}


def test_non_string_attribute_values_become_strings():
    features = FeatureExtractor(attributes=["beta", "tier", "ratio"]).extract(
        record(attributes={"beta": True, "tier": 3, "ratio": 0.5}))

    assert features.categorical == {"attributes.beta": "True", "attributes.tier": "3",
                                    "attributes.ratio": "0.5"}


def test_absent_values_are_left_out():
    features = FeatureExtractor(attributes=["language"]).extract(record())

    assert features.numeric == {"prompt_tokens": 1.0}
    assert features.categorical == {}


def test_prompt_chars_comes_from_input_text():
    features = FeatureExtractor().extract(record(input={"text": "héllo wörld"}))

    assert features.numeric == {"prompt_chars": 11.0}


def test_latency_is_converted_from_milliseconds_to_seconds():
    assert FeatureExtractor().extract(record(latency_ms=250)).numeric == {
        "prompt_tokens": 1.0, "latency_seconds": 0.25}


@pytest.mark.parametrize("field", ["finish_reason", "status", "attributes.language"])
def test_long_categories_are_truncated_to_64_characters(field):
    long = "x" * 63 + "é" + "y" * 200
    fields = {
        "finish_reason": dict(output={"finish_reason": long}),
        "status": dict(status=long),
        "attributes.language": dict(attributes={"language": long}),
    }[field]

    value = FeatureExtractor(attributes=["language"]).extract(record(**fields)).categorical[field]

    assert value == long[:64]
    assert len(value) == 64


def test_categories_of_64_characters_or_fewer_are_kept_whole():
    value = "z" * 64

    features = FeatureExtractor().extract(record(status=value))

    assert features.categorical["status"] == value
