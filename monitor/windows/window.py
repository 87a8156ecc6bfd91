"""Event-time sliding windows per domain, made of tumbling buckets.

Each domain keeps a watermark: the latest event time it has seen. A record
older than `watermark - allowed_lateness` is rejected as `late`; in the daemon
a record more than `max_future_seconds` ahead of the wall clock is rejected as
`bad_timestamp` (it would make all real records late); any other record lands
in the bucket that holds its timestamp. The window of a domain
covers `(end - length, end]` with `end = max(watermark, now - allowed_lateness)`,
so a domain that stops sending drains instead of freezing; `now` comes from the
clock passed in (wall time in the daemon, the records' time in replay).
Buckets that end before the window starts are dropped: memory per domain is
bounded by `(length + bucket) / bucket` buckets whatever the traffic.

>>> ws = WindowSet(bucket_seconds=60, length_seconds=300, allowed_lateness_seconds=60,
...                max_domains=10, clock=lambda: 0.0)
>>> from monitor.records import Record
>>> for t in (10.0, 70.0, 130.0):
...     _ = ws.add(Record(t, "legal"), (False, False, False, False))
>>> ws.summary("legal").samples
3
>>> ws.add(Record(5.0, "legal"), (False, False, False, False))
Traceback (most recent call last):
...
monitor.errors.RecordError: late: event time is 125s behind the domain's watermark (allowed lateness 60s)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from monitor.errors import RecordError
from monitor.records import BAD_TIMESTAMP, DOMAIN_LIMIT, LATE
from monitor.windows.bucket import Bucket


@dataclass(frozen=True)
class WindowSummary:
    """What one domain's current window holds: merged buckets and their extent."""

    domain: str
    start: float
    end: float
    samples: int
    merged: Bucket = field(repr=False)


class DomainWindow:
    """The buckets of one domain, keyed by bucket start (epoch seconds)."""

    __slots__ = ("domain", "watermark", "buckets")

    def __init__(self, domain: str, watermark: float = -math.inf):
        self.domain = domain
        self.watermark = watermark
        self.buckets: dict[int, Bucket] = {}


class WindowSet:
    """All domains' windows, with the bookkeeping the state store needs:
    which buckets changed (`dirty`), which were dropped (`dropped`) and which
    domains took records (`touched`) since the last `take_changes()`."""

    def __init__(self, bucket_seconds: int, length_seconds: int, allowed_lateness_seconds: int,
                 max_domains: int, clock: Callable[[], float], max_future_seconds: float | None = None):
        if bucket_seconds <= 0 or length_seconds <= 0 or length_seconds % bucket_seconds:
            raise ValueError("length_seconds must be a positive multiple of bucket_seconds")
        if allowed_lateness_seconds < 0 or max_domains <= 0:
            raise ValueError("allowed_lateness_seconds must be >= 0 and max_domains > 0")
        self.bucket_seconds = bucket_seconds
        self.length_seconds = length_seconds
        self.lateness = allowed_lateness_seconds
        self.max_domains = max_domains
        self.clock = clock
        # None: no check (replay, where the clock is the records' own time).
        self.max_future = max_future_seconds
        self.domains: dict[str, DomainWindow] = {}
        self.dirty: set[tuple[str, int]] = set()
        self.dropped: set[tuple[str, int]] = set()
        self.touched: set[str] = set()

    def add(self, record, flags: tuple, partition: int | None = None,
            offset: int | None = None) -> Bucket | None:
        """Put one record in its bucket and return the bucket (None when the record
        is counted but lies before the window); raise `RecordError` (`late`, `domain_limit`).
        `partition` and `offset` (where the record was read) go into the bucket's lineage."""
        domain = record.domain
        timestamp = record.timestamp
        window = self.domains.get(domain)
        if window is None:
            if len(self.domains) >= self.max_domains:
                raise RecordError(DOMAIN_LIMIT, f"more than {self.max_domains} domains "
                                                "(windows.max_domains)")
            window = self.domains[domain] = DomainWindow(domain)
        if timestamp < window.watermark - self.lateness:
            raise RecordError(LATE, f"event time is {window.watermark - timestamp:.0f}s behind the "
                                    f"domain's watermark (allowed lateness {self.lateness}s)")
        start = int(timestamp // self.bucket_seconds) * self.bucket_seconds
        if timestamp > window.watermark:
            # A record from the future would move the watermark ahead and make
            # every real record after it "late", so it is refused instead.
            if self.max_future is not None and timestamp > self.clock() + self.max_future:
                raise RecordError(BAD_TIMESTAMP, f"event time is {timestamp - self.clock():.0f}s "
                                                 f"ahead of the clock (windows.max_future_seconds "
                                                 f"{self.max_future:g})")
            window.watermark = timestamp
        self.touched.add(domain)
        bucket = window.buckets.get(start)
        if bucket is None:
            self._evict(window)
            if start + self.bucket_seconds <= self.window_end(window) - self.length_seconds:
                # Accepted (not late for its domain) but already outside the current
                # window, e.g. an old backlog read against the wall clock: counted,
                # not windowed.
                return None
            bucket = window.buckets[start] = Bucket()
        bucket.add(record, flags, partition, offset)
        self.dirty.add((domain, start))
        return bucket

    def window_end(self, window: DomainWindow) -> float:
        return max(window.watermark, self.clock() - self.lateness)

    def _evict(self, window: DomainWindow) -> None:
        horizon = self.window_end(window) - self.length_seconds
        for start in [s for s in window.buckets if s + self.bucket_seconds <= horizon]:
            del window.buckets[start]
            key = (window.domain, start)
            self.dirty.discard(key)
            self.dropped.add(key)

    def summary(self, domain: str) -> WindowSummary | None:
        """Merge the domain's buckets that lie in its current window."""
        window = self.domains.get(domain)
        if window is None:
            return None
        self._evict(window)
        end = self.window_end(window)
        merged = Bucket()
        for bucket in window.buckets.values():
            merged.merge(bucket)
        return WindowSummary(domain, end - self.length_seconds, end, merged.count, merged)

    def buckets(self, domain: str) -> list[Bucket]:
        """The domain's buckets that lie in its current window, oldest first."""
        window = self.domains.get(domain)
        if window is None:
            return []
        self._evict(window)
        return [window.buckets[s] for s in sorted(window.buckets)]

    def take_changes(self) -> tuple[list[tuple[str, int, bytes]], list[tuple[str, int]], dict[str, float]]:
        """Changed buckets (serialised), dropped bucket keys and watermarks since the last call."""
        changed = [(d, s, self.domains[d].buckets[s].to_bytes()) for d, s in self.dirty]
        dropped = list(self.dropped)
        watermarks = {d: self.domains[d].watermark for d in self.touched}
        self.dirty.clear()
        self.dropped.clear()
        self.touched.clear()
        return changed, dropped, watermarks

    def restore(self, domain: str, watermark: float, buckets: dict[int, Bucket]) -> None:
        """Load one domain's state as read back from the state store."""
        window = DomainWindow(domain, watermark)
        window.buckets.update(buckets)
        self.domains[domain] = window
