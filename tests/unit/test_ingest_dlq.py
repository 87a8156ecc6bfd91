"""Unit tests of monitor.ingest.dlq: dead-letter headers, MemoryDeadLetters and
KafkaDeadLetters over a fake producer (no Kafka)."""

from __future__ import annotations

import pytest

from kafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError

from monitor.errors import MonitorError, RecordError

from monitor.ingest.dlq import (
    TRUNCATED_BYTES,
    DeadLetterError,
    KafkaDeadLetters,
    MemoryDeadLetters,
    dead_letter_headers,
)
from monitor.ingest.source import Message

MESSAGE = Message("inference-logs", 2, 41, b"legal", b"{bad")
ERROR = RecordError("invalid_json", "unexpected character: line 1 column 2")


class FakeFuture:
    """kafka-python's FutureRecordMetadata, as far as KafkaDeadLetters looks at it."""

    def __init__(self, ok: bool, exception: Exception | None = None):
        self.ok = ok
        self.exception = exception or (None if ok else KafkaConnectionError("broker down"))

    def succeeded(self) -> bool:
        return self.ok

    def failed(self) -> bool:
        return not self.ok


class FakeProducer:
    """Fails the first `failures` sends, then succeeds."""

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.sent: list[dict] = []
        self.flushes = 0
        self.closed = False

    def send(self, topic, key=None, value=None, headers=None):
        self.sent.append({"topic": topic, "key": key, "value": value, "headers": headers})
        ok = self.failures <= 0
        self.failures -= 1
        return FakeFuture(ok)

    def flush(self, timeout=None):
        self.flushes += 1

    def close(self, timeout=None):
        self.closed = True


def test_headers_say_where_the_record_came_from_and_why_it_was_rejected():
    assert dead_letter_headers(MESSAGE, ERROR) == [
        ("monitor.source.topic", b"inference-logs"),
        ("monitor.source.partition", b"2"),
        ("monitor.source.offset", b"41"),
        ("monitor.error.reason", b"invalid_json"),
        ("monitor.error.message", b"unexpected character: line 1 column 2"),
    ]


def test_error_message_header_is_bounded_and_utf8():
    error = RecordError("bad_value", "é" * 600)

    header = dict(dead_letter_headers(MESSAGE, error))["monitor.error.message"]

    assert header == ("é" * 512).encode()


def test_memory_dead_letters_keep_everything_without_a_limit():
    letters = MemoryDeadLetters()
    for _ in range(30):
        letters.send(MESSAGE, ERROR)
    letters.flush()

    assert len(letters.letters) == 30
    assert letters.letters[0] == (MESSAGE, ERROR)


def test_memory_dead_letters_keep_only_the_first_ones_up_to_the_limit():
    letters = MemoryDeadLetters(limit=2)
    for offset in range(5):
        letters.send(Message("t", 0, offset, None, b"x"), ERROR)

    assert [m.offset for m, _ in letters.letters] == [0, 1]


def test_kafka_dead_letters_send_raw_bytes_key_and_headers_to_the_topic():
    producer = FakeProducer()
    letters = KafkaDeadLetters(producer, "inference-logs.dlq")

    letters.send(MESSAGE, ERROR)
    letters.flush()

    assert producer.sent == [{"topic": "inference-logs.dlq", "key": b"legal", "value": b"{bad",
                              "headers": dead_letter_headers(MESSAGE, ERROR)}]
    assert producer.flushes == 1


def test_kafka_dead_letters_send_a_tombstone_as_empty_bytes():
    producer = FakeProducer()
    letters = KafkaDeadLetters(producer, "dlq")

    letters.send(Message("t", 0, 0, None, None), RecordError("invalid_json", "tombstone"))

    assert producer.sent[0]["value"] == b""


def test_flush_without_pending_letters_does_nothing():
    producer = FakeProducer()

    KafkaDeadLetters(producer, "dlq").flush()

    assert producer.flushes == 0


def test_a_failed_delivery_is_resent_and_flush_succeeds():
    producer = FakeProducer(failures=1)
    letters = KafkaDeadLetters(producer, "dlq")
    letters.send(MESSAGE, ERROR)

    letters.flush()

    assert len(producer.sent) == 2
    assert producer.sent[1]["value"] == b"{bad"
    letters.flush()  # nothing pending any more
    assert len(producer.sent) == 2


def test_undeliverable_letters_raise_dead_letter_error_and_are_kept_for_the_next_flush():
    producer = FakeProducer(failures=10**6)
    letters = KafkaDeadLetters(producer, "dlq", timeout_seconds=0.1)
    letters.send(MESSAGE, ERROR)

    with pytest.raises(DeadLetterError):
        letters.flush()

    producer.failures = 0
    sent_before = len(producer.sent)
    letters.flush()  # the kept letter is resent and delivered now

    assert len(producer.sent) == sent_before + 1
    assert producer.sent[-1]["value"] == b"{bad"
    letters.flush()
    assert len(producer.sent) == sent_before + 1
    assert issubclass(DeadLetterError, MonitorError)


def test_close_closes_the_producer():
    producer = FakeProducer()

    KafkaDeadLetters(producer, "dlq").close()

    assert producer.closed


class RefusingProducer(FakeProducer):
    """Raises from send() (as kafka-python does for an oversized record) or from flush()."""

    def __init__(self, send_error: Exception | None = None, flush_error: Exception | None = None,
                 limit: int | None = None):
        super().__init__()
        self.send_error, self.flush_error, self.limit = send_error, flush_error, limit

    def send(self, topic, key=None, value=None, headers=None):
        if self.limit is not None and len(value) > self.limit:
            raise MessageSizeTooLargeError(f"{len(value)} bytes")
        if self.send_error is not None:
            error, self.send_error = self.send_error, None
            raise error
        return super().send(topic, key=key, value=value, headers=headers)

    def flush(self, timeout=None):
        if self.flush_error is not None:
            raise self.flush_error
        return super().flush(timeout)


def test_a_send_that_raises_is_retried_at_flush_and_send_itself_never_raises():
    producer = RefusingProducer(send_error=KafkaTimeoutError("buffer full"))
    letters = KafkaDeadLetters(producer, "dlq", timeout_seconds=1)

    letters.send(MESSAGE, ERROR)  # does not raise
    letters.flush()

    assert [m["value"] for m in producer.sent] == [b"{bad"]


def test_a_letter_too_large_to_send_is_sent_truncated_with_its_original_size():
    big = Message("logs", 1, 7, b"k", b"x" * (TRUNCATED_BYTES + 10))
    producer = RefusingProducer(limit=TRUNCATED_BYTES + 1)
    letters = KafkaDeadLetters(producer, "dlq", timeout_seconds=1)

    letters.send(big, RecordError("too_large", "too big"))
    letters.flush()

    (sent,) = producer.sent
    assert sent["value"] == b"x" * TRUNCATED_BYTES
    headers = dict(sent["headers"])
    assert headers["monitor.value.truncated"] == str(TRUNCATED_BYTES + 10).encode()
    assert headers["monitor.error.reason"] == b"too_large"


def test_a_flush_timeout_becomes_a_dead_letter_error_not_a_crash():
    producer = RefusingProducer(flush_error=KafkaTimeoutError("flush timed out"))
    producer.failures = 10**6
    letters = KafkaDeadLetters(producer, "dlq", timeout_seconds=0.1)
    letters.send(MESSAGE, ERROR)

    with pytest.raises(DeadLetterError):
        letters.flush()
