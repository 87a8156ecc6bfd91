"""Drift through monitor.pipeline.Pipeline: references built from the first records,
their storage and restore, event-time evaluation, the snapshot and the exporter."""

from __future__ import annotations

import math
import random

import orjson
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import Config
from monitor.exporter import SnapshotHolder, make_registry
from monitor.pipeline import Pipeline
from monitor.state import StateStore

BASE = 1_764_359_649.0  # 2025-11-28T19:54:09Z, 9 s past a multiple of 60
REFERENCE_RECORDS = 100
INTERVAL = 60


def drift_config(**drift) -> Config:
    settings = {"reference_records": REFERENCE_RECORDS, "min_samples": 50,
                "evaluation_interval_seconds": INTERVAL, "reservoir_per_bucket": 32,
                "embeddings": {"enabled": False}}
    settings.update(drift)
    return Config(drift=settings)


def raw(domain: str, t: float, rng: random.Random, shift: float = 0.0) -> bytes:
    tokens = max(1, int(rng.gauss(300 + shift, 40)))
    return orjson.dumps({
        "schema_version": 1, "timestamp": int(t * 1000), "domain": domain,
        "input": {"text": "q" * (tokens // 4), "tokens": tokens},
        "output": {"text": "Sure.", "tokens": int(rng.gauss(50, 5)),
                   "finish_reason": "length" if shift and rng.random() < 0.7 else "stop",
                   "mean_logprob": rng.gauss(-0.7, 0.1)},
        "latency_ms": rng.lognormvariate(0, 0.3) * (800.0 + 4 * shift),
        "status": "ok",
    })


def traffic(n: int, seed: int = 0, start: float = BASE, shift_support_after: int | None = None):
    """`n` messages, two per second, alternating legal / support; support's prompts
    grow by 200 tokens once it has sent `shift_support_after` records."""
    rng = random.Random(seed)
    for i in range(n):
        domain = ("legal", "support")[i % 2]
        shifted = (domain == "support" and shift_support_after is not None
                   and i // 2 >= shift_support_after)
        yield raw(domain, start + i / 2, rng, shift=200.0 if shifted else 0.0)


class EventClock:
    """The replay clock: the latest event time the pipeline has seen."""

    def __init__(self):
        self.pipeline = None

    def __call__(self) -> float:
        return max((w.watermark for w in self.pipeline.windows.domains.values()),
                   default=-math.inf)


def make_pipeline(config: Config, event_time_evaluation: bool = False) -> Pipeline:
    clock = EventClock()
    pipeline = Pipeline(config, clock, reject_future=False,
                        event_time_evaluation=event_time_evaluation)
    clock.pipeline = pipeline
    return pipeline


def feed(pipeline: Pipeline, messages) -> None:
    for m in messages:
        assert pipeline.process(m) is None


# -- references ----------------------------------------------------------------------

def test_a_domains_reference_is_built_after_exactly_reference_records_accepted_records():
    pipeline = make_pipeline(drift_config())
    rng = random.Random(1)
    legal = [raw("legal", BASE + i, rng) for i in range(REFERENCE_RECORDS)]

    for i, message in enumerate(legal[:-1]):
        assert pipeline.process(message) is None
        if i % 10 == 0:  # rejected records and other domains do not count
            assert pipeline.process(b"{not json") is not None
            assert pipeline.process(raw("support", BASE + i, rng)) is None
    assert "legal" not in pipeline.drift.references
    assert pipeline.drift.builders["legal"].count == REFERENCE_RECORDS - 1

    pipeline.process(legal[-1])

    reference = pipeline.drift.references["legal"]
    assert reference.count == REFERENCE_RECORDS
    assert (reference.start, reference.end) == (BASE, BASE + REFERENCE_RECORDS - 1)
    assert reference.source == "auto"
    assert "support" not in pipeline.drift.references
    assert "legal" not in pipeline.drift.builders


def test_the_records_after_the_reference_are_sketched_against_it():
    pipeline = make_pipeline(drift_config())
    feed(pipeline, traffic(2 * REFERENCE_RECORDS + 60))

    reference_id = pipeline.drift.references["legal"].id
    sketches = [b.drift for b in pipeline.windows.buckets("legal") if b.drift is not None]
    assert sketches and all(s.reference_id == reference_id for s in sketches)
    for s in sketches:
        s.fold()
    assert sum(s.count for s in sketches) == 30  # the records after the first 100


def test_take_changes_carries_a_new_reference_once():
    pipeline = make_pipeline(drift_config())
    feed(pipeline, traffic(2 * REFERENCE_RECORDS + 10))

    first = pipeline.take_changes({("logs", 0): 210})
    second = pipeline.take_changes({("logs", 0): 210})

    assert sorted(r.domain for r in first.references) == ["legal", "support"]
    assert {r.domain: r for r in first.references} == pipeline.drift.references
    assert second.references == []


def test_a_committed_reference_loads_back_as_the_active_one():
    pipeline = make_pipeline(drift_config())
    feed(pipeline, traffic(2 * REFERENCE_RECORDS + 10))
    store = StateStore("sqlite://")

    store.commit(pipeline.take_changes({("logs", 0): 210}))
    stored = store.load()

    assert stored.references == pipeline.drift.references
    assert store.active_reference_ids() == {d: r.id for d, r in pipeline.drift.references.items()}
    store.close()


def test_a_reference_set_meanwhile_is_not_overwritten_by_one_built_from_the_first_records():
    # `monitor reference build` ran while the daemon was still collecting legal's records.
    pipeline = make_pipeline(drift_config())
    store = StateStore("sqlite://")
    by_file = make_pipeline(drift_config())
    feed(by_file, traffic(2 * REFERENCE_RECORDS + 10, seed=9))
    from_file = by_file.drift.references["legal"]
    store.save_reference(from_file)

    feed(pipeline, traffic(2 * REFERENCE_RECORDS + 10))
    store.commit(pipeline.take_changes({("logs", 0): 210}))

    active = store.active_reference_ids()
    assert active["legal"] == from_file.id  # kept
    assert active["support"] == pipeline.drift.references["support"].id  # nobody else set one
    store.close()


def test_a_new_active_version_gets_its_own_reference_which_replaces_the_old_one():
    pipeline = make_pipeline(drift_config())
    feed(pipeline, traffic(2 * REFERENCE_RECORDS + 10))
    store = StateStore("sqlite://")
    store.commit(pipeline.take_changes({("logs", 0): 210}))
    old = pipeline.drift.references["legal"]

    pipeline.drift.activate("legal", "v2")  # the registry's hook
    assert "legal" not in pipeline.drift.references
    feed(pipeline, traffic(2 * REFERENCE_RECORDS + 10, seed=3, start=BASE + 3600))
    store.commit(pipeline.take_changes({("logs", 0): 420}))

    new = pipeline.drift.references["legal"]
    assert new.version == "v2" and new.id != old.id
    assert store.active_reference_ids()["legal"] == new.id
    assert set(store.references("legal")) == {("legal", ""), ("legal", "v2")}
    store.close()


def test_a_restored_pipeline_keeps_sketching_against_the_same_reference():
    config = drift_config()
    messages = list(traffic(2 * REFERENCE_RECORDS + 400, seed=2))
    head, tail = messages[:2 * REFERENCE_RECORDS + 200], messages[2 * REFERENCE_RECORDS + 200:]
    original = make_pipeline(config)
    feed(original, head)
    store = StateStore("sqlite://")
    store.commit(original.take_changes({("logs", 0): len(head)}))

    restored = make_pipeline(config)
    restored.restore(store.load())

    reference_id = original.drift.references["legal"].id
    assert restored.drift.references["legal"].id == reference_id
    assert "legal" not in restored.drift.builders
    # the first bucket holds only reference records, so it has no sketch
    restored_sketches = [b.drift for b in restored.windows.buckets("legal")]
    original_sketches = [b.drift for b in original.windows.buckets("legal")]
    assert [s is None for s in restored_sketches] == [s is None for s in original_sketches]
    restored_sketches = [s for s in restored_sketches if s is not None]
    assert len(restored_sketches) >= 2
    assert all(s.reference_id == reference_id for s in restored_sketches)
    assert [s.to_doc()["hist"] for s in restored_sketches] == \
        [s.to_doc()["hist"] for s in original_sketches if s is not None]

    feed(original, tail)
    feed(restored, tail)

    assert restored.take_changes({}).references == []  # no second reference
    pairs = [(a, b) for a, b in zip(original.windows.buckets("legal"),
                                    restored.windows.buckets("legal"), strict=True)
             if a.drift is not None]
    assert len(pairs) >= 3
    for a, b in pairs:
        da, db = a.drift.to_doc(), b.drift.to_doc()
        assert db["ref"] == reference_id
        assert (db["count"], db["hist"], db["cats"]) == (da["count"], da["hist"], da["cats"])
        flat_a, flat_b = ([x for m in d["moments"] for x in m] for d in (da, db))
        assert flat_b == pytest.approx(flat_a)
    assert restored.evaluate(at=BASE + 1000).decisions  # evaluates over restored + new sketches
    store.close()


# -- evaluation ---------------------------------------------------------------------------

def run_event_time(config: Config, messages) -> tuple[Pipeline, list]:
    pipeline = make_pipeline(config, event_time_evaluation=True)
    evaluations = []
    pipeline.on_evaluation = evaluations.append
    feed(pipeline, messages)
    return pipeline, evaluations


def test_event_time_evaluation_runs_at_multiples_of_the_interval():
    _, evaluations = run_event_time(drift_config(), traffic(1200, shift_support_after=250))

    last_time = BASE + 1199 / 2
    first_boundary = math.floor(BASE / INTERVAL) * INTERVAL + INTERVAL
    expected = [float(t) for t in range(int(first_boundary), int(last_time) + 1, INTERVAL)]
    assert [e.at for e in evaluations] == expected
    assert all(e.at % INTERVAL == 0 for e in evaluations)
    assert len(expected) == 10


def test_event_time_evaluation_is_deterministic():
    config = drift_config()
    messages = list(traffic(1200, shift_support_after=250))

    _, first = run_event_time(config, messages)
    _, second = run_event_time(config, messages)

    assert first == second
    assert any(e.decisions for e in first)


def test_event_time_evaluation_detects_a_shift_in_one_domain_only():
    _, evaluations = run_event_time(drift_config(), traffic(1200, shift_support_after=250))

    detected = evaluations[-1].detected()
    assert detected[("support", "prompt_tokens")] is True
    assert not any(v for (domain, _), v in detected.items() if domain == "legal")


def test_snapshot_drift_is_the_last_evaluation():
    pipeline, evaluations = run_event_time(drift_config(), traffic(1200, shift_support_after=250))

    snapshot = pipeline.snapshot()

    assert snapshot.drift is evaluations[-1]
    assert snapshot.references == pipeline.drift.references
    assert set(snapshot.references) == {"legal", "support"}


def test_snapshot_drift_is_none_before_any_evaluation():
    pipeline = make_pipeline(drift_config())
    feed(pipeline, traffic(300))

    assert pipeline.snapshot().drift is None
    assert set(pipeline.snapshot().references) == {"legal", "support"}


def test_maybe_evaluate_waits_for_the_interval():
    pipeline = make_pipeline(drift_config())
    seen = []
    pipeline.on_evaluation = seen.append
    feed(pipeline, traffic(300))

    first = pipeline.maybe_evaluate(BASE + 200)
    assert first is not None and first.at == BASE + 200
    assert pipeline.maybe_evaluate(BASE + 200 + INTERVAL - 1) is None
    later = pipeline.maybe_evaluate(BASE + 200 + INTERVAL)
    assert later is not None and later.at == BASE + 200 + INTERVAL
    assert seen == [first, later]
    assert pipeline.snapshot().drift is later


def test_with_drift_disabled_there_is_no_evaluation_and_no_reference():
    config = drift_config(enabled=False)
    pipeline, evaluations = run_event_time(config, traffic(1200, shift_support_after=250))

    assert pipeline.drift is None
    assert evaluations == []
    assert pipeline.evaluate() is None and pipeline.maybe_evaluate(BASE + 10_000) is None
    assert pipeline.snapshot().drift is None
    assert pipeline.snapshot().references == {}
    assert pipeline.take_changes({}).references == []
    assert all(b.drift is None for d in ("legal", "support") for b in pipeline.windows.buckets(d))


# -- the exporter -------------------------------------------------------------------------

def samples_of(pipeline: Pipeline) -> dict[str, list]:
    text = generate_latest(make_registry(SnapshotHolder(pipeline.snapshot()))).decode()
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def test_exporter_yields_drift_score_pvalue_and_detected():
    pipeline, evaluations = run_event_time(drift_config(), traffic(1200, shift_support_after=250))
    evaluation = evaluations[-1]

    samples = samples_of(pipeline)

    scores = {(s.labels["domain"], s.labels["feature"], s.labels["method"]): s.value
              for s in samples["monitor_drift_score"]}
    assert scores == pytest.approx({(r.domain, r.feature, r.method): r.score
                                    for r in evaluation.results})
    assert {m for _, _, m in scores} == {"psi", "js", "wasserstein", "ks", "chi2"}
    pvalues = {(s.labels["domain"], s.labels["feature"], s.labels["method"])
               for s in samples["monitor_drift_pvalue"]}
    assert pvalues and {m for _, _, m in pvalues} <= {"ks", "chi2", "mmd"}
    assert pvalues == {k for k in scores if k[2] in ("ks", "chi2")}
    detected = {(s.labels["domain"], s.labels["feature"]): s.value
                for s in samples["monitor_drift_detected"]}
    assert set(detected.values()) == {0.0, 1.0}
    assert detected == {k: float(v) for k, v in evaluation.detected().items()}
    assert detected[("support", "prompt_tokens")] == 1.0
    assert all(set(s.labels) == {"domain", "feature"} for s in samples["monitor_drift_detected"])


def test_exporter_has_no_drift_metrics_without_an_evaluation():
    pipeline = make_pipeline(drift_config(enabled=False))
    feed(pipeline, traffic(50))

    samples = samples_of(pipeline)

    assert "monitor_records_total" in samples
    assert not any(name.startswith("monitor_drift") for name in samples)
