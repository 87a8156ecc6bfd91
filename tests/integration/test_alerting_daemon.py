"""The daemon's own rule evaluation, end to end: a real `monitor run` subprocess
consuming from the real Tansu broker evaluates Prometheus rule files over its
own /metrics and delivers alerts to a real Alertmanager (Debian package
prometheus-alertmanager, v0.25) and to webhooks; reloads (POST /-/reload with
the bearer token, SIGHUP) are all-or-nothing; a bad rule file stops the start;
alert state survives a restart. Semantic drift is off: no torch here.

Rule groups use `interval: 1s` and `for:` of a few seconds; the daemon flushes
(and so may evaluate) every 0.2 s. Every wait polls with a deadline."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

from monitor.alerts.delivery import fingerprint
from monitor.broker import free_port
from tests.integration.conftest import DaemonProcess
from tests.receiver import Receiver

pytestmark = pytest.mark.integration

TOKEN = "it-token-5f1c0a"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


# -- processes -------------------------------------------------------------------

class AlertingDaemon(DaemonProcess):
    """A DaemonProcess that may get MONITOR_API_TOKEN and extra command-line
    arguments (DaemonProcess.start strips every MONITOR_* variable)."""

    def __init__(self, *args, token: str | None = None, extra_args: tuple[str, ...] = (),
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.token = token
        self.extra_args = list(extra_args)

    def start(self) -> AlertingDaemon:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
        if self.token is not None:
            env["MONITOR_API_TOKEN"] = self.token
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "--config", str(self.config_path),
                 *self.extra_args],
                cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        return self

    def configure(self, text: str) -> None:
        with open(self.config_path, "a") as config:
            config.write(text)

    def write_rules(self, name: str, text: str) -> Path:
        folder = self.workdir / "rules"
        folder.mkdir(exist_ok=True)
        path = folder / name
        # Write then rename: a reload never sees half a file.
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(path)
        return path

    def alerts(self) -> list[dict]:
        status, body = self.get("/api/v1/alerts")
        assert status == 200, body
        doc = json.loads(body)
        assert doc["status"] == "success"
        return doc["data"]["alerts"]

    def alert(self, alertname: str) -> dict | None:
        found = [a for a in self.alerts() if a["labels"].get("alertname") == alertname]
        assert len(found) <= 1, found
        return found[0] if found else None

    def sample(self, name: str, **labels) -> float | None:
        """The value of the one sample with exactly these labels, or None."""
        return self.metrics().get((name, frozenset(labels.items())))

    def samples(self, name: str) -> list[tuple[dict, float]]:
        return [(dict(labels), value) for (n, labels), value in self.metrics().items()
                if n == name]

    def reload(self, token: str | None) -> tuple[int, str]:
        request = urllib.request.Request(self.url + "/-/reload", data=b"", method="POST")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon still running after {timeout}s; "
                                 f"log:\n{self.log_tail()}") from None


@pytest.fixture
def daemons(tmp_path, broker, topic):
    made: list[AlertingDaemon] = []

    def make(token: str | None = None, extra_args: tuple[str, ...] = (),
             workdir: Path | None = None) -> AlertingDaemon:
        workdir = workdir or tmp_path / f"daemon{len(made)}"
        workdir.mkdir(parents=True, exist_ok=True)
        daemon = AlertingDaemon(workdir, broker.bootstrap_servers, topic, semantic=False,
                                token=token, extra_args=extra_args)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.cleanup()


class RecordStream:
    """Produces `rate` records per second of one domain from a background thread
    until `stop()` (records stamped with the current time, epoch milliseconds);
    with rate 0, only the records `send(count)` is asked for."""

    def __init__(self, bootstrap: str, topic: str, domain: str = "legal", rate: float = 10.0):
        from kafka import KafkaProducer

        self.topic, self.domain, self.rate = topic, domain, rate
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
        self.sent = 0
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="records", daemon=True)
        if rate > 0:   # rate 0: only what `send` is asked for
            self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                self.send(1)
                self._stop.wait(max(0.0, 1.0 / self.rate - (time.monotonic() - started)))
        except Exception as exc:  # noqa: BLE001 (reported by stop())
            self.error = exc

    def send(self, count: int) -> None:
        for _ in range(count):
            record = {"schema_version": 1, "timestamp": int(time.time() * 1000),
                      "domain": self.domain, "input": {"tokens": 10, "text": "hello"},
                      "output": {"text": "hi", "tokens": 2}, "status": "ok", "latency_ms": 100}
            self.producer.send(self.topic, key=self.domain.encode(),
                               value=json.dumps(record).encode())
            self.sent += 1
        self.producer.flush(timeout=30)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=30)
        self.producer.close(timeout=10)
        if self.error is not None:
            raise AssertionError(f"producing failed: {self.error!r}")


def produce_once(bootstrap: str, topic: str, count: int, domain: str = "legal") -> None:
    stream = RecordStream(bootstrap, topic, domain, rate=0)
    try:
        stream.send(count)
    finally:
        stream.stop()


# -- helpers -----------------------------------------------------------------------

def poll(predicate, timeout: float, what: str, daemon: AlertingDaemon | None = None,
         interval: float = 0.2):
    """predicate()'s first truthy value within `timeout` seconds; fails early,
    with the log, when the daemon exits (a refused or reset connection counts as
    "not yet", so that an exit is reported as such)."""
    deadline = time.monotonic() + timeout
    while True:
        if daemon is not None:
            daemon.assert_running()
        try:
            value = predicate()
        except (ConnectionError, urllib.error.URLError):
            if daemon is not None:
                time.sleep(0.1)
                daemon.assert_running()
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            tail = f"; daemon log:\n{daemon.log_tail()}" if daemon is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{tail}")
        time.sleep(interval)


def firing(daemon: AlertingDaemon, alertname: str) -> dict | None:
    alert = daemon.alert(alertname)
    return alert if alert is not None and alert["state"] == "firing" else None


def parse_time(text: str) -> datetime:
    assert RFC3339.match(text), text
    return datetime.fromisoformat(text)   # Python 3.11 reads the Z


def webhook_alerts(receiver: Receiver, alertname: str, status: str | None = None,
                   after: int = 0) -> list[dict]:
    """Alerts named `alertname` in the v4 payloads received (from request `after` on)."""
    out = []
    for request in list(receiver.requests)[after:]:
        for alert in request["json"]["alerts"]:
            if alert["labels"].get("alertname") == alertname and (
                    status is None or alert["status"] == status):
                out.append(alert)
    return out


def group(name: str, *rules: str, interval: str = "1s") -> str:
    return (f"groups:\n  - name: {name}\n    interval: {interval}\n    rules:\n"
            + "".join(rules))


def alert_rule(name: str, expr: str, for_: str, labels: str = "", annotations: str = "") -> str:
    text = f"      - alert: {name}\n        expr: {expr}\n        for: {for_}\n"
    if labels:
        text += f"        labels: {labels}\n"
    if annotations:
        text += f"        annotations:\n{annotations}"
    return text


# -- 1. Alertmanager ---------------------------------------------------------------

INGEST_RULES = group(
    "ingest",
    alert_rule("RecordsFlowing", "sum by (domain) (rate(monitor_records_total[4s])) > 0", "2s",
               labels="{severity: warning, action: retrain}",
               annotations='          summary: "{{ $labels.domain }} ingests '
                           '{{ $value | humanize }} records/s"\n'))


def test_alertmanager_receives_the_daemons_alert_then_its_resolution(
        daemons, alertmanager, broker, topic):
    daemon = daemons()
    daemon.configure("alerting:\n"
                     f"  alertmanagers: [{alertmanager.url}]\n"
                     "  timeout_seconds: 5\n"
                     "  max_backoff_seconds: 1\n")
    daemon.write_rules("ingest.yml", INGEST_RULES)
    daemon.start()
    daemon.wait_ready()
    assert daemon.alerts() == []   # no records yet: rate() has no series
    assert daemon.sample("monitor_rules_last_reload_successful") == 1

    labels = {"alertname": "RecordsFlowing", "domain": "legal", "severity": "warning",
              "action": "retrain"}
    summary = re.compile(r"^legal ingests (\d+(\.\d+)?[kmM]?) records/s$")
    stream = RecordStream(broker.bootstrap_servers, topic, rate=10)
    try:
        # Pending first (for: 2s), then firing, on the daemon itself ...
        mine = poll(lambda: firing(daemon, "RecordsFlowing"), 45, "RecordsFlowing firing",
                    daemon)
        assert mine["labels"] == labels
        assert summary.match(mine["annotations"]["summary"]), mine["annotations"]
        assert float(mine["value"]) > 0
        active_at = parse_time(mine["activeAt"])
        assert abs(time.time() - active_at.timestamp()) < 60
        assert daemon.sample("monitor_alerts", alertstate="firing", **labels) == 1
        assert daemon.sample("monitor_alerts", alertstate="pending", **labels) is None

        # ... and in the real Alertmanager, with our labels and the expanded annotation.
        [am_alert] = poll(lambda: [a for a in alertmanager.alerts()
                                   if a["labels"].get("alertname") == "RecordsFlowing"],
                          20, "the alert in Alertmanager", daemon)
        assert am_alert["labels"] == labels
        assert summary.match(am_alert["annotations"]["summary"]), am_alert["annotations"]
        assert am_alert["status"]["state"] == "active"
        assert am_alert["fingerprint"] == fingerprint(labels)
        assert am_alert["generatorURL"].endswith("/api/v1/alerts?rule=RecordsFlowing")
        # startsAt is when it fired: after it became active, at most a few seconds later.
        starts = parse_time(am_alert["startsAt"]).timestamp()
        assert active_at.timestamp() + 1.5 <= starts <= active_at.timestamp() + 10
        # The default resend delay (60 s) makes endsAt 4 minutes ahead: the alert can
        # only leave Alertmanager below because the daemon sends its resolution.
        assert parse_time(am_alert["endsAt"]).timestamp() - time.time() > 120
        sent = {sample_labels["target"]: value for sample_labels, value in
                daemon.samples("monitor_alert_notifications_sent_total")}
        assert list(sent) == [f"{alertmanager.url}/api/v2/alerts"]
        assert min(sent.values()) >= 1
    finally:
        stream.stop()
    assert stream.sent > 0

    # No more records: rate() over 4 s drops to 0, the alert resolves, the
    # resolution (endsAt in the past) reaches Alertmanager, which drops it at once.
    poll(lambda: daemon.alert("RecordsFlowing") is None, 30, "the alert to resolve", daemon)
    assert daemon.sample("monitor_alerts", alertstate="firing", **labels) is None
    poll(lambda: not [a for a in alertmanager.alerts("?active=true")
                      if a["labels"].get("alertname") == "RecordsFlowing"],
         20, "the alert to leave Alertmanager", daemon)
    # Alertmanager itself routed both to its webhook receiver.
    hook = alertmanager.hook
    poll(lambda: [a for r in list(hook.requests) for a in r["json"]["alerts"]
                  if a["labels"] == labels and a["status"] == "resolved"],
         20, "Alertmanager's resolved notification", daemon)
    assert [a for r in list(hook.requests) for a in r["json"]["alerts"]
            if a["labels"] == labels and a["status"] == "firing"]
    assert daemon.sample("monitor_alert_notifications_failed_total",
                         target=f"{alertmanager.url}/api/v2/alerts") == 0
    # Sent once firing, once resolved (no re-send within the 60 s resend delay).
    assert daemon.sample("monitor_alert_notifications_sent_total",
                         target=f"{alertmanager.url}/api/v2/alerts") == 2


# -- 2. a webhook that comes up late ------------------------------------------------------

def test_webhook_that_comes_up_late_gets_the_alert(daemons, receivers, broker, topic):
    port = free_port()   # nothing listens there yet
    hook_url = f"http://127.0.0.1:{port}/hooks/monitor"
    daemon = daemons()
    daemon.configure("alerting:\n"
                     f"  webhooks: [{hook_url}]\n"
                     "  external_url: http://monitor.example:9464\n"
                     "  resend_delay_seconds: 1\n"
                     "  timeout_seconds: 2\n"
                     "  max_backoff_seconds: 1\n")
    daemon.write_rules("seen.yml", group(
        "seen", alert_rule("RecordsSeen", "sum by (domain) (monitor_records_total) > 0", "1s",
                           labels="{severity: page}",
                           annotations='          summary: "{{ $labels.domain }} has '
                                       '{{ $value }} records"\n')))
    daemon.start()
    daemon.wait_ready()
    # Without MONITOR_API_TOKEN the mutating endpoint is disabled.
    assert daemon.reload(None)[0] == 403
    assert daemon.reload(TOKEN)[0] == 403

    produce_once(broker.bootstrap_servers, topic, 5)
    poll(lambda: firing(daemon, "RecordsSeen"), 45, "RecordsSeen firing", daemon)

    def failed() -> float:
        return daemon.sample("monitor_alert_notifications_failed_total", target=hook_url) or 0

    poll(lambda: failed() >= 2, 20, "failed webhook attempts", daemon)
    assert daemon.sample("monitor_alert_notifications_sent_total", target=hook_url) == 0
    assert daemon.sample("monitor_alert_queue_length", target=hook_url) >= 1
    # Delivery failures never block ingestion: 5 more records are counted, and the
    # re-sent notification (every second) replaces the queued one with the new value.
    produce_once(broker.bootstrap_servers, topic, 5)
    daemon.wait_for_total(10, timeout=30)
    # (Prometheus' API writes values in Go's %e format.)
    poll(lambda: (daemon.alert("RecordsSeen") or {}).get("value") == "1e+01", 10,
         "the alert's value to follow the records", daemon)

    receiver = receivers(port=port)
    poll(lambda: webhook_alerts(receiver, "RecordsSeen", "firing"), 20,
         "the webhook payload", daemon)
    request = receiver.requests[0]
    assert request["path"] == "/hooks/monitor"
    body = request["json"]
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == "monitor"
    assert body["groupKey"] == "{}:{}"
    assert body["externalURL"] == "http://monitor.example:9464"
    labels = {"alertname": "RecordsSeen", "domain": "legal", "severity": "page"}
    [alert] = [a for a in body["alerts"] if a["labels"]["alertname"] == "RecordsSeen"]
    assert alert["labels"] == labels
    assert alert["status"] == "firing"
    assert alert["annotations"]["summary"] in ("legal has 5 records", "legal has 10 records")
    assert alert["fingerprint"] == fingerprint(labels)
    assert alert["generatorURL"] == ("http://monitor.example:9464/api/v1/alerts"
                                     "?rule=RecordsSeen")
    assert parse_time(alert["endsAt"]) > parse_time(alert["startsAt"])
    poll(lambda: [a for a in webhook_alerts(receiver, "RecordsSeen", "firing")
                  if a["annotations"]["summary"] == "legal has 10 records"], 10,
         "a notification with the new value", daemon)
    poll(lambda: (daemon.sample("monitor_alert_notifications_sent_total", target=hook_url)
                  or 0) >= 1, 10, "the sent counter", daemon)
    assert failed() >= 2


# -- 3. reloads --------------------------------------------------------------------------

GOOD_RULES = group("main", alert_rule("AlwaysOn", "max(monitor_build_info) > 0", "1s",
                                      labels="{severity: info}"))
# An unparsable expression: promtool reports the expr node's position, 6:15.
BROKEN_RULES = group("main", alert_rule("AlwaysOn", "max(monitor_build_info > 0", "1s",
                                        labels="{severity: info}"))
BROKEN_AT = "6:15"
NEW_RULES = group("main", alert_rule("AfterHangup", "vector(1) > 0", "1s",
                                     labels="{severity: info}"))


def test_broken_reload_keeps_the_old_rules_then_sighup_loads_new_ones(daemons):
    daemon = daemons(token=TOKEN)
    rules = daemon.write_rules("main.yml", GOOD_RULES)
    daemon.start()
    daemon.wait_ready()
    before = poll(lambda: firing(daemon, "AlwaysOn"), 30, "AlwaysOn firing", daemon)

    rules.write_text(BROKEN_RULES)
    assert daemon.reload(None)[0] == 401
    assert daemon.reload("wrong-token")[0] == 401
    status, body = daemon.reload(TOKEN)
    assert status == 500, body
    assert f"rules/main.yml: {BROKEN_AT}:" in body, body
    assert "AlwaysOn" in body

    # The old rules keep running: still firing, same activeAt, still evaluated.
    evaluations = daemon.sample("monitor_rule_evaluations_total")
    assert daemon.sample("monitor_rules_last_reload_successful") == 0
    poll(lambda: daemon.sample("monitor_rule_evaluations_total") >= evaluations + 2, 10,
         "evaluations to go on after the failed reload", daemon)
    after = firing(daemon, "AlwaysOn")
    assert after is not None and after["activeAt"] == before["activeAt"]
    assert daemon.sample("monitor_alerts", alertname="AlwaysOn", alertstate="firing",
                         severity="info") == 1
    assert daemon.sample("monitor_rules_last_reload_successful") == 0
    log = daemon.log_text()
    assert re.search(rf"main\.yml: {BROKEN_AT}: .*could not parse expression", log), \
        daemon.log_tail()

    # Fixed with a different rule and SIGHUP: reloaded, the new alert replaces the old.
    rules.write_text(NEW_RULES)
    daemon.process.send_signal(signal.SIGHUP)
    poll(lambda: daemon.sample("monitor_rules_last_reload_successful") == 1, 15,
         "the SIGHUP reload", daemon)
    poll(lambda: firing(daemon, "AfterHangup"), 15, "AfterHangup firing", daemon)
    assert daemon.alert("AlwaysOn") is None
    assert daemon.sample("monitor_alerts", alertname="AfterHangup", alertstate="firing",
                         severity="info") == 1
    assert daemon.sample("monitor_alerts", alertname="AlwaysOn", alertstate="firing",
                         severity="info") is None
    # And POST /-/reload succeeds with good files, keeping the state of unchanged rules.
    active_at = firing(daemon, "AfterHangup")["activeAt"]
    assert daemon.reload(TOKEN) == (200, "Rules reloaded.\n")
    assert daemon.sample("monitor_rules_last_reload_successful") == 1
    evaluations = daemon.sample("monitor_rule_evaluations_total")
    poll(lambda: daemon.sample("monitor_rule_evaluations_total") >= evaluations + 2, 10,
         "evaluations after the reload", daemon)
    again = firing(daemon, "AfterHangup")
    assert again is not None and again["activeAt"] == active_at
    assert daemon.process.poll() is None


# -- 4. a bad rule file at start -------------------------------------------------------------

UNSUPPORTED_RULES = group(
    "other",
    alert_rule("Fine", "vector(1) > 0", "1s"),
    alert_rule("Unsupported", "histogram_quantile(0.9, rate(monitor_records_total[1m])) > 1",
               "1s"))
UNSUPPORTED_AT = "9:15"


@pytest.mark.parametrize("where", ["rules-folder", "rules-option"])
def test_bad_rule_file_at_start_exits_2_naming_every_error(daemons, where):
    if where == "rules-folder":
        daemon = daemons()
        daemon.write_rules("a.yml", BROKEN_RULES)
        daemon.write_rules("b.yml", UNSUPPORTED_RULES)
        expected = [("rules/a.yml", BROKEN_AT), ("rules/b.yml", UNSUPPORTED_AT)]
    else:
        # --rules overrides the default folder, whose good file is then not read.
        daemon = daemons(extra_args=("--rules", "elsewhere/a.yml", "--rules", "elsewhere/b.yml"))
        daemon.write_rules("good.yml", GOOD_RULES)
        elsewhere = daemon.workdir / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "a.yml").write_text(BROKEN_RULES)
        (elsewhere / "b.yml").write_text(UNSUPPORTED_RULES)
        expected = [("elsewhere/a.yml", BROKEN_AT), ("elsewhere/b.yml", UNSUPPORTED_AT)]
    daemon.start()
    assert daemon.wait_exit(60) == 2, daemon.log_tail()
    out = daemon.log_text()
    for path, at in expected:
        assert re.search(rf"{re.escape(path)}: {at}: ", out), out
    assert "could not parse expression" in out
    assert "histogram_quantile() is not supported" in out
    assert "Traceback" not in out
    with pytest.raises(OSError):   # it never served
        daemon.get("/-/healthy")


# -- 5. a restart keeps alert state -----------------------------------------------------------

RESTART_RULES = group(
    "restart",
    alert_rule("RecordsSeen", "sum by (domain) (monitor_records_total) > 0", "3s",
               labels="{severity: warning}"),
    alert_rule("SlowBurn", "sum by (domain) (monitor_records_total) > 0", "1h",
               labels="{severity: warning}"))


@pytest.mark.parametrize("stop", ["sigterm", "kill9"])
def test_restart_keeps_firing_alert_and_pending_timer(daemons, receivers, broker, topic, stop):
    receiver = receivers()
    daemon = daemons()
    daemon.configure("alerting:\n"
                     f"  webhooks: [{receiver.url}/hook]\n"
                     "  resend_delay_seconds: 1\n"
                     "  timeout_seconds: 5\n"
                     "  max_backoff_seconds: 1\n")
    daemon.write_rules("restart.yml", RESTART_RULES)
    daemon.start()
    daemon.wait_ready()
    produce_once(broker.bootstrap_servers, topic, 3)

    fired = poll(lambda: firing(daemon, "RecordsSeen"), 45, "RecordsSeen firing", daemon)
    slow = daemon.alert("SlowBurn")
    assert slow is not None and slow["state"] == "pending"
    [first] = poll(lambda: webhook_alerts(receiver, "RecordsSeen", "firing")[:1], 15,
                   "the firing webhook", daemon)
    starts_at = first["startsAt"]
    # startsAt is when it fired, `for:` after it became active.
    assert parse_time(starts_at).timestamp() - parse_time(fired["activeAt"]).timestamp() >= 2.9

    if stop == "sigterm":
        assert daemon.terminate() == 0, daemon.log_tail()
    else:
        # The alert state is saved after every evaluation round, not only at a clean
        # stop: once a round after the firing one is done, a kill -9 loses nothing.
        evaluations = daemon.sample("monitor_rule_evaluations_total")
        poll(lambda: daemon.sample("monitor_rule_evaluations_total") >= evaluations + 4, 10,
             "two more evaluation rounds", daemon)
        daemon.kill9(whole_group=True)
    seen_before = len(receiver.requests)

    daemon.start()
    daemon.wait_ready()
    # Right after the restart: still firing (not pending again), same activeAt;
    # the pending alert's `for:` timer did not restart either.
    again = daemon.alert("RecordsSeen")
    assert again is not None, daemon.log_tail()
    assert (again["state"], again["activeAt"]) == ("firing", fired["activeAt"])
    slow_again = daemon.alert("SlowBurn")
    assert slow_again is not None
    assert (slow_again["state"], slow_again["activeAt"]) == ("pending", slow["activeAt"])

    # The notification re-sent after the restart carries the same startsAt.
    [resent] = poll(lambda: webhook_alerts(receiver, "RecordsSeen", "firing",
                                           after=seen_before)[:1], 15,
                    "the webhook after the restart", daemon)
    assert resent["startsAt"] == starts_at
    assert resent["fingerprint"] == first["fingerprint"]
    # Nothing was resolved across the restart, and it stays firing with the same activeAt.
    assert webhook_alerts(receiver, "RecordsSeen", "resolved") == []
    later = firing(daemon, "RecordsSeen")
    assert later is not None and later["activeAt"] == fired["activeAt"]
    assert daemon.terminate() == 0, daemon.log_tail()
