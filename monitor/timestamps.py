"""Formatting event times (epoch seconds) for people and JSON documents."""

from __future__ import annotations

import math
from datetime import datetime, timezone


def rfc3339(seconds: float | None) -> str | None:
    """UTC, millisecond precision, `Z` suffix; None (or an infinite time) stays None.

    >>> rfc3339(1764359649.1234)
    '2025-11-28T19:54:09.123Z'
    """
    if seconds is None or not math.isfinite(seconds):
        return None
    stamp = datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")
