"""Unit tests of monitor.windows.sketch: DriftSketch (deferred fold), WindowProfile and
window_profile."""

from __future__ import annotations

import heapq
import random

import numpy as np
import pytest

from monitor.config import DriftConfig
from monitor.drift.tracker import DriftTracker
from monitor.features import FeatureExtractor
from monitor.records import Record
from monitor.windows import Bucket
from monitor.windows.sketch import FOLD_AT, OTHER, DriftSketch, Layout, window_profile

FEATURES = FeatureExtractor()
TOKENS = FEATURES.numeric_names.index("prompt_tokens")
LATENCY = FEATURES.numeric_names.index("latency_seconds")
FINISH = FEATURES.categorical_names.index("finish_reason")
TOKEN_EDGES = np.array([50.0, 100.0, 150.0, 200.0])
LATENCY_EDGES = np.array([0.1, 0.5, 1.0])
TOKEN_MEAN = 120.0
LATENCY_MEAN = 0.4


def make_layout(k: int = 64, k_texts: int = 0, max_chars: int = 512, ref: str = "ref-1") -> Layout:
    numeric = ((TOKENS, TOKEN_EDGES, TOKEN_MEAN), (LATENCY, LATENCY_EDGES, LATENCY_MEAN))
    return Layout(ref, numeric=numeric, categorical=((FINISH, frozenset({"stop", "length"})),),
                  numeric_names=FEATURES.numeric_names,
                  categorical_names=FEATURES.categorical_names,
                  k=k, k_texts=k_texts, max_chars=max_chars, features=FEATURES)


def make_sketch(layout: Layout | None = None, seed: int = 0) -> DriftSketch:
    layout = layout or make_layout()
    return DriftSketch(layout.reference_id, layout, np.random.default_rng(seed))


def records(n: int, seed: int = 1, t0: float = 0.0, token_offset: int = 0, text: bool = True,
            none_every: int = 0) -> list[Record]:
    """`n` records with integer prompt tokens (some on the bin edges), latencies, finish reasons."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        tokens = token_offset + rng.choice((50, 100, 150, 200, rng.randint(0, 260)))
        latency = rng.choice((100.0, 500.0, rng.uniform(0.0, 1500.0)))
        finish = rng.choice(("stop", "stop", "length", "error", "content_filter"))
        if none_every and i % none_every == 0:
            tokens, latency, finish = None, None, None
        out.append(Record(t0 + i, "legal", prompt_tokens=tokens, latency_ms=latency,
                          finish_reason=finish,
                          input_text=f"prompt number {i} " * 3 if text else None))
    return out


class RecordingRng:
    """Wraps a numpy Generator and remembers the keys the sketch draws."""

    def __init__(self, seed: int = 0):
        self._rng = np.random.default_rng(seed)
        self.keys: list[float] = []

    def random(self, n):
        keys = self._rng.random(n)
        self.keys.extend(float(k) for k in keys)
        return keys


def direct_hist(values, edges) -> list[int]:
    v = np.array([x for x in values if x is not None], dtype=float)
    return np.bincount(np.searchsorted(edges, v, side="left"), minlength=len(edges) + 1).tolist()


# -- folding -------------------------------------------------------------------

def test_fold_bins_numeric_values_exactly_as_searchsorted_left():
    batch = records(3000, seed=3)
    sketch = make_sketch()
    for r in batch:
        sketch.add(FEATURES.raw(r))

    sketch.fold()

    tokens = [r.prompt_tokens for r in batch]
    latencies = [r.latency_ms / 1000.0 for r in batch]
    assert sketch.hist[0] == direct_hist(tokens, TOKEN_EDGES)
    assert sketch.hist[1] == direct_hist(latencies, LATENCY_EDGES)
    # values on an edge fall in the bin that edge closes (side="left")
    assert sum(1 for t in tokens if t == 50) > 0
    assert sketch.hist[0][0] == sum(1 for t in tokens if t <= 50)


def test_fold_bins_across_several_automatic_folds_like_one_direct_computation():
    batch = records(FOLD_AT * 2 + 123, seed=4)
    sketch = make_sketch()
    for r in batch:
        sketch.add(FEATURES.raw(r))
    assert len(sketch.pending) == 123  # two folds ran on their own

    sketch.fold()

    assert sketch.count == len(batch)
    assert sketch.hist[0] == direct_hist([r.prompt_tokens for r in batch], TOKEN_EDGES)


def test_moments_give_the_window_mean_and_std_within_1e_9():
    a, b = records(700, seed=5), records(1300, seed=6, t0=5000.0)
    sa, sb = make_sketch(seed=1), make_sketch(seed=2)
    for r in a:
        sa.add(FEATURES.raw(r))
    for r in b:
        sb.add(FEATURES.raw(r))

    profile = window_profile([sa, sb], make_layout())

    tokens = np.array([r.prompt_tokens for r in a + b], dtype=float)
    latencies = np.array([r.latency_ms / 1000.0 for r in a + b])
    mean, std = profile.mean_std(make_layout(), 0)
    assert mean == pytest.approx(tokens.mean(), abs=1e-9)
    assert std == pytest.approx(tokens.std(), abs=1e-9)
    mean, std = profile.mean_std(make_layout(), 1)
    assert mean == pytest.approx(latencies.mean(), abs=1e-9)
    assert std == pytest.approx(latencies.std(), abs=1e-9)


def test_mean_std_of_a_feature_without_values_is_none():
    sketch = make_sketch()
    sketch.add(FEATURES.raw(Record(0.0, "legal", input_text="no tokens, no latency")))

    profile = window_profile([sketch], make_layout())

    assert profile.mean_std(make_layout(), 0) is None


def test_categories_outside_the_vocabulary_count_as_other():
    batch = records(500, seed=7)
    sketch = make_sketch()
    for r in batch:
        sketch.add(FEATURES.raw(r))

    sketch.fold()

    finishes = [r.finish_reason for r in batch]
    assert sketch.cats[0] == {
        "stop": finishes.count("stop"),
        "length": finishes.count("length"),
        OTHER: finishes.count("error") + finishes.count("content_filter"),
    }


def test_none_values_are_skipped_in_histograms_moments_and_categories():
    batch = records(400, seed=8, none_every=4)
    sketch = make_sketch()
    for r in batch:
        sketch.add(FEATURES.raw(r))

    sketch.fold()

    present = [r for r in batch if r.prompt_tokens is not None]
    assert len(present) == 300
    assert sketch.count == 400
    assert sum(sketch.hist[0]) == sum(sketch.hist[1]) == 300
    assert sketch.hist[0] == direct_hist([r.prompt_tokens for r in batch], TOKEN_EDGES)
    assert sketch.moments[0][0] == 300
    assert sum(sketch.cats[0].values()) == 300


def test_the_reservoir_never_exceeds_k_and_holds_the_k_smallest_keys():
    layout = make_layout(k=16)
    rng = RecordingRng(seed=9)
    sketch = DriftSketch(layout.reference_id, layout, rng)
    batch = records(FOLD_AT + 1000, seed=9)
    for i, r in enumerate(batch):
        r.prompt_tokens = i  # identifies the record in the reservoir
        sketch.add(FEATURES.raw(r))
        if i % 997 == 0:
            sketch.fold()
            assert len(sketch.reservoir) <= 16

    sketch.fold()

    assert len(rng.keys) == len(batch)
    expected = sorted(range(len(batch)), key=lambda i: rng.keys[i])[:16]
    kept = sorted((-neg_key, numeric[TOKENS]) for neg_key, numeric, _ in sketch.reservoir)
    assert [int(t) for _, t in kept] == expected
    assert [key for key, _ in kept] == [rng.keys[i] for i in expected]


def test_the_text_reservoir_is_capped_and_cut_to_max_chars():
    layout = make_layout(k=8, k_texts=4, max_chars=10)
    sketch = make_sketch(layout)
    for r in records(300, seed=10):
        sketch.add(FEATURES.raw(r))

    sketch.fold()

    assert len(sketch.texts) == 4
    assert all(len(t) <= 10 and t.startswith("prompt") for _, t in sketch.texts)
    # the texts are those of the records with the smallest keys
    assert sorted(-k for k, _ in sketch.texts) == sorted(-k for k, _, _ in sketch.reservoir)[:4]


def test_texts_are_the_k_texts_smallest_keys_among_records_with_a_text():
    class Keys:
        def __init__(self, keys):
            self.keys = np.array(keys)

        def random(self, n):
            assert n == len(self.keys)
            return self.keys

    # 8 records without a text get the smallest keys, then 2 with a text
    keys = [0.01 * (i + 1) for i in range(8)] + [0.5, 0.6]
    layout = make_layout(k=4, k_texts=2)
    sketch = DriftSketch(layout.reference_id, layout, Keys(keys))
    for i in range(10):
        sketch.add(FEATURES.raw(Record(float(i), "legal", prompt_tokens=100,
                          input_text=None if i < 8 else f"text {i}")))

    sketch.fold()

    assert sorted(t for _, t in sketch.texts) == ["text 8", "text 9"]


def test_records_wait_in_pending_until_a_fold():
    sketch = make_sketch()
    batch = records(10, seed=11)
    for r in batch:
        sketch.add(FEATURES.raw(r))

    assert len(sketch.pending) == 10
    assert sketch.count == 0
    assert sum(sketch.hist[0]) == 0
    assert sketch.reservoir == []


def test_to_doc_folds_pending_records_first():
    sketch = make_sketch()
    for r in records(10, seed=11):
        sketch.add(FEATURES.raw(r))

    doc = sketch.to_doc()

    assert sketch.pending == []
    assert doc["count"] == 10
    assert sum(doc["hist"][0]) == 10
    assert len(doc["reservoir"]) == 10


def test_window_profile_folds_pending_records_first():
    sketch = make_sketch()
    for r in records(10, seed=11):
        sketch.add(FEATURES.raw(r))

    profile = window_profile([sketch], make_layout())

    assert sketch.pending == []
    assert profile.count == 10
    assert sum(profile.hist[0]) == 10
    assert len(profile.rows) == 10


def test_fold_without_pending_records_changes_nothing():
    sketch = make_sketch()
    for r in records(10, seed=11):
        sketch.add(FEATURES.raw(r))
    sketch.fold()
    before = sketch.to_doc()

    sketch.fold()

    assert sketch.to_doc() == before


# -- serialisation ---------------------------------------------------------------

def test_bucket_round_trip_keeps_the_drift_sketch():
    layout = make_layout(k=32, k_texts=8, max_chars=12)
    bucket = Bucket()
    bucket.drift = make_sketch(layout)
    for r in records(500, seed=12):
        bucket.add(r, (False, False, False, False))
        bucket.drift.add(FEATURES.raw(r))

    restored = Bucket.from_bytes(bucket.to_bytes())

    a, b = bucket.drift, restored.drift
    assert b is not None and b.layout is None
    assert b.reference_id == a.reference_id == "ref-1"
    assert b.count == a.count == 500
    assert b.hist == a.hist
    assert b.cats == a.cats
    assert b.moments == a.moments
    assert sorted(b.reservoir) == sorted(a.reservoir)
    assert sorted(b.texts) == sorted(a.texts)
    assert len(b.texts) == 8
    assert restored.count == 500
    assert b.to_doc() == a.to_doc()


def test_a_bucket_without_a_drift_sketch_round_trips_without_one():
    bucket = Bucket()
    bucket.add(Record(0.0, "legal", latency_ms=5.0), (False, False, False, False))

    assert Bucket.from_bytes(bucket.to_bytes()).drift is None


def test_a_restored_sketch_keeps_working_once_the_tracker_attaches_the_layout():
    def tracked_run(restore: bool) -> dict:
        tracker = DriftTracker(DriftConfig(reference_records=50, embeddings={"enabled": False}))
        for r in records(50, seed=13):
            tracker.observe(r, None)  # builds the reference
        assert "legal" in tracker.layouts
        bucket = Bucket()
        for r in records(300, seed=14, t0=1000.0):
            tracker.observe(r, bucket)
        raw = bucket.to_bytes()  # folds: the same keys are drawn in both runs
        if restore:
            bucket = Bucket.from_bytes(raw)
            assert bucket.drift.layout is None
        for r in records(300, seed=15, t0=2000.0):
            tracker.observe(r, bucket)
        assert bucket.drift.layout is tracker.layouts["legal"]
        return bucket.drift.to_doc()

    restored, straight = tracked_run(True), tracked_run(False)

    assert restored["count"] == 600
    assert sum(restored["hist"][0]) == 600
    assert restored == straight


# -- window_profile ----------------------------------------------------------------

def test_window_profile_merges_counts_across_buckets():
    layout = make_layout()
    a, b, c = make_sketch(seed=1), make_sketch(seed=2), make_sketch(seed=3)
    batches = (records(200, seed=16), records(50, seed=17), records(5, seed=18))
    for sketch, batch in zip((a, b, c), batches):
        for r in batch:
            sketch.add(FEATURES.raw(r))

    profile = window_profile([a, b, c], layout)

    everything = [r for batch in batches for r in batch]
    assert profile.reference_id == "ref-1"
    assert profile.count == 255
    assert profile.hist[0] == direct_hist([r.prompt_tokens for r in everything], TOKEN_EDGES)
    assert profile.hist[1] == [sum(x) for x in zip(a.hist[1], b.hist[1], c.hist[1])]
    finishes = [r.finish_reason for r in everything]
    stop, length = finishes.count("stop"), finishes.count("length")
    assert profile.cats[0] == {"stop": stop, "length": length, OTHER: len(finishes) - stop - length}
    assert profile.moments[0][0] == 255
    assert profile.moments[0][1] == pytest.approx(sum(s.moments[0][1] for s in (a, b, c)))


def test_window_profile_of_no_sketches_is_empty():
    profile = window_profile([], make_layout())

    assert profile.count == 0
    assert profile.hist == [[0] * 5, [0] * 4]
    assert profile.rows == [] and profile.texts == []


def test_window_sample_takes_a_share_proportional_to_each_buckets_traffic():
    layout = make_layout(k=64, k_texts=8)
    busy, quiet = make_sketch(layout, seed=1), make_sketch(layout, seed=2)
    for r in records(5000, seed=19):
        busy.add(FEATURES.raw(r))
    for r in records(500, seed=20, token_offset=10_000):  # tokens >= 10000 mark the quiet bucket
        quiet.add(FEATURES.raw(r))

    profile = window_profile([busy, quiet], layout)

    from_quiet = sum(1 for numeric, _ in profile.rows if numeric[TOKENS] >= 10_000)
    from_busy = len(profile.rows) - from_quiet
    assert (from_busy, from_quiet) == (64, round(64 / 5000 * 500))
    assert 9 <= from_busy / from_quiet <= 12
    # texts follow the same rule
    assert len(profile.texts) == 8 + round(8 / 5000 * 500)


def test_window_sample_takes_the_smallest_keys_of_each_bucket():
    layout = make_layout(k=10)
    busy, quiet = make_sketch(layout, seed=1), make_sketch(layout, seed=2)
    for r in records(100, seed=21):
        busy.add(FEATURES.raw(r))
    for r in records(50, seed=22):
        quiet.add(FEATURES.raw(r))

    profile = window_profile([busy, quiet], layout)

    assert len(profile.rows) == 10 + 5
    smallest_quiet = [(n, c) for _, n, c in heapq.nlargest(5, quiet.reservoir)]
    assert profile.rows[10:] == smallest_quiet


def test_values_reads_the_sampled_values_of_a_numeric_feature():
    layout = make_layout(k=500)
    sketch = make_sketch(layout)
    batch = records(200, seed=23, none_every=5)
    for r in batch:
        sketch.add(FEATURES.raw(r))

    profile = window_profile([sketch], layout)

    assert sorted(profile.values(layout, 0)) == sorted(
        float(r.prompt_tokens) for r in batch if r.prompt_tokens is not None)


# -- memory bound ---------------------------------------------------------------------

def test_a_sketch_stays_bounded_whatever_the_record_count():
    layout = make_layout(k=64, k_texts=8, max_chars=64)

    def fed(n: int) -> DriftSketch:
        sketch = make_sketch(layout, seed=n)
        template = records(1000, seed=24)
        for i in range(n):
            sketch.add(FEATURES.raw(template[i % 1000]))
        sketch.fold()
        return sketch

    small, large = fed(10_000), fed(100_000)

    assert large.count == 100_000
    assert len(large.reservoir) <= 64
    assert len(large.texts) <= 8
    assert [len(h) for h in large.hist] == [len(h) for h in small.hist] == [5, 4]
    assert len(large.cats[0]) <= 3
    size_small = len(Bucket.from_bytes(_bucket_bytes(small)).to_bytes())
    size_large = len(_bucket_bytes(large))
    assert size_large < 20_000
    assert abs(size_large - size_small) <= 0.1 * size_small


def _bucket_bytes(sketch: DriftSketch) -> bytes:
    bucket = Bucket()
    bucket.drift = sketch
    return bucket.to_bytes()
