"""Alert delivery against a real Alertmanager (Debian package prometheus-alertmanager,
v0.25) and a webhook receiver that comes up late."""

from __future__ import annotations

import time

import pytest

from monitor.alerts import delivery
from monitor.alerts.delivery import Dispatcher, fingerprint
from monitor.alerts.model import Notification
from monitor.broker import free_port
from monitor.config import AlertingConfig
from tests.receiver import Receiver

pytestmark = pytest.mark.integration

@pytest.fixture
def dispatchers():
    made: list[Dispatcher] = []

    def make(**config) -> Dispatcher:
        made.append(Dispatcher(AlertingConfig(timeout_seconds=5, **config)))
        made[-1].start()
        return made[-1]

    yield make
    for d in made:
        d.close(timeout=0.5)


def poll(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def ours(alerts: list[dict], labels: dict) -> list[dict]:
    return [a for a in alerts if a["labels"] == labels]


def notification(labels: dict, firing: bool = True) -> Notification:
    now = time.time()
    return Notification(labels=labels, annotations={"summary": "prompt length drift in chat"},
                        starts_at=now - 30, ends_at=now + 240 if firing else now - 0.5,
                        generator_url="http://127.0.0.1:9464/api/v1/alerts")


def test_alertmanager_receives_firing_then_resolved(alertmanager, dispatchers):
    labels = {"alertname": "PromptLengthDrift", "domain": "chat", "severity": "warning"}
    d = dispatchers(alertmanagers=[alertmanager.url])
    d.send([notification(labels)])
    assert d.flush(10)

    [alert] = poll(lambda: ours(alertmanager.alerts(), labels), what="the firing alert")
    assert alert["annotations"] == {"summary": "prompt length drift in chat"}
    assert alert["status"]["state"] == "active"
    assert alert["generatorURL"] == "http://127.0.0.1:9464/api/v1/alerts"
    assert alert["fingerprint"] == fingerprint(labels)   # our fingerprint is Alertmanager's

    # Alertmanager routes it to its own webhook: the payload we imitate.
    am_hook = alertmanager.hook
    firing = poll(lambda: [r["json"] for r in am_hook.requests
                           if r["json"]["status"] == "firing"], what="Alertmanager's webhook")[0]

    d.send([notification(labels, firing=False)])
    assert d.flush(10)
    # Alertmanager drops resolved alerts from its API at once, whatever the filters.
    poll(lambda: not ours(alertmanager.alerts("?active=true"), labels), what="resolution")
    assert ours(alertmanager.alerts("?active=false&unprocessed=true"), labels) == []
    resolved = poll(lambda: [r["json"] for r in am_hook.requests
                             if r["json"]["status"] == "resolved"], what="resolved webhook")[0]
    assert resolved["alerts"][0]["status"] == "resolved"

    # Our webhook payload has exactly the keys of Alertmanager's (version 4).
    mine = delivery.webhook_payload([notification(labels)], time.time(), "http://x")
    assert firing["version"] == mine["version"] == "4"
    assert set(firing) == set(mine)
    assert set(firing["alerts"][0]) == set(mine["alerts"][0])
    assert firing["alerts"][0]["fingerprint"] == mine["alerts"][0]["fingerprint"]
    assert firing["groupKey"] == mine["groupKey"] == "{}:{}"
    assert firing["commonLabels"] == mine["commonLabels"] == labels

    target = f"{alertmanager.url}/api/v2/alerts"
    sent = {f.name: f.samples[0].value for f in d.collect()}
    assert sent["monitor_alert_notifications_sent"] == 2
    assert sent["monitor_alert_notifications_failed"] == 0
    assert d.targets == [target]


def test_alertmanager_refusal_is_not_retried(alertmanager, dispatchers):
    good = {"alertname": "Good", "domain": "chat"}
    d = dispatchers(alertmanagers=[alertmanager.url])
    d.send([notification(good), notification({"alertname": "Bad", "bad-name": "x"})])
    assert d.flush(10)
    time.sleep(0.7)   # past the first backoff: no second attempt
    counts = {f.name: f.samples[0].value for f in d.collect()}
    assert counts["monitor_alert_notifications_failed"] == 1
    assert counts["monitor_alert_notifications_dropped"] == 2
    # Alertmanager 0.25 answers 400 for the batch yet keeps its valid alerts.
    poll(lambda: ours(alertmanager.alerts(), good), what="the valid alert")


def test_webhook_that_comes_up_late_gets_the_alert(dispatchers):
    port = free_port()   # nothing listens yet
    labels = {"alertname": "GoldenRegression", "domain": "code", "severity": "page"}
    d = dispatchers(webhooks=[f"http://127.0.0.1:{port}/hook"], external_url="http://mon:9464")
    d.send([notification(labels)])
    time.sleep(2.0)
    counts = {f.name: f.samples[0].value for f in d.collect()}
    assert counts["monitor_alert_notifications_failed"] >= 2   # refused, backing off
    assert counts["monitor_alert_queue_length"] == 1

    receiver = Receiver(port=port)
    try:
        assert d.flush(10), "the queued alert never reached the late receiver"
        [request] = receiver.requests
        body = request["json"]
        assert request["path"] == "/hook"
        assert body["version"] == "4" and body["status"] == "firing"
        assert body["receiver"] == "monitor" and body["externalURL"] == "http://mon:9464"
        assert body["commonLabels"] == labels
        [alert] = body["alerts"]
        assert alert["labels"] == labels and alert["status"] == "firing"
        assert alert["annotations"] == {"summary": "prompt length drift in chat"}
        assert alert["fingerprint"] == fingerprint(labels)
        counts = {f.name: f.samples[0].value for f in d.collect()}
        assert counts["monitor_alert_notifications_sent"] == 1
        assert counts["monitor_alert_queue_length"] == 0
    finally:
        receiver.close()
