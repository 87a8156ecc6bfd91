"""Dead letters: rejected records, raw bytes plus headers that say where they
came from and why they were rejected, sent to `<topic>.dlq`.

Headers: `monitor.source.topic`, `monitor.source.partition`,
`monitor.source.offset`, `monitor.error.reason`, `monitor.error.message`.

Delivery is checked before each state commit (`flush`), so a rejected record
is in the dead-letter topic before its offset is committed: nothing is lost.
A crash between the two can send a record to the topic twice.
"""

from __future__ import annotations

import logging
import time

from monitor.errors import MonitorError, RecordError
from monitor.ingest.source import Message

log = logging.getLogger(__name__)


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
    """Produces dead letters with a kafka-python producer; `flush` confirms delivery."""

    def __init__(self, producer, topic: str, timeout_seconds: float = 30.0):
        self.producer = producer
        self.topic = topic
        self.timeout = timeout_seconds
        self._pending: list[tuple[Message, RecordError, object]] = []

    def send(self, message: Message, error: RecordError) -> None:
        future = self.producer.send(self.topic, key=message.key, value=message.value or b"",
                                    headers=dead_letter_headers(message, error))
        self._pending.append((message, error, future))

    def flush(self) -> None:
        """Block until every dead letter is acknowledged; resend failures once,
        then raise `DeadLetterError` (the pending ones are kept for the next try)."""
        if not self._pending:
            return
        deadline = time.monotonic() + self.timeout
        for attempt in range(2):
            self.producer.flush(timeout=max(0.1, deadline - time.monotonic()))
            failed = [(m, e) for m, e, f in self._pending if not f.succeeded()]
            self._pending = []
            if not failed:
                return
            log.warning("%d dead letter(s) not delivered to %s (attempt %d)",
                        len(failed), self.topic, attempt + 1)
            for message, error in failed:
                self.send(message, error)
        raise DeadLetterError(f"{len(self._pending)} dead letter(s) could not be delivered "
                              f"to {self.topic}")

    def close(self) -> None:
        self.producer.close(timeout=5)
