"""Unit tests of monitor.quality: per-record flags and window-level quality signals."""

from __future__ import annotations

import orjson
import pytest

from monitor.config import QualityConfig
from monitor.quality import SIGNALS, QualityJudge, quality_signals
from monitor.quality.signals import DEFAULT_SCAN_CHARS
from monitor.records import Record, decode
from monitor.windows import Bucket

DEFAULT_PATTERNS = QualityConfig().refusal_patterns
DEFAULT_PHRASES = QualityConfig().refusal_phrases


def rec(numeric):
    """A record carrying the values a bucket reads."""
    return Record(0.0, "d", mean_logprob=numeric.get("mean_logprob"),
                  feedback_score=numeric.get("feedback_score"))


def record(**fields):
    doc = {"schema_version": 1, "timestamp": 0, "domain": "d", "input": {"tokens": 1}}
    doc.update(fields)
    return decode(orjson.dumps(doc))


@pytest.fixture
def judge() -> QualityJudge:
    return QualityJudge(DEFAULT_PATTERNS, refusal_phrases=DEFAULT_PHRASES)


# -- flags: (is_error, has_output, is_refusal, is_empty) --------------------------

def test_ok_status_with_output_is_not_an_error(judge):
    assert judge.flags(record(status="ok", output={"text": "Fine.", "tokens": 2})) == (
        False, True, False, False)


@pytest.mark.parametrize("status", ["error", "timeout", "OK", "failed", ""])
def test_any_status_other_than_ok_is_an_error(judge, status):
    is_error, *_ = judge.flags(record(status=status, output={"text": "x"}))

    assert is_error


def test_absent_status_is_not_an_error(judge):
    assert judge.flags(record(output={"text": "x"}))[0] is False


def test_record_without_output_has_no_output_flags(judge):
    assert judge.flags(record(status="ok")) == (False, False, False, False)


def test_error_without_output_is_flagged_as_error_only(judge):
    assert judge.flags(record(status="error")) == (True, False, False, False)


def test_output_with_only_a_finish_reason_counts_as_no_output(judge):
    assert judge.flags(record(output={"finish_reason": "stop"}))[1] is False


@pytest.mark.parametrize("text", [
    "I can't help with that.",
    "Sorry, I cannot assist with this request.",
    "I'm sorry, but no.",
    "I am unable to do that.",
    "As an AI language model, I won't.",
])
def test_refusal_is_detected_by_the_default_phrases(judge, text):
    assert judge.flags(record(output={"text": text})) == (False, True, True, False)


@pytest.mark.parametrize("text", [
    "I CAN'T HELP WITH THAT",
    "i'm SORRY, BUT no",
    "AS AN ai",
])
def test_refusal_phrases_match_case_insensitively(judge, text):
    assert judge.flags(record(output={"text": text}))[2] is True


@pytest.mark.parametrize("text", [
    "Here is the answer.",
    "I can help with that.",
    "The sorry state of affairs",  # 'sorry' alone is not a refusal
    "I'm sorry for the confusion; the corrected answer is 4.",
])
def test_ordinary_answers_are_not_refusals(judge, text):
    assert judge.flags(record(output={"text": text}))[2] is False


def test_custom_refusal_patterns_replace_the_defaults():
    judge = QualityJudge([r"\bnope\b"])

    assert judge.flags(record(output={"text": "NOPE, not today"}))[2] is True
    assert judge.flags(record(output={"text": "I can't help"}))[2] is False


def test_custom_refusal_phrases_are_matched_case_insensitively():
    judge = QualityJudge(refusal_phrases=["Not Allowed To"])

    assert judge.flags(record(output={"text": "I am NOT ALLOWED TO say"}))[2] is True
    assert judge.flags(record(output={"text": "I can't help"}))[2] is False


def test_phrases_and_patterns_both_count_as_refusals():
    judge = QualityJudge([r"\bnope\b"], refusal_phrases=["declined"])

    assert judge.flags(record(output={"text": "nope"}))[2] is True
    assert judge.flags(record(output={"text": "Request declined."}))[2] is True
    assert judge.flags(record(output={"text": "Sure, here it is."}))[2] is False


def test_default_config_uses_phrases_and_no_regex():
    assert QualityConfig().refusal_patterns == []
    assert "i can't help" in QualityConfig().refusal_phrases


def test_no_refusal_patterns_means_no_refusals():
    judge = QualityJudge([])

    assert judge.flags(record(output={"text": "I can't help with that"}))[2] is False


def test_refusal_is_looked_for_only_near_the_start_of_long_outputs(judge):
    early = "I'm sorry, but " + "x" * 5000
    late = "x" * 5000 + " I'm sorry, but"

    assert judge.flags(record(output={"text": early}))[2] is True
    assert judge.flags(record(output={"text": late}))[2] is False


def test_default_scan_covers_the_first_160_characters(judge):
    assert DEFAULT_SCAN_CHARS == 160
    assert QualityConfig().refusal_scan_chars == DEFAULT_SCAN_CHARS
    inside = "x" * 151 + " as an AI"    # ends at character 160
    outside = "x" * 153 + " as an AI"   # ends at character 162

    assert judge.flags(record(output={"text": inside}))[2] is True
    assert judge.flags(record(output={"text": outside}))[2] is False


def test_scan_chars_is_configurable():
    judge = QualityJudge([r"\bno\b"], scan_chars=5)

    assert judge.flags(record(output={"text": "no way"}))[2] is True
    assert judge.flags(record(output={"text": "well, no"}))[2] is False


def test_pipeline_uses_the_configured_scan_chars():
    from monitor.config import Config
    from monitor.pipeline import Pipeline

    config = Config.model_validate({"quality": {"refusal_scan_chars": 2000}})
    pipeline = Pipeline(config, clock=lambda: 0.0)
    pipeline.process(orjson.dumps({"schema_version": 1, "timestamp": 0, "domain": "d",
                                   "input": {"tokens": 1},
                                   "output": {"text": "x" * 1000 + " I'm sorry, but"}}))

    assert pipeline.snapshot().domains[0].quality["refusal_ratio"] == 1.0


def test_empty_text_is_an_empty_output(judge):
    assert judge.flags(record(output={"text": ""})) == (False, True, False, True)


def test_zero_output_tokens_is_an_empty_output(judge):
    assert judge.flags(record(output={"tokens": 0})) == (False, True, False, True)


def test_zero_tokens_with_text_is_still_an_empty_output(judge):
    assert judge.flags(record(output={"text": "x", "tokens": 0}))[3] is True


def test_output_with_tokens_and_no_text_is_not_empty(judge):
    assert judge.flags(record(output={"tokens": 5})) == (False, True, False, False)


def test_failed_request_with_empty_output_is_error_and_empty(judge):
    flags = judge.flags(record(status="error", output={"text": "", "tokens": 0}))

    assert flags == (True, True, False, True)


# -- quality_signals -------------------------------------------------------------

def test_signals_of_an_empty_bucket_are_left_out():
    assert quality_signals(Bucket()) == {}


def test_signals_are_ratios_computed_from_a_bucket():
    bucket = Bucket()
    #          is_error, has_output, is_refusal, is_empty
    bucket.add(rec({"mean_logprob": -0.5, "feedback_score": 1.0}), (False, True, True, False))
    bucket.add(rec({"mean_logprob": -1.5, "feedback_score": 0.0}), (True, True, False, True))
    bucket.add(rec({"feedback_score": 0.5}), (False, True, False, False))
    bucket.add(rec({}), (True, False, False, False))

    signals = quality_signals(bucket)

    assert signals == pytest.approx({
        "error_ratio": 2 / 4,
        "refusal_ratio": 1 / 3,       # over records with an output
        "empty_output_ratio": 1 / 3,
        "mean_logprob": -1.0,
        "feedback_mean": 0.5,
    })
    assert set(signals) <= set(SIGNALS)


def test_signals_without_data_are_left_out():
    bucket = Bucket()
    bucket.add(rec({}), (False, False, False, False))

    assert quality_signals(bucket) == {"error_ratio": 0.0}


def test_signals_of_a_merged_bucket_combine_both_parts():
    a, b = Bucket(), Bucket()
    a.add(rec({}), (True, True, False, False))
    b.add(rec({}), (False, True, True, False))
    b.add(rec({}), (False, True, True, False))
    a.merge(b)

    signals = quality_signals(a)

    assert signals["error_ratio"] == pytest.approx(1 / 3)
    assert signals["refusal_ratio"] == pytest.approx(2 / 3)


def test_flags_feed_buckets_end_to_end(judge):
    bucket = Bucket()
    for r in (record(status="ok", output={"text": "Here you go", "tokens": 3}),
              record(status="ok", output={"text": "I'm sorry, I can't help", "tokens": 6}),
              record(status="error", output={"text": "", "tokens": 0}),
              record(status="ok")):
        bucket.add(r, judge.flags(r))

    assert quality_signals(bucket) == pytest.approx(
        {"error_ratio": 0.25, "refusal_ratio": 1 / 3, "empty_output_ratio": 1 / 3})
