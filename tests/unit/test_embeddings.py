"""Unit tests of sentence embeddings (monitor.eval.embedding), their cache and
loader (monitor.features.embeddings), and the synthetic prompts that exercise them."""

from __future__ import annotations

import logging
import random
import subprocess
import sys

import numpy as np
import pytest

from monitor.features.embeddings import CachedEmbedder, Embedder, load_embedder
from monitor.synthetic_prompts import TOPICS, prompt

# -- the real model (skipped without the `embeddings` extra) -------------------

@pytest.fixture(scope="module")
def embedder():
    from monitor.eval.embedding import SentenceEmbedder, available

    ok, reason = available()
    if not ok:
        pytest.skip(reason)
    return SentenceEmbedder(batch_size=4, max_length=128)


def test_embeddings_are_unit_norm_float32_rows_of_384(embedder):
    texts = ["The tenant broke the lease.", "Preheat the oven to 200 degrees.",
             "Reset my password."]

    vectors = embedder.embed(texts)

    assert embedder.dimension == 384
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_embedding_the_same_texts_twice_gives_the_same_vectors(embedder):
    texts = ["Is a non-compete clause enforceable?", "How do I appeal a court ruling?"]

    np.testing.assert_allclose(embedder.embed(texts), embedder.embed(texts), atol=1e-6)


def test_rows_follow_the_input_order_when_lengths_differ_across_batches(embedder):
    rng = random.Random(3)
    texts = [prompt(rng, topic, chars) for topic, chars in
             [("legal", 30), ("cooking", 300), ("sports", 90), ("finance", 200), ("medical", 12),
              ("support", 150), ("legal", 400)]]  # 7 texts, batch_size 4: two sorted batches

    together = embedder.embed(texts)
    one_by_one = np.vstack([embedder.embed([text]) for text in texts])

    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_similar_sentences_are_closer_than_unrelated_ones(embedder):
    a, b, c = embedder.embed(["How do I reset my account password?",
                              "I forgot my login password, how can I change it?",
                              "Simmer the tomato sauce with garlic for twenty minutes."])

    assert a @ b > a @ c + 0.3
    assert a @ b > b @ c + 0.3


def test_embedding_no_texts_gives_an_empty_matrix(embedder):
    assert embedder.embed([]).shape == (0, 384)


def test_a_single_string_is_refused_rather_than_embedded_letter_by_letter(embedder):
    with pytest.raises(ValueError, match="list of texts"):
        embedder.embed("hello")


# -- the cache, with a fake model ----------------------------------------------

class FakeEmbedder:
    """Deterministic vectors from the text; records every call."""

    dimension = 4

    def __init__(self):
        self.calls: list[list[str]] = []

    def embed(self, texts):
        self.calls.append(list(texts))
        return np.array([vector(t) for t in texts], dtype=np.float32)


def vector(text):
    return np.array([len(text), ord(text[0]) if text else 0, 1.0, 1.0], dtype=np.float32)


def test_the_cache_embeds_only_texts_it_has_not_seen_in_one_call():
    fake = FakeEmbedder()
    cached = CachedEmbedder(fake, capacity=10)

    cached.embed(["alpha", "beta"])
    texts = ["beta", "gamma", "alpha", "delta", "gamma"]
    out = cached.embed(texts)

    assert fake.calls == [["alpha", "beta"], ["gamma", "delta"]]
    np.testing.assert_array_equal(out, [vector(t) for t in texts])
    assert (cached.hits, cached.misses) == (2, 4)


def test_a_fully_cached_batch_never_calls_the_model():
    fake = FakeEmbedder()
    cached = CachedEmbedder(fake)
    cached.embed(["x", "y"])

    cached.embed(["y", "x", "y"])

    assert fake.calls == [["x", "y"]]


def test_the_cache_evicts_the_least_recently_used_text_beyond_its_capacity():
    fake = FakeEmbedder()
    cached = CachedEmbedder(fake, capacity=2)
    cached.embed(["a", "b"])
    cached.embed(["a"])            # a is now the most recent
    cached.embed(["c"])            # evicts b

    cached.embed(["a", "b", "c"])

    assert len(cached) == 2
    assert fake.calls[-1] == ["b"]


def test_a_batch_larger_than_the_cache_still_comes_back_whole_and_in_order():
    cached = CachedEmbedder(FakeEmbedder(), capacity=2)
    texts = ["one", "two", "three", "four", "five"]

    out = cached.embed(texts)

    np.testing.assert_array_equal(out, [vector(t) for t in texts])
    assert len(cached) == 2


def test_the_cache_satisfies_the_embedder_protocol_and_handles_no_texts():
    cached = CachedEmbedder(FakeEmbedder())

    assert isinstance(cached, Embedder) and cached.dimension == 4
    assert cached.embed([]).shape == (0, 4)


def test_a_cache_of_no_vectors_is_refused():
    with pytest.raises(ValueError, match="capacity"):
        CachedEmbedder(FakeEmbedder(), capacity=0)


# -- loading -------------------------------------------------------------------

def test_without_the_model_the_loader_warns_once_and_turns_semantic_drift_off(monkeypatch, caplog):
    from monitor.eval import embedding

    monkeypatch.setattr(embedding, "available", lambda: (False, "torch is not importable"))
    built = []
    monkeypatch.setattr(embedding, "SentenceEmbedder", lambda **kw: built.append(kw))

    with caplog.at_level(logging.WARNING):
        result = load_embedder()

    assert result is None and built == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == ["semantic drift is off: torch is not importable"]


def test_with_the_model_the_loader_wraps_it_in_a_cache(monkeypatch):
    from monitor.eval import embedding

    monkeypatch.setattr(embedding, "available", lambda: (True, "ok"))
    monkeypatch.setattr(embedding, "SentenceEmbedder", lambda **kw: FakeEmbedder())

    assert isinstance(load_embedder(), CachedEmbedder)


def test_importing_the_embedding_features_does_not_import_torch():
    code = ("import sys, monitor.features.embeddings, monitor.eval, monitor.eval.embedding; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")

    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- synthetic prompts ---------------------------------------------------------

def test_prompts_have_exactly_the_length_asked_for():
    rng = random.Random(0)
    for chars in [0, 1, 2, 7, 40, 99, 400, 1000]:
        for topic in TOPICS:
            assert len(prompt(rng, topic, chars)) == chars


def test_prompts_are_deterministic_for_a_seed():
    first = [prompt(random.Random(42), "legal", 300) for _ in range(2)]
    other = prompt(random.Random(43), "legal", 300)

    assert first[0] == first[1] != other


def test_different_topics_use_different_words():
    def words(topic):
        rng = random.Random(1)
        return {w.strip(".,?").lower() for _ in range(50) for w in prompt(rng, topic, 400).split()}

    legal, cooking = words("legal"), words("cooking")

    assert {"contract", "plaintiff", "liability"} & legal and not {"oven", "garlic"} & legal
    assert {"oven", "garlic", "recipe"} & cooking and not {"plaintiff", "contract"} & cooking
    assert len(legal & cooking) < 0.5 * min(len(legal), len(cooking))


def test_an_unknown_topic_or_a_negative_length_is_refused():
    with pytest.raises(ValueError, match="unknown topic"):
        prompt(random.Random(0), "astrology", 10)
    with pytest.raises(ValueError, match="non-negative"):
        prompt(random.Random(0), "legal", -1)


def wait_for(condition, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_background_embedder_queues_unseen_texts_and_serves_them_once_embedded():
    from monitor.features.embeddings import BackgroundEmbedder

    fake = FakeEmbedder()
    background = BackgroundEmbedder(CachedEmbedder(fake), batch_size=2)
    try:
        assert background.ready(["a", "b", "c"]) is None
        wait_for(lambda: background.ready(["a", "b", "c"]) is not None)
        rows = background.ready(["c", "a"])
        assert np.allclose(rows, np.stack([vector("c"), vector("a")]))
        assert sorted(t for call in fake.calls for t in call) == ["a", "b", "c"]
    finally:
        background.close()


def test_the_background_embedder_serves_a_partial_window_while_the_newest_texts_wait():
    from monitor.features.embeddings import BackgroundEmbedder

    background = BackgroundEmbedder(CachedEmbedder(FakeEmbedder()))
    try:
        background.embed(["old-1", "old-2"])  # embedded at an earlier evaluation
        rows = background.ready(["old-1", "new", "old-2"], partial=True)
        assert rows.shape == (2, FakeEmbedder.dimension)
        assert np.allclose(rows, np.stack([vector("old-1"), vector("old-2")]))
        wait_for(lambda: background.ready(["new"]) is not None)
    finally:
        background.close()


def test_drift_in_the_daemon_reports_the_embedding_once_its_texts_are_embedded():
    from monitor.config import Config
    from monitor.features.embeddings import BackgroundEmbedder
    from monitor.pipeline import Pipeline
    from monitor.synthetic import PromptPool, Shape, scenario

    background = BackgroundEmbedder(CachedEmbedder(FakeEmbedder()))
    try:
        config = Config(drift={"reference_records": 200, "min_samples": 50,
                               "embeddings": {"min_texts": 5}})
        pipeline = Pipeline(config, clock=lambda: 0.0, reject_future=False, embedder=background)
        for raw in scenario({"legal": Shape()}, 1_764_000_000.0, 1200, rate=1.0,
                            pool=PromptPool(size=50, chars_median=80.0)):
            pipeline.process(raw)
        at = 1_764_000_000.0 + 1200
        first = pipeline.evaluate(at=at)
        assert "embedding" not in {d.feature for d in first.decisions}  # reference still queued
        wait_for(lambda: background.backlog == 0 and not background._queued)
        second = pipeline.evaluate(at=at)
        assert "embedding" in {d.feature for d in second.decisions}
    finally:
        background.close()
