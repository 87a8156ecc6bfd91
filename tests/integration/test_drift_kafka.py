"""Drift against the real Tansu broker and a real daemon subprocess: references
built from the first records, drift series on /metrics, a detected shift, a
reference that survives a restart, and one rebuilt from a file while the daemon
runs. Semantic (embedding) drift is off: these tests stay free of torch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import orjson
import pytest

from monitor.state import StateStore
from monitor.synthetic import Message, Shape, produce, scenario

pytestmark = pytest.mark.integration

# A reference of 300 records would be the quickest, but then the sampling noise
# of PSI over its 12 bins, about 11 * (1/300 + 1/n_window) ~ 0.07, sits right at
# the default threshold (0.1), and a healthy domain drifts now and then on the
# luck of its reservoir. With 1,000 records (5 per second per domain, a few
# seconds of ingest) every healthy feature stays below a third of its threshold
# for these seeds, and the shifted one is five times above it.
REFERENCE_RECORDS = 1000
MIN_SAMPLES = 100
RATE = 5  # records per second per domain (event time)
HEALTHY_SEED, LATER_SEED = 3, 1

DRIFT_CONFIG = (
    "drift:\n"
    f"  reference_records: {REFERENCE_RECORDS}\n"
    f"  min_samples: {MIN_SAMPLES}\n"
    "  evaluation_interval_seconds: 1\n"
    "  embeddings:\n"
    "    enabled: false\n")

HEALTHY = {"legal": Shape(topic="legal", tokens_median=300.0),
           "support": Shape(topic="support", tokens_median=120.0, latency_median_ms=300.0)}
# Prompts 1.5x longer and a finish reason the reference never saw.
SHIFTED_LEGAL = Shape(topic="legal", tokens_median=450.0,
                      finish=(("stop", 0.6), ("length", 0.1), ("content_filter", 0.3)))

NUMERIC_METHODS = {"psi", "js", "wasserstein", "ks"}
CATEGORICAL_METHODS = {"psi", "js", "chi2"}


# -- helpers -------------------------------------------------------------------

def drift_daemon(daemon_factory):
    """A daemon (not started) whose config adds the fast drift settings."""
    daemon = daemon_factory()
    with open(daemon.config_path, "a") as config:
        config.write(DRIFT_CONFIG)
    return daemon


def records(shapes: dict, start: float, seconds: float, seed: int) -> list[Message]:
    """`RATE` records per second per domain of `shapes`, as keyed messages."""
    return [Message(orjson.loads(value)["domain"], value, None)
            for value in scenario(shapes, start=start, seconds=seconds, rate=RATE, seed=seed)]


def drift_series(daemon) -> dict[str, dict[tuple, float]]:
    """{metric name: {(domain, feature[, method]): value}} for the three drift metrics."""
    found: dict[str, dict[tuple, float]] = {"monitor_drift_score": {}, "monitor_drift_pvalue": {},
                                            "monitor_drift_detected": {}}
    for (name, labels), value in daemon.metrics().items():
        if name in found:
            labels = dict(labels)
            key = (labels["domain"], labels["feature"])
            if "method" in labels:
                key += (labels["method"],)
            found[name][key] = value
    return found


def detected(daemon, domain: str) -> dict[str, float]:
    return {feature: value for (d, feature), value in
            drift_series(daemon)["monitor_drift_detected"].items() if d == domain}


def wait_until(daemon, condition, what: str, timeout: float = 60.0):
    """Poll `condition()` until it returns something truthy; fail with the daemon's log."""
    deadline = time.monotonic() + timeout
    while True:
        daemon.assert_running()
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}; drift now: "
                                 f"{drift_series(daemon)['monitor_drift_detected']}; "
                                 f"log:\n{daemon.log_tail()}")
        time.sleep(0.25)


def healthy_everywhere(daemon, domains=tuple(HEALTHY)) -> bool:
    """Every domain has decisions for prompt_tokens and finish_reason, all 0."""
    for domain in domains:
        flags = detected(daemon, domain)
        if not {"prompt_tokens", "finish_reason"} <= flags.keys() or any(flags.values()):
            return False
    return True


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}


# -- tests ---------------------------------------------------------------------

def test_daemon_exports_drift_metrics_and_detects_a_shift(broker, topic, daemon_factory):
    start = time.time() - 600
    # Per domain: the first 1,000 records make the reference, the next 500 the window.
    first = records(HEALTHY, start, 300, seed=HEALTHY_SEED)
    produce(broker.bootstrap_servers, topic, first)
    daemon = drift_daemon(daemon_factory).start()
    daemon.wait_ready()
    daemon.wait_for_total(len(first))
    wait_until(daemon, lambda: healthy_everywhere(daemon),
               "drift decisions for both domains, none detected, before the shift")

    shifted = records({**HEALTHY, "legal": SHIFTED_LEGAL}, start + 300, 200, seed=LATER_SEED)
    produce(broker.bootstrap_servers, topic, shifted)
    daemon.wait_for_total(len(first) + len(shifted))

    def shift_seen():
        flags = detected(daemon, "legal")
        return flags.get("prompt_tokens") == 1.0 and healthy_everywhere(daemon, ("support",))

    wait_until(daemon, shift_seen, 'monitor_drift_detected{domain="legal",'
                                   'feature="prompt_tokens"} 1 while support stays 0')
    series = drift_series(daemon)
    assert detected(daemon, "legal")["finish_reason"] == 1.0
    assert not any(detected(daemon, "support").values())

    scores, pvalues = series["monitor_drift_score"], series["monitor_drift_pvalue"]
    for domain in HEALTHY:
        methods = {m for (d, f, m) in scores if d == domain and f == "prompt_tokens"}
        assert methods == NUMERIC_METHODS, (domain, methods)
        methods = {m for (d, f, m) in scores if d == domain and f == "finish_reason"}
        assert methods == CATEGORICAL_METHODS, (domain, methods)
        assert {m for (d, f, m) in pvalues if d == domain and f == "prompt_tokens"} == {"ks"}
        assert {m for (d, f, m) in pvalues if d == domain and f == "finish_reason"} == {"chi2"}
    assert {m for (_, _, m) in pvalues} <= {"ks", "chi2", "mmd"}
    assert "embedding" not in {f for (_, f) in series["monitor_drift_detected"]}
    # The shifted domain scores well above the healthy one.
    assert (scores[("legal", "prompt_tokens", "psi")]
            > 5 * scores[("support", "prompt_tokens", "psi")])
    assert pvalues[("legal", "prompt_tokens", "ks")] < 1e-6


def test_reference_survives_a_restart_and_is_not_rebuilt(broker, topic, daemon_factory):
    start = time.time() - 600
    first = records(HEALTHY, start, 300, seed=HEALTHY_SEED)  # 1,000 reference + 500 window
    produce(broker.bootstrap_servers, topic, first)
    daemon = drift_daemon(daemon_factory).start()
    daemon.wait_ready()
    daemon.wait_for_total(len(first))
    wait_until(daemon, lambda: healthy_everywhere(daemon), "drift decisions for both domains")
    assert daemon.terminate() == 0

    store = StateStore(f"sqlite:///{daemon.state_path}")
    try:
        ids = store.active_reference_ids()
        built = {d: r.built_at for d, r in store.references(active_only=True).items()}
    finally:
        store.close()
    assert set(ids) == set(HEALTHY)

    # More than reference_records per domain: a rebuild, if any, would complete.
    more = records(HEALTHY, start + 300, 240, seed=LATER_SEED)
    produce(broker.bootstrap_servers, topic, more)
    again = drift_daemon(daemon_factory).start()
    assert again.state_path == daemon.state_path
    again.wait_ready()
    again.wait_for_total(len(first) + len(more))
    wait_until(again, lambda: healthy_everywhere(again),
               "drift decisions for both domains after the restart")
    series = drift_series(again)
    assert {m for (d, f, m) in series["monitor_drift_score"]
            if d == "legal" and f == "prompt_tokens"} == NUMERIC_METHODS
    # The restored window goes on: 1,500 + 1,200 records per domain.
    assert again.metrics()[("monitor_window_samples", frozenset({("domain", "legal")}))] == 2700

    assert again.terminate() == 0
    store = StateStore(f"sqlite:///{daemon.state_path}")
    try:
        assert store.active_reference_ids() == ids
        assert {d: r.built_at for d, r in store.references(active_only=True).items()} == built
        assert len(store.references()) == len(HEALTHY)
    finally:
        store.close()
    # Both daemons log to the same file: only the first one built references.
    assert again.log_path.read_text().count("reference built from its first") == len(HEALTHY)


def test_a_reference_built_from_a_file_is_picked_up_by_the_running_daemon(
        broker, topic, daemon_factory, tmp_path):
    start = time.time() - 600
    first = records(HEALTHY, start, 300, seed=HEALTHY_SEED)
    produce(broker.bootstrap_servers, topic, first)
    daemon = drift_daemon(daemon_factory).start()
    daemon.wait_ready()
    daemon.wait_for_total(len(first))
    wait_until(daemon, lambda: healthy_everywhere(daemon), "drift decisions for both domains")

    # A reference of legal traffic with prompts 3x as long as what the daemon sees.
    file = tmp_path / "legal-long.jsonl"
    long_prompts = {"legal": Shape(topic="legal", tokens_median=900.0)}
    file.write_bytes(b"\n".join(scenario(long_prompts, start=start - 3600, seconds=400,
                                         rate=1, seed=5)) + b"\n")
    built = subprocess.run(
        [sys.executable, "-m", "monitor", "reference", "build", "--domain", "legal", str(file),
         "--config", str(daemon.config_path)],
        check=False, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    match = re.search(r"^reference (\S+) for domain legal ", built.stdout, re.MULTILINE)
    assert match, built.stdout
    new_id = match.group(1)
    store = StateStore(f"sqlite:///{daemon.state_path}")
    try:
        assert store.active_reference_ids()["legal"] == new_id
    finally:
        store.close()

    # The daemon switches at its next evaluation (every second here).
    wait_until(daemon, lambda: f"using reference {new_id}" in daemon.log_tail(200),
               f"the daemon logging that legal uses reference {new_id}", timeout=15)
    # Window sketches are binned against the reference they were made with, so
    # after the switch legal's drift is measured on records that follow it.
    more = records(HEALTHY, start + 300, 100, seed=LATER_SEED)
    produce(broker.bootstrap_servers, topic, more)
    daemon.wait_for_total(len(first) + len(more))

    def drift_against_the_file():
        flags = detected(daemon, "legal")
        return flags.get("prompt_tokens") == 1.0 and healthy_everywhere(daemon, ("support",))

    wait_until(daemon, drift_against_the_file, 'monitor_drift_detected{domain="legal",'
               'feature="prompt_tokens"} 1 against the file reference', timeout=30)
    scores = drift_series(daemon)["monitor_drift_score"]
    assert scores[("legal", "prompt_tokens", "psi")] > 1.0

    store = StateStore(f"sqlite:///{daemon.state_path}")
    try:
        assert store.active_reference_ids()["legal"] == new_id  # the daemon did not overwrite it
    finally:
        store.close()
