"""Unit tests of the rule endpoints of monitor.http (DESIGN.md §9):
`POST /-/reload` behind the bearer token and `GET /api/v1/alerts`."""

from __future__ import annotations

import json
import textwrap
import urllib.error
import urllib.request

import pytest

from monitor.config import Config
from monitor.exporter import SnapshotHolder, make_registry
from monitor.http import MonitorHTTPServer
from monitor.rules.engine import RuleEngine
from monitor.series import labels_of

TOKEN = "s3cret-token"


class Reload:
    """A reload callable the test steers; counts its calls."""

    def __init__(self):
        self.calls = 0
        self.result: tuple[bool, list[str]] = (True, [])

    def __call__(self):
        self.calls += 1
        return self.result


ALERTS = [{"labels": {"alertname": "ErrorsHigh", "domain": "legal"},
           "annotations": {"summary": "legal errors"}, "state": "firing",
           "activeAt": "2025-11-28T19:54:00.000Z", "value": "0.75"}]


def start(**kw) -> MonitorHTTPServer:
    server = MonitorHTTPServer("127.0.0.1", 0, make_registry(SnapshotHolder()),
                               lambda: (True, "Ready."), **kw)
    server.start()
    return server


@pytest.fixture(scope="module")
def servers():
    """One server with a token, one without (shutting one down costs up to 0.5 s)."""
    reload_with, reload_without = Reload(), Reload()
    with_token = start(reload=reload_with, alerts=lambda: ALERTS, token=TOKEN)
    without = start(reload=reload_without, alerts=list, token=None)
    yield (with_token, reload_with), (without, reload_without)
    for server in (with_token, without):
        server.shutdown()
        server.server_close()


@pytest.fixture
def secured(servers):
    server, reload = servers[0]
    reload.calls, reload.result = 0, (True, [])
    return server, reload


@pytest.fixture
def open_server(servers):
    server, reload = servers[1]
    reload.calls, reload.result = 0, (True, [])
    return server, reload


def request(server, path: str, method: str = "GET", headers: dict | None = None,
            body: bytes | None = None):
    """(status, body, headers) of one request."""
    req = urllib.request.Request(server.url + path, method=method, headers=headers or {}, data=body)
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# -- POST /-/reload ------------------------------------------------------------------------

def test_reload_is_disabled_without_a_configured_token(open_server):
    server, reload = open_server

    status, body, _ = request(server, "/-/reload", "POST", bearer("anything"))

    assert status == 403 and b"MONITOR_API_TOKEN" in body
    assert reload.calls == 0


def test_reload_without_a_token_is_unauthorized(secured):
    server, reload = secured

    status, body, headers = request(server, "/-/reload", "POST")

    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="monitor"'
    assert b"Unauthorized" in body
    assert reload.calls == 0


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}x", "Bearer wrong", f"Basic {TOKEN}", TOKEN,
                                    "Bearer", f"Bearer {TOKEN[:-1]}"])
def test_reload_with_a_wrong_token_is_unauthorized(secured, header):
    server, reload = secured

    status, _, headers = request(server, "/-/reload", "POST", {"Authorization": header})

    assert status == 401 and "WWW-Authenticate" in headers
    assert reload.calls == 0


def test_reload_with_the_right_token(secured):
    server, reload = secured

    status, body, _ = request(server, "/-/reload", "POST", bearer(TOKEN))

    assert status == 200 and body == b"Rules reloaded.\n"
    assert reload.calls == 1


def test_the_bearer_scheme_is_case_insensitive(secured):
    server, reload = secured

    status, _, _ = request(server, "/-/reload", "POST", {"Authorization": f"bearer {TOKEN}"})

    assert status == 200 and reload.calls == 1


def test_reload_with_a_body_is_still_a_reload(secured):
    server, reload = secured

    status, _, _ = request(server, "/-/reload", "POST", bearer(TOKEN), body=b"{}" * 100)

    assert status == 200 and reload.calls == 1


def test_a_failed_reload_answers_500_with_the_errors(secured):
    server, reload = secured
    errors = ['rules/a.yml: 5:15: group "g", rule 1, "A": could not parse expression: boom',
              "rules/b.yml: no such file or folder"]
    reload.result = (False, errors)

    status, body, _ = request(server, "/-/reload", "POST", bearer(TOKEN))

    assert status == 500
    text = body.decode()
    assert text.startswith("Rules not reloaded; the previous rules keep running.\n")
    assert all(e in text for e in errors)


def test_reload_must_be_a_post(secured):
    server, reload = secured

    status, _, _ = request(server, "/-/reload", "GET", bearer(TOKEN))

    assert status == 404 and reload.calls == 0


def test_without_a_reload_callable_the_endpoint_is_absent():
    server = start(token=TOKEN)
    try:
        assert request(server, "/-/reload", "POST", bearer(TOKEN))[0] == 404
        assert request(server, "/api/v1/alerts")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


# -- GET /api/v1/alerts ------------------------------------------------------------------

def test_alerts_endpoint_has_the_prometheus_shape(secured):
    server, _ = secured

    status, body, headers = request(server, "/api/v1/alerts")

    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"status": "success", "data": {"alerts": ALERTS}}


def test_alerts_endpoint_needs_no_token(open_server):
    server, _ = open_server

    status, body, _ = request(server, "/api/v1/alerts?x=1")

    assert status == 200 and json.loads(body) == {"status": "success", "data": {"alerts": []}}


def test_reload_and_alerts_of_a_real_rule_engine(tmp_path):
    rules = tmp_path / "q.yml"
    rules.write_text(textwrap.dedent("""
        groups:
          - name: q
            rules:
              - alert: ErrorsHigh
                expr: monitor_quality{signal="error_ratio"} > 0.5
                labels: {severity: page}
                annotations: {summary: "{{ $labels.domain }}"}
        """))
    engine = RuleEngine(Config.model_validate({"rules": {"paths": [str(rules)]}}))
    assert engine.reload()[0]
    sample = labels_of({"__name__": "monitor_quality", "domain": "legal", "signal": "error_ratio"})
    engine.tick(1_764_359_640.0, [(sample, 0.75)])
    server = start(reload=engine.reload, alerts=engine.active_alerts, token=TOKEN)
    try:
        status, body, _ = request(server, "/api/v1/alerts")
        assert status == 200
        (alert,) = json.loads(body)["data"]["alerts"]
        assert alert["labels"] == {"alertname": "ErrorsHigh", "domain": "legal",
                                   "signal": "error_ratio", "severity": "page"}
        assert alert["annotations"] == {"summary": "legal"}
        assert alert["state"] == "firing"
        assert alert["activeAt"] == "2025-11-28T19:54:00.000Z"
        assert isinstance(alert["value"], str) and float(alert["value"]) == 0.75

        rules.write_text("groups:\n  - name: q\n    rules:\n      - alert: X\n")
        status, body, _ = request(server, "/-/reload", "POST", bearer(TOKEN))
        assert status == 500 and b"field 'expr' must be set in rule" in body
        assert not engine.last_reload_successful
        assert request(server, "/-/reload", "POST")[0] == 401

        rules.write_text("groups: []\n")
        assert request(server, "/-/reload", "POST", bearer(TOKEN))[0] == 200
        assert engine.last_reload_successful and engine.manager.groups == []
    finally:
        server.shutdown()
        server.server_close()
