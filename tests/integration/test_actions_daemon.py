"""Closing the loop, end to end: a real `monitor run` subprocess, the real local
broker (Tansu), a real registry file, a local HTTP receiver as the serving hook
(vLLM preset) and the `monitor` commands as subprocesses.

- a golden regression alert with `action: rollback` rolls the domain back
  exactly once: registry, control-topic event (read back from the broker),
  serving-hook calls, audit entry and `monitor_actions_total` agree;
- a repeated firing after a re-rollout is skipped by the cooldown;
- `approval: required` parks the rollback; the HTTP API approves it (401
  without the token);
- `kill -9` between the registry write and the publish: after a restart the
  event is published exactly once; also after the send, before it was marked;
- promotion of a regressed candidate is refused; `--force` works and is audited;
- a drift alert with `action: retrain` yields a request whose snapshot holds
  records of that domain only and whose lineage matches the window.

Golden verdicts are written into the state store before the daemon starts (the
evaluation itself is tested in test_eval_daemon); rule groups run every second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import orjson
import psutil
import pytest
from kafka import KafkaConsumer, TopicPartition

from monitor.actions.store import ActionStore
from monitor.registry import load_registry, set_active
from monitor.state import StateStore
from monitor.synthetic import produce
from tests.integration.test_alerting_daemon import AlertingDaemon
from tests.integration.test_drift_kafka import DRIFT_CONFIG, HEALTHY, SHIFTED_LEGAL, records

pytestmark = pytest.mark.integration

TOKEN = "actions-token-7c2e"
REGISTRY = """\
# legal: v2 was rolled out although it regressed against v1
base_models:
  tiny: {path: base}
domains:
  legal:
    base_model: tiny
    kind: lora
    active: v2          # the regressed one
    golden_set: legal/golden.jsonl
    versions:
      v1: {path: legal/v1, status: good}
      v2: {path: legal/v2}
"""
ROLLBACK_RULE = """\
groups:
  - name: golden
    interval: 1s
    rules:
      - alert: GoldenRegression
        expr: >-
          count by (domain, version) (monitor_golden_regression == 1)
            and on (domain, version) monitor_adapter_active_info == 1
        for: 1s
        labels:
          severity: critical
          action: rollback
{extra}"""
RETRAIN_RULE = """\
groups:
  - name: drift
    interval: 1s
    rules:
      - alert: InputDrift
        expr: max by (domain) (monitor_drift_detected) == 1
        labels:
          severity: warning
          action: retrain
"""


class Daemon(AlertingDaemon):
    """With extra environment variables (a fault to inject)."""

    env: dict = {}

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
        env.update(self.env)
        if self.token is not None:
            env["MONITOR_API_TOKEN"] = self.token
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "--config", str(self.config_path)],
                cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        return self


@pytest.fixture
def world(tmp_path, broker, topic, receivers):
    """A registry (legal: v2 active and regressed, v1 passing) with verdicts in the
    store, a control topic of its own and a serving hook."""
    for version in ("v1", "v2"):
        (tmp_path / "legal" / version).mkdir(parents=True)
    (tmp_path / "base").mkdir()
    (tmp_path / "legal" / "golden.jsonl").write_text(
        '{"id": "1", "prompt": "p", "reference": "r"}\n')
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY)
    state = StateStore(f"sqlite:///{tmp_path}/state.db")
    now = time.time()
    for version, value, against in (("v1", "pass", "base"), ("v2", "regressed", "v1")):
        state.save_eval_run({
            "id": uuid.uuid4().hex, "domain": "legal", "version": version, "started_at": now,
            "finished_at": now, "status": "done", "verdict": value,
            "doc": {"domain": "legal", "version": version, "n": 1,
                    "scores": {"nll": 1.0}, "verdict": value,
                    "comparisons": [{"baseline": against, "metric": "nll", "delta": -1.0,
                                     "ci_low": -2.0, "ci_high": -0.5,
                                     "regressed": value == "regressed"}]}})
    state.close()
    hook = receivers()
    control = f"control-{uuid.uuid4().hex[:8]}"
    broker.create_topic(control, partitions=1)

    class World:
        pass

    w = World()
    w.__dict__.update(root=tmp_path, registry=registry, hook=hook, control=control,
                      broker=broker, topic=topic, made=[])
    yield w
    for daemon in w.made:
        daemon.cleanup()


def start(world, rule: str, *, env: dict | None = None, extra_config: str = "",
          token: str | None = TOKEN, ready: bool = True) -> Daemon:
    # A group of its own: a daemon killed with SIGKILL stays a member until its
    # session times out, which the broker may take long to notice.
    daemon = Daemon(world.root, world.broker.bootstrap_servers, world.topic, semantic=False,
                    token=token, group=f"it-{world.topic}-{len(world.made)}")
    daemon.env = env or {}
    daemon.write_rules("rules.yml", rule)
    daemon.configure(
            f"registry:\n  path: {world.registry}\n"
            f"rules:\n  paths: [{world.root / 'rules'}]\n"
            "actions:\n"
            f"  control_topic: {world.control}\n"
            "  retrain:\n"
            f"    topic: retrain-{world.control}\n"
            f"    snapshot_dir: {world.root / 'snapshots'}\n"
            "  serving_hook:\n"
            f"    url: {world.hook.url}\n"
            "    preset: vllm\n" + extra_config)
    world.made.append(daemon)
    daemon.start()
    if ready:
        daemon.wait_ready()
    return daemon


def active(world) -> str:
    return load_registry(world.registry).domains["legal"].active


def topic_values(world, topic: str) -> list[dict]:
    consumer = KafkaConsumer(bootstrap_servers=world.broker.bootstrap_servers,
                             enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out = []
        deadline = time.monotonic() + 20
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, "topic not read back in 20s"
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend(orjson.loads(r.value) for r in batch)
        return out
    finally:
        consumer.close()


def wait(what: str, check, daemon: Daemon | None = None, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        if daemon is not None:
            daemon.assert_running()
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = daemon.log_tail(60) if daemon is not None else ""
            raise AssertionError(f"not within {timeout}s: {what}\n{tail}")
        time.sleep(0.25)


def actions(world) -> ActionStore:
    return ActionStore(StateStore(f"sqlite:///{world.root}/state.db"))


def cli(world, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    return subprocess.run([sys.executable, "-m", "monitor", *args, "--config",
                           str(world.root / "monitor.yaml")], capture_output=True, text=True,
                          timeout=120, env=env, cwd=world.root)


def http(daemon, method: str, path: str, token: str | None = None):
    request = urllib.request.Request(daemon.url + path, method=method,
                                     data=b"" if method == "POST" else None)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, body


# -- tests ----------------------------------------------------------------------------------
def test_a_regression_alert_rolls_back_exactly_once_and_everything_agrees(world):
    daemon = start(world, ROLLBACK_RULE.format(extra=""))

    wait("the rollback", lambda: active(world) == "v1", daemon)
    wait("the serving hook's calls", lambda: len(world.hook.requests) >= 2, daemon)
    wait("the control event", lambda: topic_values(world, world.control), daemon)
    wait("monitor_actions_total", lambda: daemon.sample(
        "monitor_actions_total", domain="legal", action="rollback", outcome="executed"), daemon)
    time.sleep(3)  # rounds go on: the alert resolves, nothing more happens

    store = actions(world)
    try:
        [action] = store.list()
        [entry] = store.audit_log("legal")
    finally:
        store.state.close()
    assert action["status"] == "executed" and action["actor"] == "rule:GoldenRegression"
    [event] = topic_values(world, world.control)
    assert {k: event[k] for k in ("id", "domain", "from", "to", "reason", "kind")} == {
        "id": action["id"], "domain": "legal", "from": "v2", "to": "v1", "reason": "rollback",
        "kind": "lora"}
    assert event["alert"]["alertname"] == "GoldenRegression"
    assert event["path"] == str(world.root / "legal" / "v1")
    assert [(r["path"], r["json"]) for r in world.hook.requests] == [
        ("/v1/unload_lora_adapter", {"lora_name": "legal"}),
        ("/v1/load_lora_adapter", {"lora_name": "legal", "lora_path": event["path"]})]
    assert (entry["event"], entry["outcome"], entry["actor"]) == (
        "rollback", "executed", "rule:GoldenRegression")
    assert entry["doc"]["what"] == {"active": {"from": "v2", "to": "v1"}}
    assert daemon.sample("monitor_actions_total", domain="legal", action="rollback",
                         outcome="executed") == 1
    assert daemon.sample("monitor_adapter_active_info", domain="legal", version="v1",
                         kind="lora", base_model="tiny") == 1
    assert "# the regressed one" in world.registry.read_text()  # comments kept

    # v2 rolled out again by hand: the alert fires anew, the cooldown holds it.
    set_active(world.registry, "legal", "v2")
    wait("the skipped rollback", lambda: daemon.sample(
        "monitor_actions_total", domain="legal", action="rollback",
        outcome="skipped_cooldown"), daemon)
    assert active(world) == "v2" and len(topic_values(world, world.control)) == 1
    assert len(world.hook.requests) == 2
    assert daemon.terminate() == 0


def test_approval_over_http(world):
    rule = ROLLBACK_RULE.format(extra="          approval: required\n")
    daemon = start(world, rule)

    pending = wait("a pending rollback", lambda: http(daemon, "GET", "/api/v1/actions")[1]
                   ["data"]["actions"], daemon)
    [action] = pending
    assert (action["action"], action["status"], action["domain"]) == (
        "rollback", "pending_approval", "legal")
    assert action["reason"]["alert"]["alertname"] == "GoldenRegression"
    assert active(world) == "v2"
    path = f"/api/v1/actions/{action['id']}/approve"
    assert http(daemon, "POST", path)[0] == 401
    assert http(daemon, "POST", path, token="wrong")[0] == 401
    assert active(world) == "v2"

    status, doc = http(daemon, "POST", path, token=TOKEN)

    assert status == 200, doc
    assert doc["data"]["status"] == "executed" and doc["data"]["approved_by"] == "token:api"
    assert active(world) == "v1"
    assert http(daemon, "POST", path, token=TOKEN)[0] == 409  # decided already
    assert http(daemon, "POST", "/api/v1/actions/nope/reject", token=TOKEN)[0] == 404
    assert http(daemon, "GET", "/api/v1/actions")[1]["data"]["actions"] == []
    wait("the control event", lambda: topic_values(world, world.control), daemon)
    audit = cli(world, "audit", "--domain", "legal")
    assert audit.returncode == 0, audit.stderr
    lines = audit.stdout.splitlines()
    assert "pending_approval" in lines[0] and "approve" in lines[1] and "token:api" in lines[1]
    assert "executed" in lines[-1] and "v2 -> v1" in lines[-1]
    assert daemon.terminate() == 0


def test_kill_9_between_the_registry_write_and_the_publish(world):
    daemon = start(world, ROLLBACK_RULE.format(extra=""),
                   env={"MONITOR_FAULT": "after_registry_write"}, ready=False)
    assert daemon.process.wait(timeout=60) == -9
    # Its children (the fetcher, the evaluation worker) go with it.
    wait("no process left in the daemon's folder", lambda: not [
        p for p in psutil.process_iter(["cwd", "pid"])
        if p.info["cwd"] == str(world.root) and p.info["pid"] != os.getpid()], timeout=15)
    assert active(world) == "v1"  # written...
    assert topic_values(world, world.control) == [] and world.hook.requests == []  # ...not told

    daemon = start(world, ROLLBACK_RULE.format(extra=""))

    wait("the control event", lambda: topic_values(world, world.control), daemon)
    wait("the serving hook's calls", lambda: len(world.hook.requests) >= 2, daemon)
    time.sleep(3)
    [event] = topic_values(world, world.control)
    assert (event["from"], event["to"]) == ("v2", "v1")
    assert len(world.hook.requests) == 2
    assert "was cut short by a stop; finishing it" in daemon.log_text()
    store = actions(world)
    try:
        assert [a["status"] for a in store.list()] == ["executed"]
    finally:
        store.state.close()
    assert daemon.terminate() == 0


def test_kill_9_after_the_send_before_it_is_marked_sends_nothing_twice(world):
    daemon = start(world, ROLLBACK_RULE.format(extra=""),
                   env={"MONITOR_FAULT": "after_kafka_send"}, ready=False)
    assert daemon.process.wait(timeout=60) == -9
    assert len(topic_values(world, world.control)) == 1  # sent, not marked published

    daemon = start(world, ROLLBACK_RULE.format(extra=""))

    wait("the serving hook's calls", lambda: len(world.hook.requests) >= 2, daemon)
    assert "is already on " + world.control in daemon.log_text()
    [event] = topic_values(world, world.control)
    assert (event["from"], event["to"]) == ("v2", "v1")
    time.sleep(2)
    assert len(world.hook.requests) == 2
    assert daemon.terminate() == 0


def test_promotion_of_a_regressed_candidate_is_refused_and_force_is_audited(world):
    set_active(world.registry, "legal", "v1")
    (world.root / "monitor.yaml").write_text(
        f"kafka:\n  bootstrap_servers: {world.broker.bootstrap_servers}\n"
        f"state:\n  url: sqlite:///{world.root}/state.db\n"
        f"registry:\n  path: {world.registry}\n"
        f"actions:\n  control_topic: {world.control}\n")

    refused = cli(world, "adapters", "promote", "legal", "v2")

    assert refused.returncode == 1
    assert "promote refused: legal/v2 is regressed against the active version v1" in \
        refused.stderr
    assert active(world) == "v1"
    forced = cli(world, "adapters", "promote", "legal", "v2", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "active version: v1 -> v2" in forced.stdout
    assert active(world) == "v2"
    [event] = topic_values(world, world.control)
    assert (event["reason"], event["from"], event["to"]) == ("promote", "v1", "v2")
    store = actions(world)
    try:
        entries = store.audit_log("legal")
    finally:
        store.state.close()
    assert [(e["event"], e["outcome"]) for e in entries] == [("promote", "refused"),
                                                             ("promote", "executed")]
    [action] = [a for a in actions(world).list() if a["action"] == "promote"]
    assert action["doc"]["params"]["gate"]["forced"] is True
    rollback = cli(world, "adapters", "rollback", "legal", "--to", "v1")
    assert rollback.returncode == 0, rollback.stderr
    assert active(world) == "v1"


def test_a_drift_alert_requests_a_retrain_with_the_windows_records_and_lineage(world):
    start_at = time.time() - 600
    first = records(HEALTHY, start_at, 300, seed=3)
    shifted = records({**HEALTHY, "legal": SHIFTED_LEGAL}, start_at + 300, 200, seed=1)
    produce(world.broker.bootstrap_servers, world.topic, first + shifted)
    daemon = start(world, RETRAIN_RULE, extra_config=DRIFT_CONFIG)

    request = wait("the retrain request of legal", lambda: [
        r for r in topic_values(world, f"retrain-{world.control}") if r["domain"] == "legal"],
        daemon, timeout=120)[0]

    assert request["type"] == "retrain_request" and request["domain"] == "legal"
    assert request["reason"]["alert"]["alertname"] == "InputDrift"
    assert request["statistics"]["drift"]["prompt_tokens"]["detected"] is True
    assert "error_ratio" in request["statistics"]["quality"]
    lineage = request["lineage"]
    assert lineage["topic"] == world.topic
    # What the topic holds for legal, inside the window: the lineage, exactly.
    consumer = KafkaConsumer(bootstrap_servers=world.broker.bootstrap_servers,
                             enable_auto_commit=False)
    try:
        tps = [TopicPartition(world.topic, p) for p in consumer.partitions_for_topic(world.topic)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        legal = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for tp, batch in consumer.poll(timeout_ms=500).items():
                legal += [(tp.partition, r.offset, orjson.loads(r.value)) for r in batch
                          if orjson.loads(r.value)["domain"] == "legal"]
    finally:
        consumer.close()
    seen = int(lineage["records"])
    window = [x for x in legal][:seen]  # all of legal's records before the alert are in it
    partitions = {}
    for partition, offset, _ in window:
        low, high = partitions.get(str(partition), (offset, offset))
        partitions[str(partition)] = (min(low, offset), max(high, offset))
    assert {p: (v["first_offset"], v["last_offset"]) for p, v in
            lineage["partitions"].items()} == partitions
    snapshot = Path(request["snapshot"]["path"])
    lines = [json.loads(line) for line in snapshot.read_text().splitlines()]
    assert lines and len(lines) == request["snapshot"]["records"] <= 1000
    assert {r["domain"] for r in lines} == {"legal"}
    times = sorted(r["timestamp"] for r in lines)
    assert lines == [x[2] for x in window][-len(lines):]  # the most recent, in order
    assert times[0] >= window[0][2]["timestamp"]
    assert daemon.terminate() == 0
