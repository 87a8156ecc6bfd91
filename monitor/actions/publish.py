"""The outbox publisher: sends the messages actions wrote into the state store.

Messages are sent in order within an action (a later one waits for the earlier
ones), each claimed first, so the daemon's publisher and a command's never send
the same message. A failed send is retried with a growing delay (1 s doubling
to 5 min) for `GIVE_UP_ATTEMPTS` attempts, then marked failed and logged.

Exactly once on Kafka: an attempt is counted before the send. A message whose
earlier attempt may have reached the broker (a crash after the send, before it
was marked published) is first looked for on its topic by its event `id`, and
marked published without a second send when it is there. HTTP hooks and
commands are called at least once: the vLLM preset's calls are idempotent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from monitor.actions.hooks import DeliveryError, run_command, send_http
from monitor.config import Config
from monitor.faults import fault

log = logging.getLogger(__name__)

CLAIM_LEASE_SECONDS = 60.0
MAX_RETRY_DELAY_SECONDS = 300.0
GIVE_UP_ATTEMPTS = 60
SEND_TIMEOUT_SECONDS = 10.0


class KafkaSink:
    """Sends to Kafka with one producer, made on first use; finds earlier sends."""

    def __init__(self, config: Config):
        self.config = config
        self._producer = None
        self._ensured: set[str] = set()

    def send(self, topic: str, key: str, value: dict) -> None:
        import orjson
        from kafka.errors import KafkaError

        try:
            if self._producer is None:
                from kafka import KafkaProducer

                from monitor.ingest.kafka import client_settings

                self._producer = KafkaProducer(acks="all", retries=5, linger_ms=0,
                                               **client_settings(self.config.kafka))
            if self.config.actions.create_topics and topic not in self._ensured:
                from monitor.ingest.kafka import ensure_topic

                ensure_topic(self.config.kafka, topic)
                self._ensured.add(topic)
            future = self._producer.send(topic, key=key.encode(), value=orjson.dumps(value))
            future.get(timeout=SEND_TIMEOUT_SECONDS)
        except KafkaError as exc:
            raise DeliveryError(f"topic {topic}: {exc.__class__.__name__}: {exc}") from None

    def contains(self, topic: str, event_id: str) -> bool:
        """Whether a message whose value has this `id` is on `topic` (read whole:
        control and retrain topics are small)."""
        import orjson
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        from monitor.ingest.kafka import client_settings

        needle = orjson.dumps(event_id)
        try:
            consumer = KafkaConsumer(enable_auto_commit=False, group_id=None,
                                     **client_settings(self.config.kafka))
        except KafkaError as exc:
            raise DeliveryError(f"topic {topic}: cannot check for an earlier send: {exc}") from None
        try:
            partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in partitions]
            if not tps:
                return False
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            ends = consumer.end_offsets(tps)
            deadline = time.monotonic() + 30.0
            while time.monotonic() < deadline:
                if all(consumer.position(tp) >= ends[tp] for tp in tps):
                    return False
                for records in consumer.poll(timeout_ms=500).values():
                    for record in records:
                        if needle in (record.value or b""):
                            try:
                                if orjson.loads(record.value).get("id") == event_id:
                                    return True
                            except (orjson.JSONDecodeError, AttributeError):
                                continue
            raise DeliveryError(f"topic {topic}: timed out reading it back")
        except KafkaError as exc:
            raise DeliveryError(f"topic {topic}: cannot check for an earlier send: {exc}") from None
        finally:
            consumer.close()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None


class Publisher:
    """`publish_due()` sends what is due once; `start()` does it every second in
    a thread until `close()`."""

    def __init__(self, actions, config: Config, *, kafka: KafkaSink | None = None,
                 clock: Callable[[], float] = time.time):
        self.actions = actions
        self.config = config
        self.kafka = kafka or KafkaSink(config)
        self.clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def publish_due(self, action_id: str | None = None) -> int:
        """Send every due message (of one action only, with `action_id`); returns
        the number sent. Never raises for a failed send."""
        sent = 0
        while True:
            batch = self.actions.claim_outbox(self.clock(), CLAIM_LEASE_SECONDS, action_id)
            if not batch:
                return sent
            progressed = False
            for message in batch:
                if self._send(message):
                    sent += 1
                    progressed = True
            if not progressed:
                return sent

    def _send(self, message: dict) -> bool:
        payload = message["payload"]
        kind = message["kind"]
        try:
            if kind == "kafka":
                value = payload["value"]
                if message["attempts"] > 0 and self.kafka.contains(message["target"],
                                                                   value["id"]):
                    log.info("event %s is already on %s (sent before a restart): not sent "
                             "again", value["id"], message["target"])
                    self.actions.outbox_published(message["id"], self.clock())
                    return True
                self.actions.outbox_attempted(message["id"])
                self.kafka.send(message["target"], payload["key"], value)
                fault("after_kafka_send")
            elif kind == "http":
                self.actions.outbox_attempted(message["id"])
                token = self._token(payload.get("auth"))
                send_http(payload, token, self._timeout(payload.get("auth")))
            elif kind == "command":
                self.actions.outbox_attempted(message["id"])
                run_command(payload)
            else:
                raise DeliveryError(f"unknown message kind {kind!r}")
        except DeliveryError as exc:
            self._failed(message, str(exc))
            return False
        except Exception as exc:  # a bug must not stop the publisher
            log.exception("publishing message %s failed", message["id"])
            self._failed(message, f"{exc.__class__.__name__}: {exc}")
            return False
        self.actions.outbox_published(message["id"], self.clock())
        log.info("published %s message of action %s to %s", kind, message["action_id"],
                 message["target"] if kind != "http" else _url(message["target"]))
        return True

    def _failed(self, message: dict, error: str) -> None:
        attempts = message["attempts"] + 1
        if attempts >= GIVE_UP_ATTEMPTS:
            log.error("giving up on %s message of action %s to %s after %d attempts: %s",
                      message["kind"], message["action_id"], _url(message["target"]),
                      attempts, error)
            self.actions.outbox_failed(message["id"], error, None)
            return
        delay = min(MAX_RETRY_DELAY_SECONDS, 2.0 ** (attempts - 1))
        log.warning("%s message of action %s not delivered (attempt %d, retry in %.0fs): %s",
                    message["kind"], message["action_id"], attempts, delay, error)
        self.actions.outbox_failed(message["id"], error, self.clock() + delay)

    def _token(self, auth: str | None) -> str | None:
        if auth == "serving_hook" and self.config.actions.serving_hook.token is not None:
            return self.config.actions.serving_hook.token.get_secret_value()
        return None

    def _timeout(self, auth: str | None) -> float:
        if auth == "serving_hook":
            return self.config.actions.serving_hook.timeout_seconds
        return SEND_TIMEOUT_SECONDS

    # -- the thread -----------------------------------------------------------------
    def wake(self) -> None:
        """Publish now (an action just wrote messages)."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="monitor-outbox", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.publish_due()
            except Exception:
                log.exception("outbox publishing failed; retrying")
            self._wake.wait(1.0)
            self._wake.clear()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=SEND_TIMEOUT_SECONDS + 5)
        self.kafka.close()


def _url(target: str) -> str:
    from monitor.actions.hooks import _safe

    return _safe(target) if target.startswith(("http://", "https://")) else target
