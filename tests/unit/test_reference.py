"""Unit tests of monitor.drift.reference: ReferenceBuilder and Reference."""

from __future__ import annotations

import random
import re

import numpy as np
import orjson
import pytest

from monitor.drift.reference import Reference, ReferenceBuilder
from monitor.features import FeatureExtractor
from monitor.timestamps import rfc3339
from monitor.windows.sketch import OTHER

FEATURES = FeatureExtractor(attributes=["language"])
NUMERIC = FEATURES.numeric_names
CATEGORICAL = FEATURES.categorical_names
START = 1_764_359_649.0  # 2025-11-28T19:54:09Z
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def builder(**kwargs) -> ReferenceBuilder:
    kwargs.setdefault("limit", None)
    return ReferenceBuilder("legal", kwargs.pop("version", "v1"), NUMERIC, CATEGORICAL, **kwargs)


def rows(n: int, seed: int = 0):
    """(numeric, categorical, text) rows in the FeatureExtractor's orders; only
    prompt_tokens, latency_seconds, finish_reason and attributes.language are present."""
    rng = random.Random(seed)
    for i in range(n):
        numeric = [None] * len(NUMERIC)
        numeric[NUMERIC.index("prompt_tokens")] = float(max(1, int(rng.gauss(300, 60))))
        numeric[NUMERIC.index("latency_seconds")] = round(rng.lognormvariate(0, 0.4), 3)
        categorical = [None] * len(CATEGORICAL)
        categorical[CATEGORICAL.index("finish_reason")] = rng.choice(("stop", "stop", "length"))
        categorical[CATEGORICAL.index("attributes.language")] = rng.choice(("en", "en", "de", "fr"))
        yield tuple(numeric), tuple(categorical), f"prompt {i}"


def built(n: int = 500, seed: int = 0, built_at: float = START + 10_000, **kwargs) -> Reference:
    b = builder(**kwargs)
    keys = random.Random(seed + 1)
    for i, (numeric, categorical, text) in enumerate(rows(n, seed)):
        b.add(numeric, categorical, text, START + i, key=keys.random())
    return b.build(built_at=built_at, source="auto")


# -- numeric profiles ------------------------------------------------------------------

@pytest.mark.parametrize("bins", [2, 5, 10, 37])
def test_edges_are_the_unique_quantiles_including_min_and_max(bins):
    ref = built(400, bins=bins)

    values = np.array([r[0][NUMERIC.index("prompt_tokens")] for r in rows(400)])
    profile = ref.numeric["prompt_tokens"]
    expected = np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)))
    assert profile.edges == expected.tolist()
    assert profile.edges[0] == values.min() and profile.edges[-1] == values.max()
    assert len(profile.counts) == len(profile.edges) + 1
    assert all(type(e) is float for e in profile.edges)


def test_counts_sum_to_the_number_of_values_and_follow_searchsorted_left():
    ref = built(400, bins=10)

    values = np.array([r[0][NUMERIC.index("latency_seconds")] for r in rows(400)])
    profile = ref.numeric["latency_seconds"]
    assert sum(profile.counts) == profile.count == 400
    assert profile.counts == np.bincount(np.searchsorted(profile.edges, values, side="left"),
                                         minlength=len(profile.edges) + 1).tolist()
    assert profile.counts[-1] == 0  # nothing lies above the reference's maximum
    assert profile.mean == pytest.approx(values.mean())
    assert profile.std == pytest.approx(values.std())


def test_repeated_values_give_fewer_edges_than_bins():
    b = builder(bins=10)
    # 101 values: the deciles fall on positions 0, 10, ..., 100 exactly (no interpolation)
    for i, v in enumerate([1.0] * 51 + [2.0] * 50):
        numeric = [None] * len(NUMERIC)
        numeric[0] = v
        b.add(tuple(numeric), (None,) * len(CATEGORICAL), None, START + i, key=i / 101)

    profile = b.build(built_at=START, source="auto").numeric["prompt_tokens"]

    assert profile.edges == [1.0, 2.0]
    assert profile.counts == [51, 50, 0]


def test_features_with_fewer_than_two_values_are_left_out():
    b = builder()
    for i in range(10):
        numeric = [None] * len(NUMERIC)
        numeric[NUMERIC.index("prompt_tokens")] = float(i)
        if i == 3:
            numeric[NUMERIC.index("feedback_score")] = 1.0  # one value only
        categorical = [None] * len(CATEGORICAL)
        categorical[0] = "stop"
        b.add(tuple(numeric), tuple(categorical), None, START + i, key=i / 10)

    ref = b.build(built_at=START, source="auto")

    assert set(ref.numeric) == {"prompt_tokens"}
    assert set(ref.categorical) == {"finish_reason"}  # status / language: no values at all


def test_a_reference_needs_at_least_two_records():
    b = builder()
    numeric, categorical, text = next(rows(1))
    b.add(numeric, categorical, text, START, key=0.5)

    with pytest.raises(ValueError, match="at least 2 records"):
        b.build(built_at=START, source="auto")


def test_builder_is_full_at_its_limit():
    b = builder(limit=3)
    for i, (numeric, categorical, text) in enumerate(rows(3)):
        assert not b.full
        b.add(numeric, categorical, text, START + i, key=0.1)

    assert b.full and b.count == 3
    assert not builder(limit=None).full


# -- categorical profiles -----------------------------------------------------------

def test_vocabulary_is_capped_at_max_categories_with_the_rest_in_other():
    b = builder(max_categories=3)
    values = ["a"] * 40 + ["b"] * 30 + ["c"] * 20 + ["d"] * 20 + ["e"] * 5 + ["f"] * 1
    for i, v in enumerate(values):
        categorical = [None] * len(CATEGORICAL)
        categorical[0] = v
        b.add((float(i),) + (None,) * (len(NUMERIC) - 1), tuple(categorical), None, START + i,
              key=0.5)

    profile = b.build(built_at=START, source="auto").categorical["finish_reason"]

    # ties are broken by name: "c" before "d"
    assert profile.counts == {"a": 40, "b": 30, "c": 20, OTHER: 26}
    assert profile.count == len(values) == sum(profile.counts.values())


def test_other_is_present_and_zero_when_every_value_fits():
    ref = built(100, max_categories=32)

    assert ref.categorical["finish_reason"].counts[OTHER] == 0
    assert set(ref.categorical["attributes.language"].counts) == {"en", "de", "fr", OTHER}


# -- samples and texts ------------------------------------------------------------

def test_sample_is_capped_at_sample_size_and_taken_from_the_values():
    ref = built(500, sample_size=100)

    values = {r[0][NUMERIC.index("prompt_tokens")] for r in rows(500)}
    sample = ref.numeric["prompt_tokens"].sample
    assert len(sample) == 100
    assert set(sample) <= values
    assert len(ref.numeric["latency_seconds"].sample) == 100


def test_sample_keeps_every_value_below_sample_size():
    ref = built(50, sample_size=100)

    assert sorted(ref.numeric["prompt_tokens"].sample) == sorted(
        r[0][NUMERIC.index("prompt_tokens")] for r in rows(50))


def test_sample_is_deterministic_for_a_seed():
    a = built(500, sample_size=100, seed=0)
    b = built(500, sample_size=100, seed=0)
    other_seed = builder(sample_size=100, seed=1)
    for i, (numeric, categorical, text) in enumerate(rows(500)):
        other_seed.add(numeric, categorical, text, START + i, key=0.5)
    c = other_seed.build(built_at=START + 10_000, source="auto")

    assert a.numeric["prompt_tokens"].sample == b.numeric["prompt_tokens"].sample
    assert a.numeric["prompt_tokens"].sample != c.numeric["prompt_tokens"].sample


def test_texts_are_the_n_with_the_smallest_keys_cut_to_max_chars():
    b = builder(texts=3, max_chars=4)
    keys = [0.9, 0.2, 0.7, 0.1, 0.5, 0.3]
    for i, key in enumerate(keys):
        numeric, categorical, _ = next(rows(1, seed=i))
        b.add(numeric, categorical, f"t{i}-long text", START + i, key=key)

    ref = b.build(built_at=START, source="auto")

    assert ref.texts == ["t3-l", "t1-l", "t5-l"]  # keys 0.1, 0.2, 0.3


def test_no_texts_are_kept_when_texts_is_zero():
    assert built(50, texts=0).texts == []


# -- the Reference ------------------------------------------------------------------

def test_reference_records_its_extent_and_count():
    ref = built(300, built_at=START + 9_999)

    assert (ref.domain, ref.version, ref.source) == ("legal", "v1", "auto")
    assert (ref.start, ref.end, ref.count, ref.built_at) == (START, START + 299, 300, START + 9_999)


def test_to_bytes_from_bytes_round_trips_to_an_equal_reference():
    ref = built(300, texts=20)

    again = Reference.from_bytes(ref.to_bytes())

    assert again == ref
    assert again.id == ref.id
    assert again.numeric["prompt_tokens"].edges == ref.numeric["prompt_tokens"].edges
    assert again.texts == ref.texts and len(again.texts) == 20


def test_id_is_derived_from_the_content():
    a, b = built(300), built(300)
    different_data = built(301)
    different_time = built(300, built_at=START + 1)
    different_version = built(300, version="v2")

    assert a.id == b.id
    assert len(a.id) == 16 and re.fullmatch(r"[0-9a-f]{16}", a.id)
    assert len({a.id, different_data.id, different_time.id, different_version.id}) == 4


def test_id_survives_a_round_trip_and_matches_a_recomputation():
    ref = built(300)
    fields = {k: v for k, v in Reference.from_bytes(ref.to_bytes()).__dict__.items() if k != "id"}

    assert Reference(**fields).id == ref.id


def test_summary_is_json_serialisable_with_rfc3339_times():
    ref = built(300, texts=10)

    summary = orjson.loads(orjson.dumps(ref.summary()))

    assert summary["id"] == ref.id
    assert summary["records"] == 300
    assert summary["time_range"] == [rfc3339(ref.start), rfc3339(ref.end)]
    assert summary["time_range"][0] == "2025-11-28T19:54:09.000Z"
    assert all(RFC3339.fullmatch(t) for t in summary["time_range"] + [summary["built_at"]])
    tokens = summary["numeric"]["prompt_tokens"]
    assert tokens["min"] == ref.numeric["prompt_tokens"].edges[0]
    assert tokens["max"] == ref.numeric["prompt_tokens"].edges[-1]
    assert tokens["bins"] == len(ref.numeric["prompt_tokens"].counts)
    shares = summary["categorical"]["finish_reason"]["shares"]
    assert sum(shares.values()) == pytest.approx(1.0)
    assert OTHER not in shares  # zero shares are left out
    assert summary["texts"] == 10


def test_layout_maps_features_to_their_indices_and_omits_missing_ones():
    ref = built(300, texts=5)

    layout = ref.layout(FEATURES, k=32, k_texts=8, max_chars=100)

    assert layout.reference_id == ref.id
    assert [i for i, _, _ in layout.numeric] == [NUMERIC.index("prompt_tokens"),
                                                 NUMERIC.index("latency_seconds")]
    for i, edges, mean in layout.numeric:
        profile = ref.numeric[NUMERIC[i]]
        assert list(edges) == profile.edges
        assert mean == profile.mean
    assert [(i, set(v)) for i, v in layout.categorical] == [
        (CATEGORICAL.index("finish_reason"), {"stop", "length"}),
        (CATEGORICAL.index("attributes.language"), {"en", "de", "fr"}),
    ]
    assert layout.numeric_names == NUMERIC and layout.categorical_names == CATEGORICAL
    assert (layout.k, layout.k_texts, layout.max_chars) == (32, 8, 100)
    assert layout.features is FEATURES


def test_layout_caps_k_texts_at_k_and_has_none_without_reference_texts():
    with_texts, without = built(100, texts=5), built(100, texts=0)

    assert with_texts.layout(FEATURES, k=4, k_texts=8, max_chars=10).k_texts == 4
    assert without.layout(FEATURES, k=64, k_texts=8, max_chars=10).k_texts == 0


def test_layout_for_an_extractor_without_an_attribute_leaves_it_out():
    ref = built(100)

    layout = ref.layout(FeatureExtractor(), k=8, k_texts=0, max_chars=10)

    assert [i for i, _ in layout.categorical] == [0]  # finish_reason only
