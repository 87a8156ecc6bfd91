"""Logging set-up shared by the daemon and its fetcher process."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int | str) -> None:
    """Log to stderr at `level`; kafka-python never below INFO, because at DEBUG
    it logs every request, SASL credentials included."""
    logging.basicConfig(level=level, format=FORMAT)
    logging.getLogger().setLevel(level)
    kafka = logging.getLogger("kafka")
    kafka.setLevel(max(logging.INFO, logging.getLogger().getEffectiveLevel()))
