"""Statistical acceptance of the drift decision (fixed seeds, default settings).

- Null streams: 5 domains x every feature (embedding included) x 500
  evaluations from the same distribution as the reference: at most 1% of
  domain-evaluations report drift.
- Injected shifts are detected within 3 windows of their onset: prompt length
  +30%, a new finish_reason at 10%, and a change of topic that leaves every
  length unchanged (only the embedding can see it).
- A huge window (200k records) with a tiny shift does not alarm, although the
  p-values alone would.

Records go through the real pipeline (decode, windows, sketches) in event
time, exactly as `monitor replay` runs it; embeddings come from the real
all-MiniLM-L6-v2 model, over a finite pool of prompts so each text is
embedded once.
"""

from __future__ import annotations

import pytest

from monitor.config import Config
from monitor.pipeline import Pipeline
from monitor.synthetic import PromptPool, Shape, scenario

START = 1_764_000_000.0
WINDOW = 900  # windows.length_seconds (default)
BASE = {f"d{i}": Shape(topic=topic, tokens_median=120 + 60 * i)
        for i, topic in enumerate(("legal", "support", "medical", "cooking", "sports"))}


@pytest.fixture(scope="module")
def embedder():
    from monitor.features.embeddings import load_embedder

    loaded = load_embedder(batch_size=64)
    if loaded is None:
        pytest.skip("the embedding model is not installed")
    return loaded


@pytest.fixture(scope="module")
def pool():
    return PromptPool(size=200, chars_median=250.0)


def run(records, embedder=None, **drift):
    """Feed records through a replay-style pipeline; return its evaluations."""
    config = Config(drift=drift)
    pipeline = Pipeline(config, clock=lambda: 0.0, reject_future=False, embedder=embedder,
                        event_time_evaluation=True)
    evaluations = []
    pipeline.on_evaluation = evaluations.append
    for raw in records:
        assert pipeline.process(raw) is None
    # As `monitor replay` does: a last evaluation at the end of the stream.
    pipeline.evaluate(at=max(w.watermark for w in pipeline.windows.domains.values()))
    return evaluations


def first_detection(evaluations, domain: str, feature: str) -> float | None:
    for evaluation in evaluations:
        for d in evaluation.decisions:
            if d.domain == domain and d.feature == feature and d.detected:
                return evaluation.at
    return None


def test_null_streams_alarm_in_at_most_one_percent_of_domain_evaluations(embedder, pool):
    reference_seconds = 5000  # drift.reference_records at 1 record/s per domain
    seconds = reference_seconds + WINDOW + 500 * 60
    evaluations = run(scenario(BASE, START, seconds, rate=1.0, seed=101, pool=pool), embedder)
    decided = [e for e in evaluations if e.at >= START + reference_seconds + WINDOW]
    assert len(decided) >= 500
    features = {d.feature for e in decided for d in e.decisions}
    assert "embedding" in features and {"prompt_tokens", "finish_reason", "status"} <= features
    domain_evaluations = alarms = 0
    for e in decided:
        by_domain: dict[str, bool] = {}
        for d in e.decisions:
            by_domain[d.domain] = by_domain.get(d.domain, False) or d.detected
        domain_evaluations += len(by_domain)
        alarms += sum(by_domain.values())
    assert domain_evaluations >= 5 * 500
    print(f"null streams: {alarms} alarm(s) in {domain_evaluations} domain-evaluations")
    assert alarms <= 0.01 * domain_evaluations, f"{alarms} of {domain_evaluations}"


def shifted(domain: str, onset: float, **change):
    shape = BASE[domain]
    fields = {**shape.__dict__, **change}
    return {domain: [(onset, Shape(**fields))]}


ONSET = START + 5000 + 2 * WINDOW  # reference built, then two healthy windows


def shift_run(changes, embedder=None, pool=None, seconds=ONSET - START + 4 * WINDOW):
    return run(scenario(BASE, START, seconds, rate=1.0, seed=202, changes=changes, pool=pool),
               embedder)


def test_a_thirty_percent_longer_prompt_is_detected_within_three_windows():
    evaluations = shift_run(shifted("d2", ONSET, tokens_median=BASE["d2"].tokens_median * 1.3))
    assert first_detection(evaluations, "d2", "prompt_tokens") <= ONSET + 3 * WINDOW
    assert first_detection(evaluations, "d2", "prompt_tokens") > ONSET
    for domain in ("d0", "d1", "d3", "d4"):
        assert first_detection(evaluations, domain, "prompt_tokens") is None


def test_a_new_finish_reason_at_ten_percent_is_detected_within_three_windows():
    evaluations = shift_run(shifted("d1", ONSET, finish=(("stop", 0.8), ("length", 0.1),
                                                          ("content_filter", 0.1))))
    at = first_detection(evaluations, "d1", "finish_reason")
    assert at is not None and ONSET < at <= ONSET + 3 * WINDOW
    last = evaluations[-1].decisions
    assert not any(d.detected for d in last if d.domain != "d1")


def test_a_topic_change_with_unchanged_lengths_is_seen_by_the_embedding_only(embedder, pool):
    evaluations = shift_run(shifted("d0", ONSET, topic="finance"), embedder, pool)
    at = first_detection(evaluations, "d0", "embedding")
    assert at is not None and ONSET < at <= ONSET + 3 * WINDOW
    for e in evaluations:
        for d in e.decisions:
            if d.detected:
                assert (d.domain, d.feature) == ("d0", "embedding"), d


def test_a_huge_window_with_a_tiny_shift_does_not_alarm():
    # A domain this busy has a big reference too: 50k records, then one window
    # of 200k records with 2% longer prompts, 12% instead of 10% "length"
    # finishes and 1.15% instead of 1% errors.
    rate = 200_000 / WINDOW
    onset = START + 50_000 / rate
    tiny = {"big": [(onset, Shape(tokens_median=306.0, error_rate=0.0115,
                                  finish=(("stop", 0.88), ("length", 0.12))))]}
    records = scenario({"big": Shape()}, START, onset - START + WINDOW + 30, rate=rate, seed=303,
                       changes=tiny)
    evaluations = run(records, reference_records=50_000, evaluation_interval_seconds=300)
    last = {d.feature: d for d in evaluations[-1].decisions}
    assert last["prompt_tokens"].samples >= 199_000
    assert not any(d.detected for e in evaluations for d in e.decisions)
    # The tests alone would alarm: the effect-size threshold is what holds them back.
    significant = [d for d in last.values() if d.pvalue is not None and d.pvalue < 1e-3]
    assert significant and all(d.reason == "small_effect" for d in significant)
    assert all(d.score < 0.02 for d in significant)
