"""Against the real Tansu broker and a real daemon subprocess: exact counts,
dead letters with their reasons, /metrics over HTTP, clean SIGTERM."""

from __future__ import annotations

import collections
import time

import pytest

from kafka import KafkaConsumer, KafkaProducer

from monitor.state import StateStore
from monitor.synthetic import traffic


def produce_and_track(bootstrap, topic, messages):
    """Send messages; return [(message, partition, offset)] once all are acknowledged."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, acks="all")
    futures = [(m, producer.send(topic, key=m.domain.encode() if m.domain else None, value=m.value))
               for m in messages]
    producer.flush()
    sent = [(m, f.get(timeout=30)) for m, f in futures]
    producer.close()
    return [(m, meta.partition, meta.offset) for m, meta in sent]


def read_dead_letters(bootstrap, topic, expected, timeout=30.0):
    consumer = KafkaConsumer(f"{topic}.dlq", bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False)
    letters, deadline = [], time.monotonic() + timeout
    while len(letters) < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            letters.extend(records)
    consumer.close()
    return letters


def expected_counts(sent):
    accepted = collections.Counter(m.domain for m, _, _ in sent if m.expected_reason is None)
    rejected = collections.Counter(m.expected_reason for m, _, _ in sent if m.expected_reason)
    return dict(accepted), dict(rejected)


@pytest.mark.parametrize("fetcher", ["process", "inline"])
def test_daemon_counts_every_record_exactly_and_dead_letters_carry_the_reason(
        broker, topic, daemon_factory, fetcher):
    sent = produce_and_track(broker.bootstrap_servers, topic,
                             traffic(3000, start=time.time() - 600, rate=10, malformed_every=25))
    daemon = daemon_factory(fetcher=fetcher).start()
    daemon.wait_ready()
    assert daemon.get("/-/healthy")[0] == 200
    accepted, rejected = daemon.wait_for_total(len(sent))
    want_accepted, want_rejected = expected_counts(sent)
    assert accepted == want_accepted
    assert rejected == want_rejected

    letters = read_dead_letters(broker.bootstrap_servers, topic, sum(want_rejected.values()))
    malformed = {(p, o): m for m, p, o in sent if m.expected_reason}
    assert len(letters) == len(malformed)
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers}
        source = (int(headers["monitor.source.partition"]), int(headers["monitor.source.offset"]))
        assert headers["monitor.source.topic"] == topic
        original = malformed[source]
        assert headers["monitor.error.reason"] == original.expected_reason
        assert letter.value == original.value
        assert headers["monitor.error.message"]


def test_metrics_endpoint_serves_the_ingest_vocabulary(broker, topic, daemon_factory):
    produce_and_track(broker.bootstrap_servers, topic,
                      traffic(600, start=time.time() - 300, rate=10, malformed_every=50))
    daemon = daemon_factory().start()
    daemon.wait_ready()
    daemon.wait_for_total(600)
    samples = daemon.metrics()
    names = {name for name, _ in samples}
    for name in ("monitor_records_total", "monitor_records_rejected_total", "monitor_window_samples",
                 "monitor_quality", "monitor_latency_seconds", "monitor_build_info"):
        assert name in names, name
    quality = {dict(labels)["signal"] for name, labels in samples if name == "monitor_quality"}
    assert quality == {"error_ratio", "refusal_ratio", "empty_output_ratio", "mean_logprob",
                       "feedback_mean"}
    windows = {dict(l)["domain"]: v for (n, l), v in samples.items() if n == "monitor_window_samples"}
    assert sum(windows.values()) == 600 - 600 // 50
    # The lag gauge appears within a few seconds of the assignment.
    deadline = time.monotonic() + 15
    while "monitor_consumer_lag" not in {n for n, _ in daemon.metrics()}:
        assert time.monotonic() < deadline, "no monitor_consumer_lag"
        time.sleep(0.5)
    lag = {dict(l)["partition"] for (n, l), _ in daemon.metrics().items() if n == "monitor_consumer_lag"}
    assert lag == {"0", "1", "2"}


def test_sigterm_flushes_state_and_exits_zero(broker, topic, daemon_factory):
    sent = produce_and_track(broker.bootstrap_servers, topic,
                             traffic(1000, start=time.time() - 300, rate=10))
    daemon = daemon_factory().start()
    daemon.wait_ready()
    daemon.wait_for_total(1000)
    assert daemon.terminate() == 0
    stored = StateStore(f"sqlite:///{daemon.state_path}").load()
    assert sum(stored.records_total.values()) == 1000
    last = {}
    for _, partition, offset in sent:
        last[partition] = max(last.get(partition, -1), offset)
    assert stored.offsets == {(topic, p): o + 1 for p, o in last.items()}
    assert "stopped" in daemon.log_tail()


def test_restart_resumes_from_stored_offsets_without_recounting(broker, topic, daemon_factory):
    produce_and_track(broker.bootstrap_servers, topic, traffic(500, start=time.time() - 300, rate=10))
    daemon = daemon_factory().start()
    daemon.wait_ready()
    daemon.wait_for_total(500)
    assert daemon.terminate() == 0
    produce_and_track(broker.bootstrap_servers, topic,
                      traffic(300, start=time.time() - 200, rate=10, seed=8))
    again = daemon_factory().start()
    again.wait_ready()
    accepted, _ = again.wait_for_total(800)
    time.sleep(1.0)  # a recount would show up as more than 800
    accepted, rejected = again.counts()
    assert sum(accepted.values()) + sum(rejected.values()) == 800


def test_a_record_too_large_for_the_dead_letter_topic_is_sent_truncated_and_ingest_goes_on(
        broker, topic, daemon_factory):
    huge = b'{"schema_version": 1, "padding": "' + b"x" * 1_500_000 + b'"}'
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, max_request_size=4_000_000)
    producer.send(topic, key=b"legal", value=huge, partition=0).get(timeout=30)
    producer.close()
    after = produce_and_track(broker.bootstrap_servers, topic,
                              traffic(300, start=time.time() - 100, rate=10))
    daemon = daemon_factory().start()
    daemon.wait_ready()

    accepted, rejected = daemon.wait_for_total(301)

    assert rejected == {"too_large": 1}
    assert sum(accepted.values()) == len(after)
    (letter,) = read_dead_letters(broker.bootstrap_servers, topic, 1)
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["monitor.error.reason"] == "too_large"
    assert headers["monitor.value.truncated"] == str(len(huge))
    assert letter.value == huge[:64 * 1024]
