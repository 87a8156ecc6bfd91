"""Unit tests of monitor.pipeline.Pipeline: decode -> quality flags -> windows, with counters."""

from __future__ import annotations

import orjson
import pytest

from monitor.config import Config, WindowConfig
from monitor.errors import RecordError
from monitor.pipeline import DomainSnapshot, Pipeline, Snapshot
from monitor.state import StateChanges, StateStore, StoredState

BASE_MS = 1_764_359_649_000  # 2025-11-28T19:54:09Z


def raw(domain="legal", t_ms=BASE_MS, **fields) -> bytes:
    doc = {"schema_version": 1, "timestamp": t_ms, "domain": domain, "input": {"tokens": 10}}
    doc.update(fields)
    return orjson.dumps(doc)


class EventClock:
    def __init__(self, now: float = BASE_MS / 1000):
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_pipeline(config: Config | None = None, clock=None) -> Pipeline:
    return Pipeline(config or Config(), clock or EventClock())


def feed(pipeline: Pipeline, messages) -> list:
    return [pipeline.process(m) for m in messages]


def mixed_traffic() -> list[bytes]:
    messages = []
    for i in range(60):
        domain = ("legal", "support", "medical")[i % 3]
        messages.append(raw(domain, BASE_MS + i * 1000, status="error" if i % 10 == 0 else "ok",
                            latency_ms=100.0 + i,
                            output={"text": "I'm sorry, but no." if i % 7 == 0 else "Sure.", "tokens": 5,
                                    "mean_logprob": -0.5},
                            feedback={"score": 1.0}))
        if i % 9 == 0:
            messages.append(b"{not json")
        if i % 13 == 0:
            messages.append(raw(domain, "yesterday"))
    return messages


# -- counting ------------------------------------------------------------------

def test_accepted_and_rejected_records_are_counted():
    pipeline = make_pipeline()

    results = feed(pipeline, [raw("legal"), raw("legal"), raw("support"), b"[]", b"{bad",
                              raw(schema_version=2), raw(domain="no spaces")])

    assert results[:3] == [None, None, None]
    assert [e.reason for e in results[3:]] == ["not_object", "invalid_json",
                                               "unsupported_version", "bad_value"]
    assert all(isinstance(e, RecordError) for e in results[3:])
    assert pipeline.records_total == {"legal": 2, "support": 1}
    assert pipeline.rejected == {"not_object": 1, "invalid_json": 1, "unsupported_version": 1,
                                 "bad_value": 1}


def test_process_never_raises_on_a_bad_record():
    pipeline = make_pipeline()

    assert pipeline.process(None).reason == "invalid_json"
    assert pipeline.process(b"\xff").reason == "invalid_json"


def test_record_over_the_configured_size_limit_is_rejected_as_too_large():
    config = Config.model_validate({"records": {"max_bytes": 50}})
    pipeline = make_pipeline(config)

    error = pipeline.process(raw(request_id="x" * 100))

    assert error.reason == "too_large"


def test_late_record_is_rejected_and_counted_as_late():
    pipeline = make_pipeline()
    pipeline.process(raw(t_ms=BASE_MS))

    error = pipeline.process(raw(t_ms=BASE_MS - 301_000))

    assert error.reason == "late"
    assert pipeline.rejected == {"late": 1}
    assert pipeline.records_total == {"legal": 1}


def test_domain_over_the_limit_is_rejected_as_domain_limit():
    config = Config(windows=WindowConfig(max_domains=2))
    pipeline = make_pipeline(config)

    results = feed(pipeline, [raw("a"), raw("b"), raw("c"), raw("a")])

    assert results[2].reason == "domain_limit"
    assert pipeline.records_total == {"a": 2, "b": 1}
    assert pipeline.rejected == {"domain_limit": 1}


def test_rejected_record_leaves_window_state_untouched():
    pipeline = make_pipeline()
    feed(pipeline, [raw("legal", BASE_MS), raw("legal", BASE_MS + 70_000, latency_ms=200.0)])
    pipeline.take_changes({})
    before = pipeline.snapshot()
    watermark = pipeline.windows.domains["legal"].watermark

    feed(pipeline, [raw("legal", BASE_MS - 600_000),          # late
                    raw("legal", BASE_MS + 10**7, schema_version=2),
                    raw("legal", BASE_MS + 10**7, latency_ms=-1),
                    raw("legal", "2099-01-01T00:00:00"),      # naive timestamp
                    b"{oops"])
    changes = pipeline.take_changes({})

    assert changes.buckets == [] and changes.dropped_buckets == [] and changes.domains == {}
    assert pipeline.windows.domains["legal"].watermark == watermark
    after = pipeline.snapshot()
    assert after.domains == before.domains
    assert sum(after.rejected.values()) == 5


# -- state changes and restore ---------------------------------------------------

def test_take_changes_carries_offsets_counters_and_only_changed_reasons():
    pipeline = make_pipeline()
    feed(pipeline, [raw("legal"), b"{bad", b"[]"])

    first = pipeline.take_changes({("logs", 0): 3})
    pipeline.process(b"{bad again")
    second = pipeline.take_changes({("logs", 0): 4})

    assert isinstance(first, StateChanges)
    assert first.offsets == {("logs", 0): 3}
    assert first.domains == {"legal": (BASE_MS / 1000, 1)}
    assert first.rejected == {"invalid_json": 1, "not_object": 1}
    assert len(first.buckets) == 1
    assert second.rejected == {"invalid_json": 2}   # absolute, only the reason that changed
    assert second.buckets == [] and second.domains == {}
    assert second.offsets == {("logs", 0): 4}


def test_take_changes_copies_the_offsets():
    pipeline = make_pipeline()
    offsets = {("logs", 0): 1}

    changes = pipeline.take_changes(offsets)
    offsets[("logs", 0)] = 2

    assert changes.offsets == {("logs", 0): 1}


def _apply(stored: StoredState, changes: StateChanges) -> None:
    """What the state store does with a StateChanges, in memory."""
    for domain, start in changes.dropped_buckets:
        stored.buckets.get(domain, {}).pop(start, None)
    for domain, start, data in changes.buckets:
        stored.buckets.setdefault(domain, {})[start] = data
    for domain, (watermark, total) in changes.domains.items():
        stored.watermarks[domain] = watermark
        stored.records_total[domain] = total
    stored.rejected.update(changes.rejected)
    stored.offsets.update(changes.offsets)


def test_take_changes_and_restore_reproduce_the_pipeline():
    clock = EventClock()
    original = make_pipeline(clock=clock)
    stored = StoredState()
    messages = mixed_traffic()
    for i in range(0, len(messages), 17):  # several flushes, as the daemon does
        feed(original, messages[i:i + 17])
        clock.now = max(w.watermark for w in original.windows.domains.values())
        _apply(stored, original.take_changes({("logs", 0): i + 17}))

    restored = make_pipeline(clock=clock)
    restored.restore(stored)

    assert restored.records_total == original.records_total
    assert restored.rejected == original.rejected
    assert sum(restored.records_total.values()) == 60
    for domain in original.windows.domains:
        a, b = original.windows.summary(domain), restored.windows.summary(domain)
        assert (a.start, a.end, a.samples) == (b.start, b.end, b.samples)
    assert restored.snapshot().domains == original.snapshot().domains
    assert stored.offsets == {("logs", 0): 17 * ((len(messages) + 16) // 17)}


def test_take_changes_and_restore_through_a_real_state_store(tmp_path):
    clock = EventClock()
    original = make_pipeline(clock=clock)
    feed(original, mixed_traffic())
    store = StateStore(f"sqlite:///{tmp_path}/state.db")
    store.commit(original.take_changes({("logs", 0): 99}))

    restored = make_pipeline(clock=clock)
    restored.restore(store.load())
    store.close()

    assert restored.records_total == original.records_total
    assert restored.rejected == original.rejected
    assert restored.snapshot() == original.snapshot()


def test_restored_pipeline_keeps_counting_from_the_stored_totals():
    clock = EventClock()
    original = make_pipeline(clock=clock)
    feed(original, [raw("legal"), raw("legal"), b"{bad"])
    stored = StoredState()
    _apply(stored, original.take_changes({}))

    restored = make_pipeline(clock=clock)
    restored.restore(stored)
    feed(restored, [raw("legal", BASE_MS + 1000), b"{bad"])
    changes = restored.take_changes({})

    assert restored.records_total == {"legal": 3}
    assert changes.domains["legal"][1] == 3
    assert changes.rejected == {"invalid_json": 2}
    assert restored.snapshot().domains[0].samples == 3


def test_restored_watermark_still_rejects_late_records():
    clock = EventClock()
    original = make_pipeline(clock=clock)
    original.process(raw(t_ms=BASE_MS))
    stored = StoredState()
    _apply(stored, original.take_changes({}))

    restored = make_pipeline(clock=clock)
    restored.restore(stored)

    assert restored.process(raw(t_ms=BASE_MS - 400_000)).reason == "late"


# -- snapshot ------------------------------------------------------------------------

def test_snapshot_has_domains_sorted_with_quality_and_latency():
    pipeline = make_pipeline()
    feed(pipeline, mixed_traffic())

    snap = pipeline.snapshot(consumer_lag={("logs", 0): 12})

    assert isinstance(snap, Snapshot)
    assert [d.domain for d in snap.domains] == ["legal", "medical", "support"]
    assert all(isinstance(d, DomainSnapshot) for d in snap.domains)
    assert snap.accepted == 60
    assert snap.rejected == {"invalid_json": 7, "bad_timestamp": 5}
    assert snap.consumer_lag == {("logs", 0): 12}
    for d in snap.domains:
        assert d.records_total == 20
        assert d.samples == 20
        assert set(d.quality) == {"error_ratio", "refusal_ratio", "empty_output_ratio",
                                  "mean_logprob", "feedback_mean"}
        assert d.quality["mean_logprob"] == pytest.approx(-0.5)
        assert d.quality["feedback_mean"] == 1.0
        assert d.quality["empty_output_ratio"] == 0.0
        assert set(d.latency) == {0.5, 0.9, 0.95, 0.99}
        assert 0.1 <= d.latency[0.5] <= d.latency[0.9] <= d.latency[0.99] <= 0.17
    legal = snap.domains[0]
    # legal gets i = 0, 3, ..., 57: errors at i % 10 == 0 -> 0, 30; refusals at i % 7 == 0 -> 0, 21, 42
    assert legal.quality["error_ratio"] == pytest.approx(2 / 20)
    assert legal.quality["refusal_ratio"] == pytest.approx(3 / 20)


def test_snapshot_uses_the_configured_latency_quantiles():
    config = Config.model_validate({"quality": {"latency_quantiles": [0.25, 0.75]}})
    pipeline = make_pipeline(config)
    feed(pipeline, [raw(latency_ms=100.0), raw(latency_ms=300.0)])

    latency = pipeline.snapshot().domains[0].latency

    assert set(latency) == {0.25, 0.75}


def test_snapshot_without_latency_data_has_no_latency_quantiles():
    pipeline = make_pipeline()
    pipeline.process(raw())

    d = pipeline.snapshot().domains[0]

    assert d.latency == {}
    assert d.quality == {"error_ratio": 0.0}


def test_snapshot_is_immutable_and_independent_of_later_records():
    pipeline = make_pipeline()
    pipeline.process(raw())
    snap = pipeline.snapshot()

    pipeline.process(raw())
    pipeline.process(b"{bad")

    assert snap.accepted == 1
    assert snap.rejected == {}
    with pytest.raises(Exception):
        snap.domains = ()


def test_empty_pipeline_snapshot():
    snap = make_pipeline().snapshot()

    assert snap == Snapshot()
    assert snap.accepted == 0


def test_turning_semantic_drift_on_keeps_the_active_versions_already_read():
    """The daemon reads the registry (tagging each domain's first reference with its
    active version) before it loads the embedder; the new tracker must keep the tags,
    or a later rollback to that version finds no stored reference and rebuilds one."""
    pipeline = Pipeline(Config(), EventClock())
    pipeline.drift.versions["legal"] = "v1"

    pipeline.set_embedder(object())

    assert pipeline.drift.versions == {"legal": "v1"}
    assert pipeline._observe == pipeline.drift.observe
