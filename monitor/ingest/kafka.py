"""Kafka as a record source: a kafka-python consumer group with auto-commit off.

Offsets are owned by the state store: on every partition assignment the
consumer seeks to the offsets stored with the state, and before partitions are
revoked the owner flushes its state (`on_revoked`). Offsets are also committed
to Kafka after each state commit, for lag monitoring and for tools that read
the group's position; they are never the source of truth.
"""

from __future__ import annotations

import logging
from typing import Callable

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from monitor.config import KafkaConfig
from monitor.ingest.source import Run

log = logging.getLogger(__name__)

OffsetMap = dict[tuple[str, int], int]


def client_settings(config: KafkaConfig) -> dict:
    """Connection settings shared by consumer, producer and admin client."""
    settings = {
        "bootstrap_servers": config.bootstrap_servers,
        "client_id": config.client_id,
        "security_protocol": config.security_protocol,
    }
    if config.ssl_cafile:
        settings["ssl_cafile"] = config.ssl_cafile
    if config.sasl_mechanism:
        settings["sasl_mechanism"] = config.sasl_mechanism
        if config.sasl_username is not None:
            settings["sasl_plain_username"] = config.sasl_username.get_secret_value()
        if config.sasl_password is not None:
            settings["sasl_plain_password"] = config.sasl_password.get_secret_value()
    return settings


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, source: "KafkaSource"):
        self.source = source

    def on_partitions_revoked(self, revoked):
        if revoked:
            log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))
            self.source.on_revoked([(tp.topic, tp.partition) for tp in revoked])

    def on_partitions_assigned(self, assigned):
        source = self.source
        stored = source.stored_offsets([(tp.topic, tp.partition) for tp in assigned])
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is not None:
                source.consumer.seek(tp, offset)
        log.info("partitions assigned: %s (resuming from stored offsets for %d)",
                 sorted(tp.partition for tp in assigned), len(stored))
        source.assigned = True
        if source.paused:
            source.consumer.pause(*assigned)


class KafkaSource:
    """Polls batches of `Message`s from the configured topic.

    `stored_offsets(partitions)` returns the offsets to resume from (from the
    state store); `on_revoked(partitions)` must persist state before returning.
    """

    def __init__(self, config: KafkaConfig, stored_offsets: Callable[[list], OffsetMap],
                 on_revoked: Callable[[list], None]):
        self.config = config
        self.stored_offsets = stored_offsets
        self.on_revoked = on_revoked
        self.assigned = False
        self.paused = False
        self.consumer = KafkaConsumer(
            group_id=config.group,
            enable_auto_commit=False,
            auto_offset_reset=config.auto_offset_reset,
            max_poll_records=config.max_poll_records,
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            **client_settings(config),
        )
        self.consumer.subscribe([config.topic], listener=_Rebalance(self))

    def poll(self, timeout_ms: int) -> list[Run]:
        """One poll: a `Run` per partition that returned records."""
        batches = self.consumer.poll(timeout_ms=timeout_ms)
        return [Run(tp.topic, tp.partition, [r.offset for r in records],
                    [r.key for r in records], [r.value for r in records])
                for tp, records in batches.items() if records]

    def commit(self, offsets: OffsetMap) -> None:
        """Commit to Kafka for visibility; failures are logged, the store stays authoritative."""
        if not offsets:
            return
        try:
            self.consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                                  for (t, p), o in offsets.items()})
        except KafkaError as exc:
            log.warning("offset commit to Kafka failed (state store is authoritative): %s", exc)

    def pause(self) -> None:
        self.paused = True
        self.consumer.pause(*self.consumer.assignment())

    def resume(self) -> None:
        self.paused = False
        self.consumer.resume(*self.consumer.assignment())

    def lag(self) -> OffsetMap:
        """End offset minus position per assigned partition (never negative)."""
        assignment = list(self.consumer.assignment())
        if not assignment:
            return {}
        try:
            ends = self.consumer.end_offsets(assignment)
            return {(tp.topic, tp.partition): max(0, ends[tp] - self.consumer.position(tp))
                    for tp in assignment if tp in ends}
        except KafkaError as exc:
            log.debug("consumer lag unavailable: %s", exc)
            return {}

    def close(self) -> None:
        self.consumer.close(autocommit=False)


def make_dead_letter_producer(config: KafkaConfig, max_record_bytes: int) -> KafkaProducer:
    # Room for any record the pipeline accepts as input, plus headers; larger
    # (too_large) letters are truncated by KafkaDeadLetters.
    return KafkaProducer(linger_ms=20, acks="all", retries=5,
                         max_request_size=max(1_048_576, max_record_bytes + 65_536),
                         **client_settings(config))


def ensure_topic(config: KafkaConfig, topic: str, partitions: int = 1) -> None:
    """Create `topic` when it does not exist (the dead-letter topic); warn if we may not."""
    try:
        admin = KafkaAdminClient(**client_settings(config))
    except KafkaError as exc:
        log.warning("cannot reach Kafka to check topic %s: %s", topic, exc)
        return
    try:
        if topic not in admin.list_topics():
            admin.create_topics([NewTopic(topic, partitions, 1)])
            log.info("created topic %s", topic)
    except TopicAlreadyExistsError:
        pass
    except KafkaError as exc:
        log.warning("could not create topic %s (create it yourself): %s", topic, exc)
    finally:
        admin.close()
