"""The last raw records of each domain, and writing them out as a JSONL snapshot.

A retrain request carries a snapshot of the domain's recent traffic. The
pipeline keeps, per domain, the last `capacity` accepted records as
`(timestamp, partition, offset, raw)` in a ring (a bounded deque): `raw` is the
message value itself (bytes are immutable, so the reference is kept, never a
copy). Memory is bounded by `capacity x max_domains` records of at most
`records.max_bytes` each; a domain beyond `max_domains` is not kept (the
windows reject its records anyway). The rings live in memory only: they are not
in the state store, so a restart starts them empty and they refill as records
arrive.

>>> recent = RecentRecords(capacity=2, max_domains=10)
>>> for offset, t in enumerate((10.0, 20.0, 30.0)):
...     _ = recent.add("legal", t, 0, offset, b'{"n": %d}' % offset)
>>> [(t, o) for t, _, o, _ in recent.records("legal")]
[(20.0, 1), (30.0, 2)]
>>> [raw for *_, raw in recent.records("legal", start=20.0)]
[b'{"n": 2}']
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from monitor.files import fsync_folder


class RecentRecords:
    """Per domain, the last `capacity` records, oldest first."""

    __slots__ = ("capacity", "max_domains", "rings")

    def __init__(self, capacity: int, max_domains: int):
        if capacity <= 0 or max_domains <= 0:
            raise ValueError("capacity and max_domains must be > 0")
        self.capacity = capacity
        self.max_domains = max_domains
        # {domain: deque of (timestamp, partition, offset, raw)}. The pipeline's hot
        # path appends such tuples to an existing ring directly (saving a call) and
        # goes through `add` for a new domain.
        self.rings: dict[str, deque] = {}

    def add(self, domain: str, timestamp: float, partition: int | None, offset: int | None,
            raw: bytes) -> bool:
        """Keep one record (the oldest of a full domain goes); False when the domain
        is new and `max_domains` domains are already kept."""
        ring = self.rings.get(domain)
        if ring is None:
            if len(self.rings) >= self.max_domains:
                return False
            ring = self.rings[domain] = deque(maxlen=self.capacity)
        ring.append((timestamp, partition, offset, raw))
        return True

    def records(self, domain: str, start: float | None = None,
                end: float | None = None) -> list[tuple]:
        """The domain's kept records `(timestamp, partition, offset, raw)` in arrival
        order (oldest first), limited to `start < timestamp <= end` where given.
        Safe to call from another thread while records are added."""
        ring = self.rings.get(domain)
        if ring is None:
            return []
        kept = list(ring)  # one C-level copy: the ring may grow meanwhile
        if start is None and end is None:
            return kept
        low = -float("inf") if start is None else start
        high = float("inf") if end is None else end
        return [r for r in kept if low < r[0] <= high]

    @property
    def domains(self) -> list[str]:
        return list(self.rings)

    def __len__(self) -> int:
        """The number of records kept, all domains together."""
        return sum(len(ring) for ring in list(self.rings.values()))


def write_snapshot(path: str | os.PathLike, records: Iterable) -> int:
    """Write `records` to `path` as JSONL, atomically; return how many were written.

    Each record is the raw bytes of one JSON object, or a tuple whose last item
    is (as `RecentRecords.records` gives). The bytes are written as they are,
    one per line: a trailing newline is stripped, and a line break inside
    (insignificant JSON whitespace: JSON strings cannot hold one unescaped)
    becomes a space so that every record stays on one line. The file is
    written to a temporary file in the same folder (created if missing),
    fsynced and renamed over `path`: readers see the old file or the whole new
    one, and nothing is left behind on error. The file is readable by its
    owner only (mode 0600), as the records may hold prompts.
    """
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    count = 0
    try:
        with os.fdopen(fd, "wb") as handle:
            for record in records:
                raw = record if isinstance(record, (bytes, bytearray)) else record[-1]
                raw = bytes(raw).rstrip(b"\r\n")
                if b"\n" in raw or b"\r" in raw:
                    raw = raw.replace(b"\r", b" ").replace(b"\n", b" ")
                handle.write(raw)
                handle.write(b"\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_folder(folder)
    return count


