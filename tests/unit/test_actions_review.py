"""Bugs a review of monitor.actions found, each pinned by a test: in-flight
actions hold back new firings, no snapshot in dry run, approvals honour the dry
run the action was parked under, a firing whose decision failed is retried, no
credentials in stored destinations, no rollback to a bad version, an HTTP
answer for store errors."""

from __future__ import annotations

import json

import pytest

from monitor.actions import model as m
from monitor.actions.model import ActionError
from monitor.config import ActionsConfig
from monitor.errors import StateError
from tests.unit.test_actions import active, alert, world  # noqa: F401  (fixture)


def test_an_action_in_flight_holds_back_a_new_firing(world):
    # An approved rollback is executing right now (HTTP thread, or `monitor actions
    # approve` in another process): approved, not executed yet.
    world.actions.create(domain="legal", action=m.ROLLBACK, status=m.EXECUTING,
                         at=world.clock(), actor="token:api", doc={"reason": {}, "params": {}})

    [second] = world.service.on_alerts([alert(alertname="AnotherRegression")])

    assert second["status"] == m.SKIPPED_COOLDOWN
    assert active(world) == "v2"


def test_dry_run_writes_no_snapshot_for_a_pending_retrain(world):
    world.service.dry_run = True

    [pending] = world.service.on_alerts([alert("retrain", alertname="Drift",
                                               approval="required")])

    assert pending["status"] == m.PENDING_APPROVAL
    assert [write for _d, _id, write in world.contexts] == [False]


def test_an_action_parked_in_dry_run_mode_is_not_executed_by_the_cli(world, capsys):
    from monitor.cli import main

    config = world.root / "monitor.yaml"
    config.write_text(f"state:\n  url: {world.config.state.url}\n"
                      f"registry:\n  path: {world.registry}\nactions:\n  control_topic: null\n")
    world.service.dry_run = True  # the daemon runs `monitor run --dry-run`
    [pending] = world.service.on_alerts([alert(approval="required")])

    main(["actions", "approve", pending["id"], "--config", str(config)])

    assert active(world) == "v2"
    assert world.actions.get(pending["id"])["status"] == m.DRY_RUN


def test_a_firing_whose_decision_failed_is_decided_next_round(world, monkeypatch):
    create = world.actions.create
    calls = []

    def flaky(**kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise StateError("action not recorded: database is locked")
        return create(**kwargs)

    monkeypatch.setattr(world.actions, "create", flaky)
    assert world.service.on_alerts([alert()]) == []  # logged, nothing recorded

    decided = world.service.on_alerts([alert()])  # the same firing, next rule round

    assert [a["status"] for a in decided] == [m.EXECUTED]
    assert active(world) == "v1"


def test_webhook_credentials_do_not_show_in_the_action(world):
    from monitor.actions.commands import public

    url = "https://bot:s3cret@hooks.example/retrain?token=t0psecret"
    config = world.config.model_copy(update={"actions": ActionsConfig(retrain={
        "topic": None, "webhook": url})})
    world.executor.config = config

    [action] = world.service.on_alerts([alert("retrain", alertname="Drift")])

    shown = json.dumps(public(world.actions.get(action["id"])))
    assert "s3cret" not in shown and "t0psecret" not in shown


def test_a_rollback_never_goes_to_a_bad_version(world):
    text = world.registry.read_text().replace("v3: {path: legal/v3}",
                                              "v3: {path: legal/v3, status: bad}")
    world.registry.write_text(text)

    with pytest.raises(ActionError):
        world.service.request("legal", m.ROLLBACK, actor="cli:me", params={"to": "v3"})

    assert active(world) == "v2"


def test_a_store_error_during_approval_is_answered(world, monkeypatch):
    import http.client

    from prometheus_client.registry import CollectorRegistry

    from monitor.http import MonitorHTTPServer

    [pending] = world.service.on_alerts([alert(approval="required")])

    def locked(action_id, actor):
        raise StateError(f"action {action_id} not updated: database is locked")

    monkeypatch.setattr(world.service, "approve", locked)
    server = MonitorHTTPServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, ""),
                               token="t0k", actions=lambda: world.service)
    server.start()
    try:
        host, port = server.server_address[:2]
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("POST", f"/api/v1/actions/{pending['id']}/approve", body=b"",
                     headers={"Authorization": "Bearer t0k"})
        reply = conn.getresponse()
        assert reply.status in (500, 503)
        assert b"database is locked" in reply.read()
    finally:
        server.shutdown()
        server.server_close()
