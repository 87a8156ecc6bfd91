"""Alert delivery (monitor.alerts.delivery) against a local HTTP receiver."""

from __future__ import annotations

import re
import time
from itertools import pairwise

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.alerts import delivery
from monitor.alerts.delivery import Dispatcher, fingerprint, redact
from monitor.alerts.model import Notification
from monitor.broker import free_port
from monitor.config import AlertingConfig

NOW = 1_700_000_000.0
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def dispatchers():
    made: list[Dispatcher] = []

    def make(clock=lambda: NOW, **config) -> Dispatcher:
        config.setdefault("timeout_seconds", 2.0)
        made.append(Dispatcher(AlertingConfig(**config), clock=clock))
        return made[-1]

    yield make
    for d in made:
        d.close(timeout=0.1)


def alert(name="Drift", firing=True, **labels) -> Notification:
    return Notification(labels={"alertname": name, **labels},
                        annotations={"summary": f"{name} is {'on' if firing else 'off'}"},
                        starts_at=NOW - 60, ends_at=NOW + 240 if firing else NOW - 1,
                        generator_url="http://monitor/rules")


def metrics(dispatcher: Dispatcher) -> dict:
    """{(sample name, target): value} through a real registry and exposition."""
    registry = CollectorRegistry()
    registry.register(dispatcher)
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, s.labels["target"])] = s.value
    return out


def test_alertmanager_payload(receivers, dispatchers):
    am = receivers()
    d = dispatchers(alertmanagers=[am.url + "/"])
    d.start()
    d.send([alert(domain="chat", severity="warning")])
    assert d.flush(5)
    [req] = am.wait(1)
    assert req["path"] == "/api/v2/alerts"
    assert req["headers"]["Content-Type"] == "application/json"
    [sent] = req["json"]
    assert sent == {"labels": {"alertname": "Drift", "domain": "chat", "severity": "warning"},
                    "annotations": {"summary": "Drift is on"},
                    "startsAt": "2023-11-14T22:12:20.000Z", "endsAt": "2023-11-14T22:17:20.000Z",
                    "generatorURL": "http://monitor/rules"}
    assert delivery.format_time(0.1234) == "1970-01-01T00:00:00.123Z"


def test_webhook_payload(receivers, dispatchers):
    hook = receivers()
    d = dispatchers(webhooks=[hook.url + "/hook?x=1"], external_url="http://mon:9464")
    d.send([alert(domain="chat", severity="warning"),
            alert("Latency", firing=False, domain="chat", severity="page")])
    d.start()
    assert d.flush(5)
    [req] = hook.wait(1)
    assert req["path"] == "/hook?x=1"
    body = req["json"]
    assert {k: v for k, v in body.items() if k != "alerts"} == {
        "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing",
        "receiver": "monitor", "groupLabels": {}, "commonLabels": {"domain": "chat"},
        "commonAnnotations": {}, "externalURL": "http://mon:9464"}
    first, second = body["alerts"]
    assert first["status"] == "firing" and second["status"] == "resolved"
    assert set(first) == {"status", "labels", "annotations", "startsAt", "endsAt",
                          "generatorURL", "fingerprint"}
    assert STAMP.match(second["endsAt"]) and second["labels"]["alertname"] == "Latency"
    assert first["fingerprint"] == fingerprint(first["labels"])
    assert re.fullmatch(r"[0-9a-f]{16}", first["fingerprint"])

    d.send([alert(firing=False, domain="chat", severity="warning")])
    assert d.flush(5)
    assert hook.wait(2)[1]["json"]["status"] == "resolved"


def test_fingerprint_is_prometheus_labelset_fingerprint():
    assert fingerprint({}) == "cbf29ce484222325"           # FNV-1a 64 offset basis
    a = fingerprint({"alertname": "X", "domain": "chat"})
    assert a == fingerprint({"domain": "chat", "alertname": "X"})
    assert a != fingerprint({"alertname": "X", "domain": "code"})
    # the separator keeps name/value boundaries apart
    assert fingerprint({"ab": "c"}) != fingerprint({"a": "bc"})


def test_batches_of_at_most_64(receivers, dispatchers):
    am = receivers()
    d = dispatchers(alertmanagers=[am.url])
    d.send([alert(n=str(i)) for i in range(150)])
    d.start()
    assert d.flush(5)
    sizes = [len(r["json"]) for r in am.wait(3)]
    assert sizes == [64, 64, 22]
    order = [a["labels"]["n"] for r in am.requests for a in r["json"]]
    assert order == [str(i) for i in range(150)]
    assert metrics(d)[(delivery.SENT_TOTAL, am.url + "/api/v2/alerts")] == 150


def test_newer_notification_replaces_queued_one_for_same_labels(receivers, dispatchers):
    am = receivers()
    d = dispatchers(alertmanagers=[am.url])
    d.send([alert("A"), alert("B")])
    d.send([alert("A", firing=False), alert("C")])
    d.start()
    assert d.flush(5)
    [req] = am.wait(1)
    assert [(a["labels"]["alertname"], a["annotations"]["summary"]) for a in req["json"]] == [
        ("A", "A is off"), ("B", "B is on"), ("C", "C is on")]


def test_retries_with_backoff_until_success(receivers, dispatchers):
    am = receivers(statuses=[503, 429])
    d = dispatchers(alertmanagers=[am.url], max_backoff_seconds=60)
    d.start()
    d.send([alert("A")])
    d.send([alert("B")])
    assert d.flush(6)
    reqs = am.wait(3)
    gaps = [b["time"] - a["time"] for a, b in pairwise(reqs)]
    assert 0.4 < gaps[0] < 0.9 and 0.9 < gaps[1] < 1.6, gaps   # 0.5 s, then doubled
    # the last attempt carries everything queued, in order
    assert [a["labels"]["alertname"] for a in reqs[-1]["json"]][-1] == "B"
    target = am.url + "/api/v2/alerts"
    m = metrics(d)
    assert m[(delivery.FAILED_TOTAL, target)] == 2
    assert m[(delivery.DROPPED_TOTAL, target)] == 0
    assert m[(delivery.QUEUE_LENGTH, target)] == 0


def test_backoff_is_capped(receivers, dispatchers):
    hook = receivers(statuses=[500, 500, 500])
    d = dispatchers(webhooks=[hook.url], max_backoff_seconds=0.6)
    d.start()
    d.send([alert()])
    assert d.flush(5)
    reqs = hook.wait(4)
    gaps = [b["time"] - a["time"] for a, b in pairwise(reqs)]
    assert all(0.45 < g < 1.0 for g in gaps), gaps   # 0.5, then 0.6 (not 1.0, 1.2)


def test_client_errors_are_not_retried(receivers, dispatchers, caplog):
    hook = receivers(statuses=[400], body="bad label name")
    d = dispatchers(webhooks=[hook.url])
    d.start()
    d.send([alert("A"), alert("B")])
    assert d.flush(5)
    time.sleep(0.7)   # longer than the first backoff
    assert len(hook.requests) == 1
    m = metrics(d)
    assert m[(delivery.DROPPED_TOTAL, hook.url)] == 2
    assert m[(delivery.FAILED_TOTAL, hook.url)] == 1
    assert m[(delivery.SENT_TOTAL, hook.url)] == 0
    assert sum("bad label name" in r.getMessage() for r in caplog.records) == 1


def test_queue_is_bounded_and_drops_the_oldest(dispatchers):
    dead = f"http://127.0.0.1:{free_port()}"
    d = dispatchers(webhooks=[dead], queue_capacity=4)
    d.send([alert(n=str(i)) for i in range(10)])
    d.send([alert(n="9", firing=False)])   # replaces, drops nothing
    m = metrics(d)
    assert m[(delivery.QUEUE_LENGTH, dead)] == 4
    assert m[(delivery.DROPPED_TOTAL, dead)] == 6
    d.start()
    time.sleep(0.7)
    m = metrics(d)
    assert m[(delivery.FAILED_TOTAL, dead)] >= 2   # connection refused, retried
    assert m[(delivery.QUEUE_LENGTH, dead)] == 4 and m[(delivery.SENT_TOTAL, dead)] == 0


def test_send_never_blocks_and_a_hanging_target_delays_no_other(receivers, dispatchers):
    slow, fast = receivers(delay=3.0), receivers()
    d = dispatchers(alertmanagers=[slow.url], webhooks=[fast.url], timeout_seconds=5)
    d.start()
    d.send([alert("A")])
    slow.wait(1)   # the slow target's sender is now stuck in its POST
    began = time.monotonic()
    for i in range(100):
        d.send([alert("B", n=str(i))])
    assert time.monotonic() - began < 0.5   # the slow POST takes 3 s
    with fast.got:   # 101 alerts: batches of 1 (before the loop) or more, then up to 64
        assert fast.got.wait_for(
            lambda: sum(len(r["json"]["alerts"]) for r in fast.requests) == 101, 2)
    assert len(slow.requests) == 1


def test_basic_auth_is_sent_and_redacted(receivers, dispatchers, caplog):
    hook = receivers(statuses=[503])
    url = f"http://user:s3cret@127.0.0.1:{hook.port}/hook?token=t0ken"
    d = dispatchers(webhooks=[url])
    assert d.targets == [f"http://xxxxx@127.0.0.1:{hook.port}/hook?xxxxx"]
    d.start()
    d.send([alert()])
    assert d.flush(5)
    req = hook.wait(2)[-1]
    assert req["headers"]["Authorization"] == "Basic dXNlcjpzM2NyZXQ="
    assert req["path"] == "/hook?token=t0ken"
    text = caplog.text + str(metrics(d))
    assert "s3cret" not in text and "t0ken" not in text
    assert redact("https://am:9093/") == "https://am:9093/"


def test_metric_families(receivers, dispatchers):
    am, hook = receivers(), receivers()
    d = dispatchers(alertmanagers=[am.url], webhooks=[hook.url])
    assert d.targets == [am.url + "/api/v2/alerts", hook.url]
    d.start()
    d.send([alert()])
    assert d.flush(5)
    families = {f.name: f for f in d.collect()}
    assert {name: f.type for name, f in families.items()} == {
        "monitor_alert_notifications_sent": "counter",
        "monitor_alert_notifications_failed": "counter",
        "monitor_alert_notifications_dropped": "counter",
        "monitor_alert_queue_length": "gauge"}
    m = metrics(d)
    for target in d.targets:
        assert m[(delivery.SENT_TOTAL, target)] == 1
        assert m[(delivery.QUEUE_LENGTH, target)] == 0


def test_no_targets_is_a_no_op(dispatchers):
    d = dispatchers()
    d.start()
    d.send([alert()])
    assert d.flush(0.1) and d.targets == [] and metrics(d) == {}
    d.close()


def test_close_drains_then_stops(receivers, dispatchers):
    hook = receivers()
    dead = f"http://127.0.0.1:{free_port()}"
    d = dispatchers(webhooks=[hook.url, dead])
    d.start()
    d.send([alert()])
    began = time.monotonic()
    d.close(timeout=1.0)   # the dead target cannot drain: close gives up after 1 s
    assert 0.9 < time.monotonic() - began < 2.0
    assert len(hook.requests) == 1
    assert not any(t.thread.is_alive() for t in d._targets)
    d.send([alert("After")])   # ignored once closed
    assert metrics(d)[(delivery.QUEUE_LENGTH, hook.url)] == 0
