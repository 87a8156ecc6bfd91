"""Alert delivery to Alertmanager (API v2) and to webhooks (DESIGN.md §6).

Each target (Alertmanager base URL or webhook URL) has its own bounded queue and
its own sender thread, so `Dispatcher.send()` never blocks the ingest loop and a
dead target never delays another. The queue holds the latest notification per
label set, in arrival order: a newer notification for a queued label set
replaces it in place (a resolved alert queued behind its firing version sends
only the resolved one). When the queue is full the oldest entry is dropped.

The sender posts the head of the queue in batches of at most `BATCH_SIZE`
alerts and removes them only once the target answered:

- 2xx: delivered;
- 429, 5xx, connection error or timeout: retried after a backoff that starts at
  `INITIAL_BACKOFF` seconds and doubles up to `max_backoff_seconds`; later
  alerts wait behind the batch, so the order is kept;
- any other status (4xx, a redirect): permanent, the batch is dropped and the
  reply logged once.

URLs may carry basic-auth userinfo (`http://user:pass@host/`): it is sent as an
`Authorization` header and never appears in logs or metric labels.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from itertools import islice
from urllib.parse import unquote, urlsplit, urlunsplit

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from monitor import metrics as m
from monitor.alerts.model import Notification
from monitor.config import AlertingConfig

log = logging.getLogger(__name__)

SENT_TOTAL = m.ALERT_NOTIFICATIONS_SENT
FAILED_TOTAL = m.ALERT_NOTIFICATIONS_FAILED
DROPPED_TOTAL = m.ALERT_NOTIFICATIONS_DROPPED
QUEUE_LENGTH = m.ALERT_QUEUE_LENGTH

BATCH_SIZE = 64
INITIAL_BACKOFF = 0.5
WEBHOOK_RECEIVER = "monitor"
WEBHOOK_GROUP_KEY = "{}:{}"   # Alertmanager's key for the root route with no group labels

_OK, _RETRY, _PERMANENT = "ok", "retry", "permanent"


def redact(url: str) -> str:
    """`url` without secrets: userinfo and the query become `xxxxx`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "xxxxx@" + netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "xxxxx" if parts.query else "", ""))


def format_time(seconds: float) -> str:
    """RFC 3339 in UTC with milliseconds: 2024-05-01T12:00:00.000Z."""
    stamp = datetime.fromtimestamp(seconds, UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fingerprint(labels: dict[str, str]) -> str:
    """16 hex digits identifying a label set: FNV-1a 64 over the labels sorted by
    name, each name and value followed by a 0xff byte. This is Prometheus'
    `LabelSet.Fingerprint`, so it equals the fingerprint Alertmanager reports."""
    h = 0xCBF29CE484222325
    for name, value in sorted(labels.items()):
        for chunk in (name.encode(), b"\xff", value.encode(), b"\xff"):
            for byte in chunk:
                h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def alertmanager_payload(batch: list[Notification]) -> list[dict]:
    """The body of `POST /api/v2/alerts`."""
    return [{"labels": dict(n.labels), "annotations": dict(n.annotations),
             "startsAt": format_time(n.starts_at), "endsAt": format_time(n.ends_at),
             "generatorURL": n.generator_url} for n in batch]


def _common(dicts: list[dict[str, str]]) -> dict[str, str]:
    first, *rest = dicts
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in rest)}


def webhook_payload(batch: list[Notification], now: float, external_url: str) -> dict:
    """Alertmanager's webhook payload (version 4) for one batch, as one group."""
    alerts = [{"status": "firing" if n.firing(now) else "resolved",
               **alertmanager_payload([n])[0], "fingerprint": fingerprint(n.labels)}
              for n in batch]
    return {"version": "4", "groupKey": WEBHOOK_GROUP_KEY, "truncatedAlerts": 0,
            "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
            "receiver": WEBHOOK_RECEIVER, "groupLabels": {},
            "commonLabels": _common([n.labels for n in batch]),
            "commonAnnotations": _common([n.annotations for n in batch]),
            "externalURL": external_url, "alerts": alerts}


class _Target:
    """One destination: its queue, its counters and its sender loop."""

    def __init__(self, url: str, kind: str, config: AlertingConfig, clock, external_url: str = ""):
        if kind == "alertmanager":
            url = url.rstrip("/") + "/api/v2/alerts"
        self.kind, self.config, self.clock = kind, config, clock
        self.external_url = external_url
        self.label = redact(url)
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {"Content-Type": "application/json", "User-Agent": "lora-monitor"}
        if parts.username is not None or parts.password is not None:
            userinfo = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(
                userinfo.encode()).decode()
        self.queue: OrderedDict[tuple, Notification] = OrderedDict()
        self.cond = threading.Condition()
        self.stopping = False
        self.sent = self.failed = self.dropped = 0
        self.thread: threading.Thread | None = None

    def put(self, notifications: list[Notification]) -> None:
        dropped = 0
        with self.cond:
            for n in notifications:
                key = tuple(sorted(n.labels.items()))
                if key not in self.queue and len(self.queue) >= self.config.queue_capacity:
                    self.queue.popitem(last=False)
                    dropped += 1
                self.queue[key] = n   # a queued label set keeps its place
            self.dropped += dropped
            self.cond.notify_all()
        if dropped:
            log.warning("alert queue for %s is full: dropped the %d oldest", self.label, dropped)

    def run(self, stop: threading.Event) -> None:
        backoff, failures = INITIAL_BACKOFF, 0
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    return
                batch = list(islice(self.queue.items(), BATCH_SIZE))
            outcome = self._deliver([n for _, n in batch], quiet=failures > 0)
            with self.cond:
                if outcome == _RETRY:
                    self.failed += 1
                else:
                    removed = 0
                    for key, n in batch:   # entries replaced meanwhile stay queued
                        if self.queue.get(key) is n:
                            del self.queue[key]
                            removed += 1
                    if outcome == _OK:
                        self.sent += len(batch)
                    else:
                        self.failed += 1
                        self.dropped += removed
                    self.cond.notify_all()
            if outcome == _RETRY:
                failures += 1
                if stop.wait(min(backoff, self.config.max_backoff_seconds)):
                    return
                backoff = min(backoff * 2, self.config.max_backoff_seconds)
            else:   # a permanent failure also ends the streak: the next batch starts afresh
                if failures and outcome == _OK:
                    log.info("alerts delivered to %s again after %d failed attempts",
                             self.label, failures)
                backoff, failures = INITIAL_BACKOFF, 0

    def _deliver(self, batch: list[Notification], quiet: bool) -> str:
        try:
            if self.kind == "alertmanager":
                body = alertmanager_payload(batch)
            else:
                body = webhook_payload(batch, self.clock(), self.external_url)
            status, reply = self._post(json.dumps(body).encode())
        except (OSError, http.client.HTTPException) as exc:
            status, reply = None, f"{type(exc).__name__}: {exc}"
        except Exception:   # a bug must not kill the sender: drop the batch, say why
            log.exception("building alerts for %s failed; %d dropped", self.label, len(batch))
            return _PERMANENT
        if status is not None and 200 <= status < 300:
            return _OK
        if status is None or status == 429 or status >= 500:
            log.log(logging.DEBUG if quiet else logging.WARNING,
                    "sending %d alert(s) to %s failed (%s); retrying with backoff",
                    len(batch), self.label, status or reply)
            return _RETRY
        log.error("%s refused %d alert(s) with HTTP %d, not retried: %s",
                  self.label, len(batch), status, reply[:1000])
        return _PERMANENT

    def _post(self, body: bytes) -> tuple[int, str]:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.config.timeout_seconds)
        try:
            conn.request("POST", self._path, body=body, headers=self._headers)
            reply = conn.getresponse()
            return reply.status, reply.read(4096).decode("utf-8", "replace")
        finally:
            conn.close()


class Dispatcher:
    """Queues notifications for every configured target and sends them from
    background threads (one per target)."""

    def __init__(self, config: AlertingConfig, clock=time.time, external_url: str | None = None):
        """`external_url`: the webhook payload's externalURL (default config.external_url)."""
        self.external_url = external_url or config.external_url or ""
        self._targets = ([_Target(u, "alertmanager", config, clock, self.external_url)
                          for u in config.alertmanagers]
                         + [_Target(u, "webhook", config, clock, self.external_url)
                            for u in config.webhooks])
        self._stop = threading.Event()

    @property
    def targets(self) -> list[str]:
        """The endpoints, redacted, as they appear in the metrics' `target` label."""
        return [t.label for t in self._targets]

    def start(self) -> None:
        for i, target in enumerate(self._targets):
            if target.thread is None:
                target.thread = threading.Thread(target=target.run, args=(self._stop,),
                                                 name=f"alert-delivery-{i}", daemon=True)
                target.thread.start()

    def send(self, notifications: list[Notification]) -> None:
        """Enqueue for every target; takes only a short lock, never waits on the network."""
        if notifications and not self._stop.is_set():
            for target in self._targets:
                target.put(notifications)

    def flush(self, timeout: float) -> bool:
        """Wait until every queue is empty (delivered or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        for target in self._targets:
            with target.cond:
                while target.queue:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    target.cond.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Try to drain for up to `timeout` seconds, then stop the threads. A POST
        still in flight is abandoned (the threads are daemons)."""
        deadline = time.monotonic() + timeout
        if any(t.thread for t in self._targets) and not self.flush(timeout):
            left = sum(len(t.queue) for t in self._targets)
            log.warning("closing alert delivery with %d alert(s) still queued", left)
        self._stop.set()
        for target in self._targets:
            with target.cond:
                target.stopping = True
                target.cond.notify_all()
        for target in self._targets:
            if target.thread is not None:
                target.thread.join(max(0.1, deadline - time.monotonic()))

    def collect(self):
        sent = CounterMetricFamily(SENT_TOTAL.removesuffix("_total"),
                                   "Alerts delivered (2xx), per target.", labels=["target"])
        failed = CounterMetricFamily(FAILED_TOTAL.removesuffix("_total"),
                                     "Failed POST attempts, per target.", labels=["target"])
        dropped = CounterMetricFamily(DROPPED_TOTAL.removesuffix("_total"),
                                      "Alerts dropped: queue full or refused by the target.",
                                      labels=["target"])
        queued = GaugeMetricFamily(QUEUE_LENGTH, "Alerts waiting to be sent, per target.",
                                   labels=["target"])
        for t in self._targets:
            with t.cond:
                sent.add_metric([t.label], t.sent)
                failed.add_metric([t.label], t.failed)
                dropped.add_metric([t.label], t.dropped)
                queued.add_metric([t.label], len(t.queue))
        yield from (sent, failed, dropped, queued)
