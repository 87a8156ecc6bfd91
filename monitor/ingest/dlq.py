"""Dead letters: rejected records, raw bytes plus headers that say where they
came from and why they were rejected, sent to `<topic>.dlq`.

Headers: `monitor.source.topic`, `monitor.source.partition`,
`monitor.source.offset`, `monitor.error.reason`, `monitor.error.message`
(and `monitor.value.truncated` on the rare letter too large to send whole).

Delivery is checked before each state commit (`flush`), so a rejected record
is in the dead-letter topic before its offset is committed: nothing is lost.
A crash between the two can send a record to the topic twice.
"""

from __future__ import annotations

import logging
import time

from kafka.errors import KafkaError, MessageSizeTooLargeError

from monitor.errors import MonitorError, RecordError
from monitor.ingest.source import Message

log = logging.getLogger(__name__)

TRUNCATED_BYTES = 64 * 1024


class DeadLetterError(MonitorError, RuntimeError):
    """Dead letters could not be delivered; the state commit must wait."""


def dead_letter_headers(message: Message, error: RecordError) -> list[tuple[str, bytes]]:
    return [
        ("monitor.source.topic", message.topic.encode()),
        ("monitor.source.partition", str(message.partition).encode()),
        ("monitor.source.offset", str(message.offset).encode()),
        ("monitor.error.reason", error.reason.encode()),
        ("monitor.error.message", error.message[:512].encode("utf-8", "replace")),
    ]


class MemoryDeadLetters:
    """Keeps dead letters in a list (replay, unit tests)."""

    def __init__(self, limit: int | None = None):
        self.letters: list[tuple[Message, RecordError]] = []
        self.limit = limit

    def send(self, message: Message, error: RecordError) -> None:
        if self.limit is None or len(self.letters) < self.limit:
            self.letters.append((message, error))

    def flush(self) -> None:
        pass


class KafkaDeadLetters:
    """Produces dead letters with a kafka-python producer; `flush` confirms delivery.

    `send` never raises: a letter the producer refuses is retried at `flush`.
    A letter too large for the producer or the broker is sent again with its
    value cut to TRUNCATED_BYTES and a `monitor.value.truncated` header giving
    the original size, so that one oversized record cannot block ingestion.
    """

    def __init__(self, producer, topic: str, timeout_seconds: float = 30.0, attempts: int = 3):
        self.producer = producer
        self.topic = topic
        self.timeout = timeout_seconds
        self.attempts = attempts
        self._pending: list[tuple[Message, RecordError, object, bool]] = []

    def send(self, message: Message, error: RecordError) -> None:
        self._pending.append(self._produce(message, error, truncate=False))

    def _produce(self, message: Message, error: RecordError, truncate: bool):
        value = message.value or b""
        headers = dead_letter_headers(message, error)
        if truncate:
            headers.append(("monitor.value.truncated", str(len(value)).encode()))
            value = value[:TRUNCATED_BYTES]
        try:
            outcome = self.producer.send(self.topic, key=message.key, value=value, headers=headers)
        except KafkaError as exc:  # refused before it left (too large, buffer full, ...)
            outcome = exc
        return message, error, outcome, truncate

    def flush(self) -> None:
        """Block until every dead letter is acknowledged, retrying failures; raise
        `DeadLetterError` when some are still undelivered (they are kept for the next try)."""
        if not self._pending:
            return
        deadline = time.monotonic() + self.timeout
        for attempt in range(1, self.attempts + 1):
            try:
                self.producer.flush(timeout=max(0.1, deadline - time.monotonic()))
            except KafkaError as exc:
                log.warning("dead-letter flush to %s: %s", self.topic, exc)
            retry = []
            for message, error, outcome, truncated in self._pending:
                problem = _problem(outcome)
                if problem is None:
                    continue
                too_large = isinstance(problem, MessageSizeTooLargeError)
                if too_large and not truncated:
                    log.error("dead letter from %s[%d]@%d is too large for %s (%d bytes); "
                              "sending its first %d bytes", message.topic, message.partition,
                              message.offset, self.topic, len(message.value or b""),
                              TRUNCATED_BYTES)
                retry.append((message, error, truncated or too_large))
            self._pending = [self._produce(m, e, t) for m, e, t in retry]
            if not retry:
                return
            log.warning("%d dead letter(s) not delivered to %s (attempt %d of %d)",
                        len(retry), self.topic, attempt, self.attempts)
        raise DeadLetterError(f"{len(self._pending)} dead letter(s) could not be delivered "
                              f"to {self.topic}")

    def close(self) -> None:
        try:
            self.producer.close(timeout=5)
        except KafkaError as exc:
            log.warning("closing the dead-letter producer: %s", exc)


def _problem(outcome) -> Exception | None:
    """None when the letter was acknowledged, else why not."""
    if isinstance(outcome, Exception):
        return outcome
    if outcome.succeeded():
        return None
    if outcome.failed():
        return outcome.exception
    return TimeoutError("not acknowledged in time")
