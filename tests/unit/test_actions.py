"""Actions (monitor.actions): decisions from alerts, cooldown, approvals, dry
run, the registry change and its crash recovery, the outbox and its publisher,
replay. A real SQLite store and a real registry
file; Kafka is replaced by an in-memory sink here (the integration tests use
the real broker)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from monitor.actions import model as m
from monitor.actions.execute import Executor, rollback_target
from monitor.actions.model import ActionError
from monitor.actions.publish import Publisher
from monitor.actions.service import ActionService
from monitor.actions.store import ActionStore
from monitor.config import ActionsConfig, Config, StateConfig
from monitor.registry import load_registry
from monitor.state import StateStore

REGISTRY = """\
# the team's registry: comments stay
base_models:
  tiny: {{path: base}}
domains:
  legal:
    base_model: tiny
    kind: lora
    active: {active}   # served now
    golden_set: legal/golden.jsonl
    versions:
      v1: {{path: legal/v1, status: good}}
      v2: {{path: legal/v2}}
      v3: {{path: legal/v3}}
"""


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class FakeAlert:
    labels: tuple
    active_at: int
    value: float = 0.5
    fired_at: int | None = None
    state: str = "firing"


def alert(action="rollback", active_at=1_000_000_000, **labels) -> tuple:
    merged = {"alertname": "GoldenRegression", "domain": "legal", "action": action, **labels}
    return (None, FakeAlert(tuple(sorted(merged.items())), active_at, fired_at=active_at))


@dataclass
class MemoryKafka:
    sent: list = field(default_factory=list)
    fail: bool = False

    def send(self, topic, key, value):
        from monitor.actions.hooks import DeliveryError

        if self.fail:
            raise DeliveryError(f"topic {topic}: broker down")
        self.sent.append((topic, key, value))

    def contains(self, topic, event_id):
        return any(t == topic and v["id"] == event_id for t, _k, v in self.sent)

    def close(self):
        pass


def write_registry(root, active="v2"):
    for version in ("v1", "v2", "v3"):
        (root / "legal" / version).mkdir(parents=True, exist_ok=True)
    (root / "base").mkdir(exist_ok=True)
    (root / "legal" / "golden.jsonl").write_text('{"id": "1", "prompt": "p", "reference": "r"}\n')
    path = root / "registry.yaml"
    path.write_text(REGISTRY.format(active=active))
    return path


def verdict(state, version, value, against="v1", at=1.0):
    state.save_eval_run({"id": f"run-{version}-{at}", "domain": "legal", "version": version,
                         "started_at": at, "finished_at": at, "status": "done",
                         "verdict": value,
                         "doc": {"comparisons": [{"baseline": against, "metric": "nll",
                                                  "regressed": value == "regressed"}]}})


@pytest.fixture
def world(tmp_path):
    registry = write_registry(tmp_path)
    config = Config(state=StateConfig(url=f"sqlite:///{tmp_path}/state.db"))
    state = StateStore(config.state.url)
    actions = ActionStore(state)
    clock = Clock()
    kafka = MemoryKafka()
    publisher = Publisher(actions, config, kafka=kafka, clock=clock)
    changes = []
    executor = Executor(actions, config, registry, clock=clock, publisher=publisher,
                        on_change=lambda *change: changes.append(change))
    contexts = []

    def context(domain, action_id, write):
        contexts.append((domain, action_id, write))
        return {"statistics": {"drift": {}}, "lineage": None,
                "snapshot": {"path": None, "records": 0}}

    service = ActionService(actions, executor, config.actions, clock=clock,
                            retrain_context=context)
    verdict(state, "v1", "pass")
    verdict(state, "v2", "regressed")

    class World:
        pass

    w = World()
    w.__dict__.update(registry=registry, config=config, state=state, actions=actions,
                      clock=clock, kafka=kafka, publisher=publisher, executor=executor,
                      service=service, changes=changes, contexts=contexts, root=tmp_path)
    yield w
    state.close()


def active(w) -> str:
    return load_registry(w.registry).domains["legal"].active


# -- from alerts ---------------------------------------------------------------------------
def test_a_regression_alert_rolls_back_once_and_everything_agrees(world):
    [action] = world.service.on_alerts([alert()])

    assert action["status"] == m.EXECUTED
    assert action["doc"]["result"] == {"from": "v2", "to": "v1"}
    assert active(world) == "v1"
    text = world.registry.read_text()
    assert "# the team's registry: comments stay" in text and "# served now" in text
    assert world.changes == [("legal", "v2", "v1")]
    assert world.publisher.publish_due() == 1
    [(topic, key, event)] = world.kafka.sent
    assert (topic, key) == ("adapter-control", "legal")
    assert {k: event[k] for k in ("id", "domain", "from", "to", "reason")} == {
        "id": action["id"], "domain": "legal", "from": "v2", "to": "v1", "reason": "rollback"}
    assert event["alert"]["alertname"] == "GoldenRegression"
    [entry] = world.actions.audit_log("legal")
    assert (entry["event"], entry["outcome"], entry["actor"]) == (
        "rollback", "executed", "rule:GoldenRegression")
    assert entry["doc"]["what"] == {"active": {"from": "v2", "to": "v1"}}
    assert entry["doc"]["why"]["alert"]["value"] == 0.5

    # The alert keeps firing (and the service restarts): nothing more happens.
    assert world.service.on_alerts([alert()]) == []
    fresh = ActionService(world.actions, world.executor, world.config.actions, clock=world.clock)
    assert fresh.on_alerts([alert()]) == []
    assert world.publisher.publish_due() == 0
    assert len(world.actions.list()) == 1 and active(world) == "v1"


def test_a_new_firing_within_the_cooldown_is_skipped(world):
    world.service.on_alerts([alert()])
    world.clock.t += 600
    [skipped] = world.service.on_alerts([alert(active_at=1_000_600_000)])

    assert skipped["status"] == m.SKIPPED_COOLDOWN
    assert "cooldown 3600s" in skipped["doc"]["skipped"]
    assert active(world) == "v1"
    assert [e["outcome"] for e in world.actions.audit_log("legal")] == ["executed",
                                                                        "skipped_cooldown"]
    world.clock.t += 3600
    [third] = world.service.on_alerts([alert(active_at=1_004_200_000)])
    assert third["status"] == m.FAILED  # v1 is active, no other passing version: nothing to do
    assert third["doc"]["error"].startswith("domain legal: no version to roll back to")


def test_approval_required_parks_the_action_until_approved(world):
    [pending] = world.service.on_alerts([alert(approval="required")])
    assert pending["status"] == m.PENDING_APPROVAL
    assert active(world) == "v2" and world.actions.outbox() == []
    # A second firing while one waits: not a second pending action.
    [again] = world.service.on_alerts([alert(approval="required", active_at=2)])
    assert again["status"] == m.SKIPPED_COOLDOWN

    done = world.service.approve(pending["id"], "token:api")

    assert done["status"] == m.EXECUTED and active(world) == "v1"
    assert done["doc"]["approved_by"] == "token:api"
    with pytest.raises(ActionError, match="not pending approval"):
        world.service.approve(pending["id"], "token:api")
    with pytest.raises(ActionError, match="no action"):
        world.service.reject("nope", "cli:me")
    events = [(e["event"], e["outcome"], e["actor"]) for e in world.actions.audit_log()]
    assert ("approve", m.EXECUTING, "token:api") in events
    assert events[-1] == ("rollback", m.EXECUTED, "token:api")


def test_a_rejected_action_changes_nothing(world):
    [pending] = world.service.on_alerts([alert(approval="required")])
    rejected = world.service.reject(pending["id"], "cli:alice")

    assert rejected["status"] == m.REJECTED and active(world) == "v2"
    assert world.actions.audit_log()[-1]["event"] == "reject"


def test_dry_run_records_the_plan_and_changes_nothing(world):
    world.service.dry_run = True
    before = world.registry.read_bytes()

    [action] = world.service.on_alerts([alert()])

    assert action["status"] == m.DRY_RUN
    assert action["doc"]["plan"]["to"] == "v1"
    assert world.registry.read_bytes() == before and world.actions.outbox() == []
    assert world.actions.audit_log()[-1]["doc"]["what"] == {"would_change": {"from": "v2",
                                                                            "to": "v1"}}


def test_retrain_and_reevaluate(world, tmp_path):
    [retrain] = world.service.on_alerts([alert("retrain", alertname="InputDrift")])
    assert retrain["status"] == m.EXECUTED
    assert world.contexts == [("legal", retrain["id"], True)]
    world.publisher.publish_due()
    [(topic, _key, request)] = world.kafka.sent
    assert topic == "retrain-requests" and request["type"] == "retrain_request"
    assert request["reason"]["alert"]["alertname"] == "InputDrift"

    [reevaluate] = world.service.on_alerts([alert("reevaluate", alertname="Stale")])
    assert reevaluate["status"] == m.EXECUTED
    [job] = world.state.eval_jobs("queued")
    assert (job["domain"], job["version"], job["id"]) == (
        "legal", None, reevaluate["doc"]["result"]["eval_job"])


def test_alerts_without_a_domain_or_with_an_unknown_action_are_ignored(world, caplog):
    labels = {"alertname": "X", "action": "rollback"}
    bad = (None, FakeAlert(tuple(sorted(labels.items())), 1))
    unknown = alert("reboot")

    assert world.service.on_alerts([bad, unknown]) == []
    assert world.actions.list() == []
    assert "without a `domain` label" in caplog.text and "'reboot'" in caplog.text


def test_metrics_counts(world):
    world.service.on_alerts([alert(), alert("retrain", alertname="D")])
    assert world.actions.counts() == {("legal", "rollback", "executed"): 1,
                                      ("legal", "retrain", "executed"): 1}


def test_action_counts_never_go_down(world):
    [pending] = world.service.on_alerts([alert("reevaluate", approval="required")])
    assert world.actions.counts() == {("legal", "reevaluate", "pending_approval"): 1}
    world.service.approve(pending["id"], "cli:bob")
    assert world.actions.counts() == {("legal", "reevaluate", "pending_approval"): 1,
                                      ("legal", "reevaluate", "executed"): 1}


# -- the rollback target ------------------------------------------------------------------
def test_rollback_target_prefers_the_most_recent_passing_version(world):
    registry = load_registry(world.registry)
    assert rollback_target(registry, "legal", {("legal", "v1"): "pass"}, None)[0] == "v1"
    both = {("legal", "v1"): "pass", ("legal", "v3"): "pass"}
    assert rollback_target(registry, "legal", both, None)[0] == "v3"
    assert rollback_target(registry, "legal", {}, "v1")[0] == "v1"
    with pytest.raises(ActionError, match="no version to roll back to"):
        rollback_target(registry, "legal", {("legal", "v2"): "pass"}, None)


# -- crash recovery -----------------------------------------------------------------------
class Killed(BaseException):
    pass


@pytest.mark.parametrize("point", ["after_plan", "after_registry_write"])
def test_a_crash_mid_change_is_finished_at_restart_and_announced_once(world, monkeypatch,
                                                                      point):
    def fault(at):
        if at == point:
            raise Killed(at)

    monkeypatch.setattr("monitor.actions.execute._fault", fault)
    with pytest.raises(Killed):
        world.service.on_alerts([alert()])
    [action] = world.actions.list()
    assert action["status"] == m.EXECUTING
    assert active(world) == ("v1" if point == "after_registry_write" else "v2")
    assert world.publisher.publish_due() == 0  # held until the change is recorded

    assert world.executor.recover() == 1

    assert world.actions.get(action["id"])["status"] == m.EXECUTED and active(world) == "v1"
    assert world.publisher.publish_due() == 1
    assert world.executor.recover() == 0 and world.publisher.publish_due() == 0
    assert len(world.kafka.sent) == 1


def test_a_registry_changed_between_plan_and_write_fails_the_action(world, monkeypatch):
    from monitor.registry import set_active

    def fault(at):
        if at == "after_plan":
            raise Killed(at)

    monkeypatch.setattr("monitor.actions.execute._fault", fault)
    with pytest.raises(Killed):
        world.service.on_alerts([alert()])
    set_active(world.registry, "legal", "v3")  # a person, meanwhile

    world.executor.recover()

    [action] = world.actions.list()
    assert action["status"] == m.FAILED and "changed meanwhile" in action["doc"]["error"]
    assert active(world) == "v3"
    assert world.publisher.publish_due() == 0
    assert {msg["state"] for msg in world.actions.outbox()} == {"failed"}


# -- the publisher ------------------------------------------------------------------------
def test_a_send_that_may_have_reached_kafka_is_not_repeated(world):
    [action] = world.service.on_alerts([alert()])
    [message] = world.actions.outbox(action["id"])
    world.actions.outbox_attempted(message["id"])  # attempted, then "crashed" before marked
    world.kafka.sent.append(("adapter-control", "legal", {"id": action["id"]}))

    assert world.publisher.publish_due() == 1
    assert len(world.kafka.sent) == 1
    assert world.actions.outbox(action["id"])[0]["state"] == "published"


def test_failed_sends_are_retried_later_in_order(world, receivers):
    hook = receivers(statuses=[500])
    config = world.config.model_copy(update={"actions": ActionsConfig(
        serving_hook={"url": hook.url, "preset": "vllm"})})
    world.executor.config = config
    world.publisher.config = config
    [action] = world.service.on_alerts([alert()])
    messages = world.actions.outbox(action["id"])
    assert [msg["kind"] for msg in messages] == ["kafka", "http", "http"]

    assert world.publisher.publish_due() == 1  # kafka; the unload gets HTTP 500
    first = world.actions.outbox(action["id"])[1]
    assert first["state"] == "pending" and "HTTP 500" in first["last_error"]
    assert world.publisher.publish_due() == 0  # not due yet
    world.clock.t += 2
    assert world.publisher.publish_due() == 2
    bodies = [(r["path"], r["json"]) for r in hook.requests]
    assert bodies[-2:] == [
        ("/v1/unload_lora_adapter", {"lora_name": "legal"}),
        ("/v1/load_lora_adapter", {"lora_name": "legal",
                                   "lora_path": str(world.root / "legal" / "v1")})]


# -- replay --------------------------------------------------------------------------------
REPLAY_RULES = """\
groups:
  - name: g
    interval: 10s
    rules:
      - alert: Busy
        expr: sum by (domain) (monitor_records_total) > 5
        labels: {action: retrain}
      - alert: VeryBusy
        expr: sum by (domain) (monitor_records_total) > 8
        labels: {action: retrain}
      - alert: Watch
        expr: sum by (domain) (monitor_records_total) > 5
        labels: {action: reevaluate, approval: required}
"""


def test_replay_lists_the_actions_in_event_time(tmp_path):
    from monitor.replay import replay

    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yml").write_text(REPLAY_RULES)
    lines = [json.dumps({"schema_version": 1, "timestamp": (1_700_000_000 + i) * 1000, "domain": "legal",
                         "input": {"tokens": 5}}) for i in range(60)]
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n")
    config = Config(state=StateConfig(url=f"sqlite:///{tmp_path}/state.db"))

    result = replay(str(tmp_path / "log.jsonl"), config, rule_paths=[str(tmp_path / "rules")])

    got = [(a["alert"], a["action"], a["status"]) for a in result.to_json()["actions"]]
    # One round (10 records by then), rules in file order; the cooldown counts dry runs.
    assert got == [("Busy", "retrain", "dry_run"), ("VeryBusy", "retrain", "skipped_cooldown"),
                   ("Watch", "reevaluate", "pending_approval")]
    first = result.actions[0]
    assert first["domain"] == "legal" and first["at"].startswith("2023-11-14T22:13:")
    assert not (tmp_path / "state.db").exists()  # a dry run writes nothing


# -- commands and HTTP ------------------------------------------------------------------------
def test_actions_commands(world, capsys):
    from monitor.cli import main

    config = world.root / "monitor.yaml"
    config.write_text(f"state:\n  url: {world.config.state.url}\n"
                      f"registry:\n  path: {world.registry}\nactions:\n  control_topic: null\n")
    [pending] = world.service.on_alerts([alert(approval="required")])
    capsys.readouterr()

    assert main(["actions", "list", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert pending["id"] in out and "pending_approval" in out and "GoldenRegression" in out
    assert main(["actions", "list", "--json", "--config", str(config)]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["id"] == pending["id"] and listed["reason"]["alert"]["value"] == 0.5

    assert main(["actions", "approve", pending["id"], "--config", str(config)]) == 0
    assert "active version: v2 -> v1" in capsys.readouterr().out
    assert active(world) == "v1"
    assert main(["actions", "approve", pending["id"], "--config", str(config)]) == 1
    assert "is executed, not pending approval" in capsys.readouterr().err
    assert main(["actions", "reject", "nope", "--config", str(config)]) == 2
    assert main(["actions", "list", "--config", str(config)]) == 0
    assert "no pending actions" in capsys.readouterr().out

    assert main(["audit", "--domain", "legal", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[2:4] for line in lines] == [
        ["rollback", "pending_approval"], ["approve", "executing"], ["rollback", "executed"]]
    assert lines[1].split()[5] == lines[2].split()[5] and lines[1].split()[5].startswith("cli:")
    assert main(["audit", "--json", "--config", str(config)]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3

    assert main(["adapters", "rollback", "legal", "--config", str(config)]) == 1
    assert "no version to roll back to" in capsys.readouterr().err
    assert main(["adapters", "rollback", "legal", "--to", "v3", "--dry-run",
                 "--config", str(config)]) == 0
    assert "dry_run" in capsys.readouterr().out and active(world) == "v1"


def test_http_actions_api_needs_the_token(world):
    import urllib.error
    import urllib.request

    from prometheus_client.registry import CollectorRegistry

    from monitor.http import MonitorHTTPServer

    [pending] = world.service.on_alerts([alert(approval="required")])
    servers = {token: MonitorHTTPServer("127.0.0.1", 0, CollectorRegistry(),
                                        lambda: (True, ""), token=token,
                                        actions=lambda: world.service)
               for token in (None, "t0k")}
    for server in servers.values():
        server.start()

    def post(server, path, token=None):
        request = urllib.request.Request(server.url + path, data=b"", method="POST")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    try:
        path = f"/api/v1/actions/{pending['id']}/reject"
        assert post(servers[None], path, "t0k")[0] == 403  # no token configured: disabled
        assert post(servers["t0k"], path)[0] == 401
        status, doc = post(servers["t0k"], path, "t0k")
        assert status == 200 and doc["data"]["status"] == "rejected"
        assert doc["data"]["rejected_by"] == "token:api"
        with urllib.request.urlopen(servers[None].url + "/api/v1/actions?status=all") as reply:
            [listed] = json.loads(reply.read())["data"]["actions"]
        assert listed["status"] == "rejected"
        with pytest.raises(urllib.error.HTTPError) as bad:
            urllib.request.urlopen(servers[None].url + "/api/v1/actions?status=nope")
        assert bad.value.code == 400
    finally:
        for server in servers.values():
            server.shutdown()
            server.server_close()
    assert active(world) == "v2"


def test_approving_in_dry_run_mode_records_the_plan_only(world):
    [pending] = world.service.on_alerts([alert(approval="required")])
    world.service.dry_run = True

    done = world.service.approve(pending["id"], "cli:bob")

    assert done["status"] == m.DRY_RUN and done["doc"]["plan"]["to"] == "v1"
    assert active(world) == "v2" and world.actions.outbox() == []


def test_retrain_requests_go_to_the_webhook_and_the_command(world, receivers, tmp_path):
    import sys

    hook = receivers()
    out = tmp_path / "request.json"
    script = f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())"
    config = world.config.model_copy(update={"actions": ActionsConfig(retrain={
        "topic": None, "webhook": hook.url + "/retrain", "command": [sys.executable, "-c", script]})})
    world.executor.config = config
    world.publisher.config = config

    [action] = world.service.on_alerts([alert("retrain", alertname="Drift")])
    assert world.publisher.publish_due() == 2

    [request] = hook.requests
    assert request["path"] == "/retrain" and request["json"]["id"] == action["id"]
    assert json.loads(out.read_text()) == request["json"]
    assert world.kafka.sent == []


def test_a_failing_command_is_retried_with_its_error(world, tmp_path):
    import sys

    config = world.config.model_copy(update={"actions": ActionsConfig(retrain={
        "topic": None, "command": [sys.executable, "-c", "import sys; sys.exit('no GPU quota')"]})})
    world.executor.config = config
    world.service.on_alerts([alert("retrain", alertname="Drift")])

    assert world.publisher.publish_due() == 0
    [message] = world.actions.outbox()
    assert message["state"] == "pending" and message["attempts"] == 1
    assert "exited 1: no GPU quota" in message["last_error"]


def test_concurrent_changes_of_one_domain_are_serialised(world):
    import threading

    errors = []

    def roll(target):
        for _ in range(8):
            try:
                world.service.request("legal", "rollback", actor=f"cli:{target}",
                                      params={"to": target})
            except ActionError as exc:  # already active: fine
                assert exc.reason == "already_active", exc
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=roll, args=(v,)) for v in ("v1", "v3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    changes = [e["doc"]["what"]["active"] for e in world.actions.audit_log()
               if e["outcome"] == "executed"]
    assert changes and changes[0]["from"] == "v2"
    for before, after in zip(changes, changes[1:]):
        assert after["from"] == before["to"]  # each change saw the one before it
    assert active(world) == changes[-1]["to"]


def test_promotion_without_a_verdict_evaluates_first(tmp_path, tiny_models, capsys):
    """No verdict of the candidate against the active version on record: `promote`
    runs the golden-set evaluation (tiny real models), stores it, and refuses the
    weakened copy; the good adapter of another domain is left alone."""
    import shutil

    pytest.importorskip("peft")
    from monitor.cli import main

    shutil.copytree(tiny_models.root, tmp_path / "tiny", symlinks=True)
    registry = tmp_path / "tiny" / "adapters" / "registry.yaml"
    config = tmp_path / "monitor.yaml"
    config.write_text(f"state:\n  url: sqlite:///{tmp_path}/state.db\n"
                      f"registry:\n  path: {registry}\n"
                      "eval:\n  device: cpu\n  bootstrap_resamples: 1000\n"
                      "actions:\n  control_topic: null\n")

    assert main(["adapters", "promote", "legal", "v3", "--config", str(config)]) == 1

    err = capsys.readouterr().err
    assert "no verdict of legal/v3 against v1 on record: evaluating now" in err
    assert "promote refused: legal/v3 is regressed against the active version v1" in err
    assert load_registry(registry).domains["legal"].active == "v1"
    state = StateStore(f"sqlite:///{tmp_path}/state.db")
    try:
        [run] = state.eval_runs("legal")
        assert (run["version"], run["verdict"]) == ("v3", "regressed")
        [entry] = ActionStore(state).audit_log("legal")
        assert (entry["event"], entry["outcome"]) == ("promote", "refused")
        assert entry["doc"]["gate"]["eval_run"] == run["id"]
    finally:
        state.close()


def test_stale_executing_actions_are_recovered_fresh_ones_are_left(world, monkeypatch):
    def fault(at):
        if at == "after_registry_write":
            raise Killed(at)

    monkeypatch.setattr("monitor.actions.execute._fault", fault)
    with pytest.raises(Killed):
        world.service.request("legal", "rollback", actor="cli:carol", params={"to": "v1"})
    assert world.executor.recover(older_than=120) == 0  # may be running elsewhere now
    world.clock.t += 121
    assert world.executor.recover(older_than=120) == 1
    assert [a["status"] for a in world.actions.list()] == [m.EXECUTED]


def test_a_rejected_retrain_deletes_its_snapshot(world, tmp_path):
    snapshot = tmp_path / "snap.jsonl"
    snapshot.write_text("{}\n")
    world.service.retrain_context = lambda d, i, w: {
        "statistics": {}, "lineage": None, "snapshot": {"path": str(snapshot), "records": 1}}
    [pending] = world.service.on_alerts([alert("retrain", alertname="D", approval="required")])

    world.service.reject(pending["id"], "cli:dan")

    assert not snapshot.exists()


def test_a_message_given_up_holds_back_the_later_ones(world):
    config = world.config.model_copy(update={"actions": ActionsConfig(
        serving_hook={"url": "http://127.0.0.1:9/", "preset": "vllm"})})
    world.executor.config = config
    [action] = world.service.on_alerts([alert()])
    kafka, unload, load = world.actions.outbox(action["id"])
    world.actions.outbox_failed(unload["id"], "given up", None)

    world.publisher.publish_due()

    states = [msg["state"] for msg in world.actions.outbox(action["id"])]
    assert states == ["published", "failed", "pending"]
    world.clock.t += 3600
    assert world.publisher.publish_due() == 0


def test_replay_apply_executes_against_the_registry_and_the_store(world):
    """`monitor replay --apply`: the rollback the alert asks for happens, and is
    recorded in the configured store like the daemon's."""
    from monitor.cli import main

    (world.root / "rules").mkdir()
    (world.root / "rules" / "r.yml").write_text("""\
groups:
  - name: g
    interval: 10s
    rules:
      - alert: Regressed
        expr: sum by (domain) (monitor_records_total{domain="legal"}) > 5
        labels: {action: rollback}
""")
    lines = [json.dumps({"schema_version": 1, "timestamp": (1_700_000_000 + i) * 1000,
                         "domain": "legal", "input": {"tokens": 5}}) for i in range(30)]
    (world.root / "log.jsonl").write_text("\n".join(lines) + "\n")
    config = world.root / "monitor.yaml"
    config.write_text(f"state:\n  url: {world.config.state.url}\n"
                      f"registry:\n  path: {world.registry}\nactions:\n  control_topic: null\n"
                      "drift:\n  embeddings:\n    enabled: false\n")
    out = world.root / "out.json"

    assert main(["replay", str(world.root / "log.jsonl"), "--config", str(config),
                 "--rules", str(world.root / "rules"), "--json-out", str(out)]) == 0
    [dry] = json.loads(out.read_text())["actions"]
    assert dry["status"] == "dry_run" and dry["plan"] == {"from": "v2", "to": "v1",
                                                          "why": dry["plan"]["why"]}
    assert active(world) == "v2" and world.actions.list() == []

    assert main(["replay", str(world.root / "log.jsonl"), "--config", str(config),
                 "--rules", str(world.root / "rules"), "--json-out", str(out), "--apply"]) == 0
    [done] = json.loads(out.read_text())["actions"]
    assert done["status"] == "executed" and done["result"] == {"from": "v2", "to": "v1"}
    assert active(world) == "v1"
    assert [a["status"] for a in world.actions.list()] == ["executed"]
