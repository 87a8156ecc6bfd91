"""An in-memory time-series store for rule evaluation (DESIGN.md §5).

The daemon appends its own metrics here at each evaluation, so range functions
(`rate(x[5m])`, `avg_over_time`, `offset`) have history to work on. It keeps
what Prometheus' head block would keep for our purpose, nothing more:

* a series is a label set (a sorted tuple of `(name, value)` pairs, including
  `__name__`) with parallel typed arrays of timestamps (int milliseconds) and
  values;
* samples older than `retention_ms` are dropped as time advances, and a series
  with no sample left is forgotten, so memory is bounded by
  series x samples-in-retention;
* a series that disappears from a scrape gets a *staleness marker* (a NaN with
  Prometheus' bit pattern), so it stops being visible right away instead of
  5 minutes later, as in Prometheus;
* at most `max_series` series: new ones beyond it are dropped and counted.

>>> store = SeriesStore(retention_ms=3_600_000)
>>> up = (("__name__", "up"), ("job", "a"))
>>> store.append(up, 0, 1.0) and store.append(up, 60_000, 0.0)
True
>>> [(labels, list(times), list(values))
...  for labels, times, values in store.select([("__name__", "=", "up")], 0, 60_000)]
[((('__name__', 'up'), ('job', 'a')), [0, 60000], [1.0, 0.0])]
"""

from __future__ import annotations

import math
import re
import struct
from array import array
from bisect import bisect_left, bisect_right
from typing import Iterable, Iterator

Labels = tuple[tuple[str, str], ...]
# A matcher: (label name, op, value) with op one of "=", "!=", "=~", "!~".
Matcher = tuple[str, str, str]

CACHE_LIMIT = 1024  # cached selections per metric name, and compiled matchers
_STALE_BITS = 0x7FF0000000000002
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", _STALE_BITS))[0]


def is_stale(value: float) -> bool:
    """True for Prometheus' staleness marker (a NaN with a specific payload)."""
    return value != value and struct.unpack("<Q", struct.pack("<d", value))[0] == _STALE_BITS


def labels_of(mapping: dict[str, str]) -> Labels:
    """The canonical label tuple: sorted by name, empty values dropped (as Prometheus)."""
    return tuple(sorted((k, v) for k, v in mapping.items() if v != ""))


class Series:
    """One series: timestamps (int64 ms) and values (float64) in typed arrays,
    16 bytes a sample instead of ~50 with lists of Python objects."""

    __slots__ = ("labels", "times", "values", "scraped")

    def __init__(self, labels: Labels):
        self.labels = labels
        self.times = array("q")
        self.values = array("d")
        self.scraped = False


def compile_matcher(op: str, value: str):
    """A predicate on a label value (missing labels are ""), anchored like PromQL."""
    if op == "=":
        return lambda v: v == value
    if op == "!=":
        return lambda v: v != value
    pattern = re.compile(f"(?:{value})\\Z", re.DOTALL)
    if op == "=~":
        return lambda v: pattern.match(v) is not None
    if op == "!~":
        return lambda v: pattern.match(v) is None
    raise ValueError(f"unknown matcher operator {op!r}")


class SeriesStore:
    """Series by label set, with a per-metric-name index and cached selections."""

    def __init__(self, retention_ms: int = 3_600_000, max_series: int = 200_000):
        self.retention_ms = int(retention_ms)
        self.max_series = max_series
        self.series: dict[Labels, Series] = {}
        self._by_name: dict[str, dict[Labels, Series]] = {}
        # Cached `matching()` results per metric name (None: no name matcher).
        self._selections: dict[str | None, dict[tuple, list[Series]]] = {}
        self._predicates: dict[tuple[str, str], object] = {}
        self.dropped_series = 0
        self.head_ms: int | None = None  # newest timestamp appended
        self._pruned_at = -math.inf

    # -- writing -------------------------------------------------------------
    def append(self, labels: Labels, t: int, value: float) -> bool:
        """Add one sample; out-of-order samples (t before the series' last) are ignored."""
        series = self.series.get(labels)
        if series is None:
            if len(self.series) >= self.max_series:
                self.dropped_series += 1
                return False
            series = self.series[labels] = Series(labels)
            name = dict(labels).get("__name__", "")
            self._by_name.setdefault(name, {})[labels] = series
            self._invalidate(name)
        times = series.times
        if times and t <= times[-1]:
            if t == times[-1]:
                series.values[-1] = value  # same timestamp: last write wins
                return True
            return False
        times.append(t)
        series.values.append(value)
        if self.head_ms is None or t > self.head_ms:
            self.head_ms = t
        return True

    def scrape(self, samples: Iterable[tuple[Labels, float]], t: int) -> int:
        """Append one whole scrape at time t: every series of the previous scrape
        that is missing now gets a staleness marker. Returns the samples appended."""
        seen: set[Labels] = set()
        appended = 0
        for labels, value in samples:
            if labels in seen:
                continue
            seen.add(labels)
            if self.append(labels, t, value):
                appended += 1
                self.series[labels].scraped = True
        for labels, series in self.series.items():
            if series.scraped and labels not in seen:
                series.scraped = False
                if series.values and not is_stale(series.values[-1]):
                    self.append(labels, t, STALE_NAN)
        self.prune(t)
        return appended

    def prune(self, now: int) -> None:
        """Drop samples older than the retention, at most once a minute of series time."""
        if now - self._pruned_at < 60_000:
            return
        self._pruned_at = now
        cutoff = now - self.retention_ms
        gone = []
        for labels, series in self.series.items():
            times = series.times
            if times and times[0] < cutoff:
                k = bisect_left(times, cutoff)
                del times[:k]
                del series.values[:k]
            if not times:
                gone.append(labels)
        for labels in gone:
            del self.series[labels]
            name = dict(labels).get("__name__", "")
            index = self._by_name.get(name)
            if index is not None:
                index.pop(labels, None)
                if not index:
                    del self._by_name[name]
            self._invalidate(name)

    # -- reading -------------------------------------------------------------
    def matching(self, matchers: list[Matcher]) -> list[Series]:
        """Series matching all matchers, sorted by labels (cached until a series of
        that metric name is added or dropped)."""
        key = tuple(matchers)
        name = next((v for n, op, v in matchers if n == "__name__" and op == "="), None)
        cache = self._selections.setdefault(name, {})
        # Rules ask the same few questions over and over; the query API may ask
        # any number of different ones: keep the caches bounded.
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        if len(self._predicates) >= CACHE_LIMIT:
            self._predicates.clear()
        found = cache.get(key)
        if found is not None:
            return found
        pool = self._by_name.get(name, {}).values() if name is not None else self.series.values()
        tests = []
        for n, op, v in matchers:
            if n == "__name__" and op == "=" and name is not None:
                continue
            predicate = self._predicates.get((op, v))
            if predicate is None:
                predicate = self._predicates[(op, v)] = compile_matcher(op, v)
            tests.append((n, predicate))
        found = []
        for series in pool:
            labels = dict(series.labels)
            if all(predicate(labels.get(n, "")) for n, predicate in tests):
                found.append(series)
        found.sort(key=lambda s: s.labels)
        cache[key] = found
        return found

    def _invalidate(self, name: str) -> None:
        """A series of metric `name` came or went: forget the selections it may be in
        (those of that name, and those that do not name a metric)."""
        self._selections.pop(name, None)
        self._selections.pop(None, None)

    def select(self, matchers: list[Matcher], mint: int, maxt: int
               ) -> Iterator[tuple[Labels, array, array]]:
        """(labels, times, values) of each matching series within [mint, maxt]."""
        for series in self.matching(matchers):
            times = series.times
            lo, hi = bisect_left(times, mint), bisect_right(times, maxt)
            if lo < hi:
                yield series.labels, times[lo:hi], series.values[lo:hi]

    def samples(self) -> int:
        return sum(len(s.times) for s in self.series.values())
