"""evaluate_version with a fake evaluator (no torch), results in the state store,
the golden metrics, and `monitor eval` / `monitor adapters list` on them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import EvalConfig
from monitor.eval.run import evaluate_version
from monitor.exporter import EvalResults
from monitor.registry import load_registry
from monitor.state import StateStore


@dataclass(frozen=True)
class Score:
    id: str
    nll: float
    exact_match: bool
    tokens: int = 5


class FakeEvaluator:
    """Scores from a table: base is poor, v1 good, v2 bad (per item, with noise)."""

    QUALITY = {"base": (2.0, 0.0), "v1": (0.5, 0.9), "v2": (1.5, 0.2)}

    def __init__(self):
        self.calls = []

    def _scores(self, name, items):
        mean, em = self.QUALITY[name]
        rng = np.random.default_rng(len(name))
        return [Score(it.id, float(mean + rng.normal(0, 0.05)), bool(rng.random() < em))
                for it in items]

    def score_base(self, items):
        self.calls.append("base")
        return self._scores("base", items)

    def score_adapter(self, path, items, name="candidate"):
        self.calls.append(name)
        return self._scores(name, items)


def write_registry(root, active="v1"):
    """A registry whose adapters pass validation: real (tiny) safetensors files are
    not needed by the fake evaluator, but validate_version reads them, so the
    versions are written by monitor.eval.tiny's helpers when available."""
    pytest.importorskip("torch")
    from tests.unit.test_adapter_validation import make_lora  # real tiny peft adapters

    base = root / "base"
    for version in ("v1", "v2"):
        make_lora(base, root / "legal" / version)
    golden = root / "legal" / "golden.jsonl"
    golden.write_text("".join(f'{{"id": "{i}", "prompt": "p{i}", "reference": "r{i}"}}\n'
                              for i in range(60)))
    path = root / "registry.yaml"
    path.write_text(f"""\
base_models:
  tiny-llama: {{path: {base}}}
domains:
  legal:
    base_model: tiny-llama
    kind: lora
    active: {active}
    golden_set: legal/golden.jsonl
    versions:
      v1: {{path: legal/v1, status: good}}
      v2: {{path: legal/v2}}
""")
    return load_registry(path)


@pytest.fixture
def registry(tmp_path):
    return write_registry(tmp_path)


def test_a_candidate_is_compared_with_the_active_version_and_the_base(registry):
    evaluator = FakeEvaluator()
    run = evaluate_version(registry, "legal", "v2", config=EvalConfig(bootstrap_resamples=2000),
                           evaluator=evaluator)
    assert run.status == "done" and evaluator.calls == ["v2", "v1", "base"]
    doc = run.doc
    assert doc["domain"] == "legal" and doc["version"] == "v2" and doc["n"] == 60
    by = {(c["baseline"], c["metric"]): c for c in doc["comparisons"]}
    assert set(by) == {("v1", "nll"), ("v1", "exact_match"), ("base", "nll"),
                       ("base", "exact_match")}
    assert by[("v1", "nll")]["regressed"] and by[("v1", "nll")]["delta"] < -0.9
    assert not by[("base", "nll")]["regressed"] and by[("base", "nll")]["delta"] > 0.4
    assert run.verdict == doc["verdict"] == "regressed"
    assert set(run.items) == {"candidate", "v1", "base"}


def test_the_active_version_is_compared_with_the_base_only(registry):
    run = evaluate_version(registry, "legal", config=EvalConfig(bootstrap_resamples=2000),
                           evaluator=FakeEvaluator())
    assert run.version == "v1" and run.verdict == "pass"
    assert {c["baseline"] for c in run.doc["comparisons"]} == {"base"}


def test_a_refused_adapter_is_a_failed_run_and_is_never_scored(registry):
    (registry.domains["legal"].versions["v2"].path / "adapter_model.bin").write_bytes(b"x")
    evaluator = FakeEvaluator()
    run = evaluate_version(registry, "legal", "v2", evaluator=evaluator)
    assert run.status == "failed" and run.verdict is None and evaluator.calls == []
    assert run.doc["reason"] == "pickle" and "adapter_model.bin" in run.doc["error"]


def test_unknown_domain_or_version_is_a_usage_error(registry):
    with pytest.raises(KeyError, match="no domain 'medical'"):
        evaluate_version(registry, "medical", evaluator=FakeEvaluator())
    with pytest.raises(KeyError, match="no version 'v9'"):
        evaluate_version(registry, "legal", "v9", evaluator=FakeEvaluator())


def test_runs_are_stored_and_exported_as_golden_metrics(registry, tmp_path):
    store = StateStore(f"sqlite:///{tmp_path}/state.db")
    try:
        clock = iter([100.0, 130.0, 200.0, 205.0])
        for version in ("v2", "v1"):
            run = evaluate_version(registry, "legal", version, evaluator=FakeEvaluator(),
                                   config=EvalConfig(bootstrap_resamples=2000),
                                   clock=lambda: next(clock))
            store.save_eval_run(run.row(), run.items)
        assert store.latest_verdicts() == {("legal", "v2"): "regressed", ("legal", "v1"): "pass"}
        runs = store.eval_runs(domain="legal")
        assert [r["version"] for r in runs] == ["v2", "v1"]
        items = store.eval_items(runs[0]["id"])
        assert set(items) == {"candidate", "v1", "base"} and len(items["candidate"]) == 60
        results = EvalResults()
        results.refresh(store)
    finally:
        store.close()
    registry_ = CollectorRegistry()
    registry_.register(results)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(generate_latest(registry_).decode())
               for s in f.samples}
    assert samples[("monitor_golden_regression", (("baseline", "v1"), ("domain", "legal"),
                                                  ("metric", "nll"), ("version", "v2")))] == 1.0
    assert samples[("monitor_golden_regression", (("baseline", "base"), ("domain", "legal"),
                                                  ("metric", "nll"), ("version", "v1")))] == 0.0
    assert samples[("monitor_eval_last_success_timestamp_seconds", (("domain", "legal"),))] == 205.0
    assert samples[("monitor_eval_duration_seconds_count", (("domain", "legal"),))] == 2.0
    assert samples[("monitor_eval_duration_seconds_bucket", (("domain", "legal"),
                                                             ("le", "5.0")))] == 1.0
    assert ("monitor_golden_score", (("domain", "legal"), ("metric", "nll"),
                                     ("version", "v1"))) in samples


def _samples(results) -> dict:
    registry_ = CollectorRegistry()
    registry_.register(results)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(generate_latest(registry_).decode())
            for s in f.samples}


def test_the_eval_queue_length_counts_queued_and_running_jobs(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        results = EvalResults()
        results.refresh(store)
        empty = _samples(results)
        first = store.enqueue_eval("legal", "v2", "alert", at=1.0)
        assert store.enqueue_eval("legal", "v2", "again", at=2.0) == first  # reused
        store.enqueue_eval("legal", None, "schedule", at=3.0)
        store.enqueue_eval("medical", "v1", "alert", at=4.0)
        claimed = store.claim_eval_job()
        results.refresh(store)
        busy = _samples(results)
        store.finish_eval_job(claimed["id"], "done", None)
        results.refresh(store)
        after = _samples(results)
    finally:
        store.close()
    # Both states are always exported, 0 when the queue is empty.
    assert empty[("monitor_eval_queue_length", (("state", "queued"),))] == 0.0
    assert empty[("monitor_eval_queue_length", (("state", "running"),))] == 0.0
    assert busy[("monitor_eval_queue_length", (("state", "queued"),))] == 2.0
    assert busy[("monitor_eval_queue_length", (("state", "running"),))] == 1.0
    # Finished jobs (done, failed) are not in the queue.
    assert after[("monitor_eval_queue_length", (("state", "queued"),))] == 2.0
    assert after[("monitor_eval_queue_length", (("state", "running"),))] == 0.0
    assert {k for k in after if k[0] == "monitor_eval_queue_length"} == {
        ("monitor_eval_queue_length", (("state", "queued"),)),
        ("monitor_eval_queue_length", (("state", "running"),))}


def test_published_runs_without_a_queue_export_an_empty_queue():
    results = EvalResults()
    results.publish([])
    samples = _samples(results)
    assert samples[("monitor_eval_queue_length", (("state", "queued"),))] == 0.0
    assert samples[("monitor_eval_queue_length", (("state", "running"),))] == 0.0
