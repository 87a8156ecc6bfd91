"""kill -9 the daemon mid-stream, several times, and restart it: the final
counts must equal what was produced, exactly (exactly-once state)."""

from __future__ import annotations

import random
import threading
import time

from kafka import KafkaProducer

from monitor.synthetic import traffic

from .test_kafka_ingest import expected_counts, read_dead_letters


def test_kill_9_mid_stream_neither_loses_nor_double_counts(broker, topic, daemon_factory):
    rng = random.Random(2)
    messages = list(traffic(24000, start=time.time() - 1200, rate=20, malformed_every=40))
    sent: list = []

    def produce_slowly():
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=10, acks="all")
        futures = []
        for i, message in enumerate(messages):
            key = message.domain.encode() if message.domain else None
            futures.append((message, producer.send(topic, key=key, value=message.value)))
            if i % 1000 == 999:
                producer.flush()
                time.sleep(0.4)  # ~2.5k records/s: the stream outlasts the kills
        producer.flush()
        for message, future in futures:
            meta = future.get(timeout=30)
            sent.append((message, meta.partition, meta.offset))
        producer.close()

    producer = threading.Thread(target=produce_slowly)
    producer.start()
    # Semantic drift off: every restart would reload the model and re-embed the
    # references, CPU this timing-sensitive test does not need to compete with.
    daemon = daemon_factory(semantic=False).start()
    kills = 0
    seen_before = 0
    while kills < 3:
        daemon.wait_ready()
        # Let it make progress past the last kill, then kill at a random moment.
        deadline = time.monotonic() + 60
        while True:
            accepted, rejected = daemon.counts()
            seen = sum(accepted.values()) + sum(rejected.values())
            if seen > seen_before:
                break
            assert time.monotonic() < deadline, daemon.log_tail()
            time.sleep(0.1)
        time.sleep(rng.uniform(0.1, 0.8))
        # Alternate: the daemon alone (its fetcher child notices and leaves the
        # group) and the whole process group (the group member just vanishes).
        daemon.kill9(whole_group=bool(kills % 2))
        kills += 1
        seen_before = seen
        daemon = daemon_factory(semantic=False).start()
    producer.join()
    assert len(sent) == len(messages)

    accepted, rejected = daemon.wait_for_total(len(sent), timeout=120)
    time.sleep(1.0)  # double counting would push the totals past the produced count
    accepted, rejected = daemon.counts()
    want_accepted, want_rejected = expected_counts(sent)
    assert accepted == want_accepted
    assert rejected == want_rejected

    # Every malformed record reached the dead-letter topic (a crash may repeat one).
    letters = read_dead_letters(broker.bootstrap_servers, topic, sum(want_rejected.values()))
    delivered = {(int(dict(l.headers)["monitor.source.partition"]),
                  int(dict(l.headers)["monitor.source.offset"])) for l in letters}
    malformed = {(p, o) for m, p, o in sent if m.expected_reason}
    assert malformed <= delivered
