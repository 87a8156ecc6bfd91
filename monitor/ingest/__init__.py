"""Record sources (Kafka, a replay file) and the dead-letter sink."""

from monitor.ingest.source import Message, Run

__all__ = ["Message", "Run"]
