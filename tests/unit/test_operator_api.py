"""Unit tests of the operator page and the read-only JSON views that monitor.http
serves for it (DESIGN.md §9): `/`, `/api/v1/domains`, `/api/v1/query`,
`/api/v1/query_range` (monitor.query_api), with fakes in place of the daemon."""

from __future__ import annotations

import json
import re
import threading
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.registry import CollectorRegistry

from monitor.http import MonitorHTTPServer, operator_page
from monitor.query_api import MAX_POINTS, QueryAPI, domains_view
from monitor.registry import load_registry
from monitor.series import STALE_NAN, SeriesStore
from monitor.state import StateStore

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_764_000_000.0  # the fake daemon's clock (s)
T0 = 1_763_999_400_000  # the first sample (ms), 10 minutes before NOW

REGISTRY = """\
base_models:
  tiny: {path: base}
domains:
  support:
    base_model: tiny
    kind: full
    golden_set: support/golden.jsonl
    versions:
      s1: {path: support/s1}
  legal:
    base_model: tiny
    kind: lora
    active: v2
    golden_set: legal/golden.jsonl
    versions:
      v1: {path: legal/v1, status: good}
      v2: {path: legal/v2}
      v3: {path: legal/v3, status: bad}
"""


class CountingLock:
    """An RLock that counts how often it was taken."""

    def __init__(self):
        self._lock = threading.RLock()
        self.taken = 0

    def __enter__(self):
        self._lock.acquire()
        self.taken += 1
        return self

    def __exit__(self, *exc):
        self._lock.release()


def _series() -> SeriesStore:
    store = SeriesStore(retention_ms=3_600_000)
    for minute in range(11):
        t = T0 + minute * 60_000
        for domain, per_minute in (("legal", 60.0), ("support", 6.0)):
            store.append((("__name__", "monitor_records_total"), ("domain", domain)), t,
                         per_minute * minute)
        store.append((("__name__", "monitor_error_ratio"), ("domain", "legal")), t, 0.25)
    # `support`'s ratio disappears after 5 minutes (a staleness marker, as a scrape writes)
    for minute in range(6):
        store.append((("__name__", "monitor_error_ratio"), ("domain", "support")),
                     T0 + minute * 60_000, 0.5)
    store.append((("__name__", "monitor_error_ratio"), ("domain", "support")),
                 T0 + 6 * 60_000, STALE_NAN)
    return store


ENGINE = SimpleNamespace(store=_series(), lock=CountingLock())


def _registry(root: Path):
    for path in ("legal/v1", "legal/v2", "legal/v3", "support/s1", "base"):
        (root / path).mkdir(parents=True)
    for domain in ("legal", "support"):
        (root / domain / "golden.jsonl").write_text('{"id": "1", "prompt": "p", "reference": "r"}\n')
    (root / "registry.yaml").write_text(REGISTRY)
    return load_registry(root / "registry.yaml")


def _run(version: str, verdict: str, at: float, status: str = "done", domain: str = "legal"):
    return {"id": uuid.uuid4().hex, "domain": domain, "version": version, "started_at": at - 5,
            "finished_at": at, "status": status, "verdict": verdict,
            "doc": {"domain": domain, "version": version, "verdict": verdict}}


class Actions:
    """A stand-in for the ActionService: `actions.list` and `executor.dry_plan`."""

    def __init__(self, rows):
        self.rows = rows
        self.actions = self
        self.executor = self
        self.plans = 0

    def list(self, status=None, domain=None, limit=None):
        return [r for r in self.rows if status in (None, r["status"])
                and domain in (None, r["domain"])]

    def dry_plan(self, action):
        self.plans += 1
        if action["domain"] == "broken":
            from monitor.actions.model import ActionError
            raise ActionError("domain broken is not in the registry", "unknown_domain")
        return {"from": "v2", "to": "v1", "why": "last good version"}


def _action(action_id: str, status: str, domain: str = "legal", action: str = "rollback",
            doc: dict | None = None):
    return {"id": action_id, "domain": domain, "action": action, "status": status,
            "created_at": NOW - 60, "updated_at": NOW - 30, "actor": "rule:GoldenRegression",
            "doc": {"reason": {"alert": {"alertname": "GoldenRegression"}}, "params": {},
                    **(doc or {})}}


ACTIONS = Actions([
    _action("a1", "pending_approval"),
    _action("a2", "pending_approval", domain="broken"),
    _action("a3", "executed", doc={"result": {"from": "v3", "to": "v2"}}),
    _action("a4", "pending_approval", action="retrain"),
])
DOMAINS: dict = {"rows": []}


@pytest.fixture(scope="module")
def server():
    srv = MonitorHTTPServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, "ok"),
                            alerts=lambda: [], actions=lambda: ACTIONS,
                            domains=lambda: DOMAINS["rows"],
                            query=QueryAPI(ENGINE, clock=lambda: NOW))
    srv.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(server, path: str, method: str = "GET", data: bytes | None = None,
            headers: dict | None = None):
    """(status, body, headers) of one request."""
    req = urllib.request.Request(server.url + path, method=method, data=data,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as reply:
            return reply.status, reply.read(), reply.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def get_json(server, path: str, **params):
    status, body, headers = request(server, path + ("?" + urllib.parse.urlencode(params)
                                                    if params else ""))
    assert headers.get("Content-Type") == "application/json"
    return status, json.loads(body)


# -- /api/v1/domains -------------------------------------------------------------------------

def test_domains_lists_each_domain_with_its_active_version_and_latest_verdicts(server, tmp_path):
    registry = _registry(tmp_path)
    runs = [_run("v1", "pass", NOW - 3600), _run("v2", "pass", NOW - 1800),
            _run("v2", "regressed", NOW - 600),  # the latest of v2 wins
            _run("v2", None, NOW - 60, status="failed")]  # a failed run has no verdict
    DOMAINS["rows"] = domains_view(registry, runs)

    status, doc = get_json(server, "/api/v1/domains")

    assert status == 200 and doc["status"] == "success"
    legal, support = doc["data"]["domains"]  # sorted by name
    assert legal == {
        "domain": "legal", "kind": "lora", "base_model": "tiny", "active": "v2",
        "versions": [
            {"version": "v1", "status": "good", "verdict": "pass",
             "evaluated_at": "2025-11-24T15:00:00.000Z"},
            {"version": "v2", "status": None, "verdict": "regressed",
             "evaluated_at": "2025-11-24T15:50:00.000Z"},
            {"version": "v3", "status": "bad", "verdict": None, "evaluated_at": None}]}
    assert support == {"domain": "support", "kind": "full", "base_model": "tiny", "active": None,
                       "versions": [{"version": "s1", "status": None, "verdict": None,
                                     "evaluated_at": None}]}


def test_domains_read_the_runs_of_a_state_store(tmp_path):
    registry = _registry(tmp_path)
    state = StateStore(f"sqlite:///{tmp_path}/state.db")
    try:
        state.save_eval_run(_run("v1", "pass", NOW - 100))
        state.save_eval_run(_run("v2", "pass", NOW - 90))
        state.save_eval_run(_run("v2", "regressed", NOW - 50))  # the latest of v2 wins
        state.save_eval_run(_run("v1", None, NOW - 10, status="failed"))  # not finished
        latest = state.latest_eval_runs()
        rows = domains_view(registry, latest)
        # the same verdicts as `monitor adapters list`
        verdicts = state.latest_verdicts()
    finally:
        state.close()

    assert [(r["version"], r["verdict"]) for r in latest] == [("v1", "pass"), ("v2", "regressed")]
    legal = {v["version"]: v["verdict"] for v in rows[0]["versions"]}
    assert legal == {"v1": "pass", "v2": "regressed", "v3": None}
    assert verdicts == {("legal", v): verdict for v, verdict in legal.items() if verdict}


def test_domains_is_an_empty_list_without_a_registry(server):
    DOMAINS["rows"] = domains_view(None, [_run("v1", "pass", NOW)])
    assert get_json(server, "/api/v1/domains") == (200, {"status": "success",
                                                         "data": {"domains": []}})
    bare = MonitorHTTPServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, "ok"))
    bare.start()
    try:
        assert get_json(bare, "/api/v1/domains")[1]["data"] == {"domains": []}
        assert request(bare, "/api/v1/query_range")[0] == 404  # no series to query
    finally:
        bare.shutdown()
        bare.server_close()


def test_domains_that_cannot_be_read_answer_503(server):
    def broken():
        raise RuntimeError("database is locked")

    bare = MonitorHTTPServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, "ok"),
                             domains=broken)
    bare.start()
    try:
        status, doc = get_json(bare, "/api/v1/domains")
    finally:
        bare.shutdown()
        bare.server_close()
    assert status == 503 and doc["status"] == "error" and "database is locked" in doc["error"]


# -- /api/v1/query_range ---------------------------------------------------------------------

def test_query_range_returns_a_matrix_with_one_series_per_label_set(server):
    status, doc = get_json(server, "/api/v1/query_range", query="monitor_error_ratio",
                           start=T0 / 1000, end=T0 / 1000 + 600, step=120)

    assert status == 200 and doc["status"] == "success"
    assert doc["data"]["resultType"] == "matrix"
    legal, support = doc["data"]["result"]
    t0 = T0 // 1000
    assert legal == {"metric": {"__name__": "monitor_error_ratio", "domain": "legal"},
                     "values": [[t0 + s, "0.25"] for s in range(0, 601, 120)]}
    # gone after its staleness marker at minute 6
    assert support == {"metric": {"__name__": "monitor_error_ratio", "domain": "support"},
                       "values": [[t0 + s, "0.5"] for s in (0, 120, 240)]}


def test_query_range_evaluates_functions_and_aggregations(server):
    start = "2025-11-24T15:55:00Z"  # RFC 3339 works as well as Unix seconds
    status, doc = get_json(server, "/api/v1/query_range",
                           query="sum by (domain) (rate(monitor_records_total[2m]))",
                           start=start, end=NOW, step="1m")

    assert status == 200, doc
    by_domain = {s["metric"]["domain"]: s["values"] for s in doc["data"]["result"]}
    assert set(by_domain) == {"legal", "support"}
    assert all("__name__" not in s["metric"] for s in doc["data"]["result"])
    assert [t for t, _ in by_domain["legal"]] == [int(NOW) - 300 + 60 * i for i in range(6)]
    assert by_domain["legal"][0][1] == "1" and by_domain["support"][0][1] == "0.1"


def test_a_scalar_becomes_one_series_without_labels(server):
    status, doc = get_json(server, "/api/v1/query_range", query="1 + 1",
                           start=100, end=101.5, step="0.5")

    assert status == 200
    assert doc["data"]["result"] == [{"metric": {}, "values": [
        [100, "2"], [100.5, "2"], [101, "2"], [101.5, "2"]]}]


def test_query_range_takes_a_post_form_as_grafana_sends_it(server):
    form = urllib.parse.urlencode({"query": "monitor_error_ratio{domain='legal'}",
                                   "start": T0 / 1000, "end": T0 / 1000 + 60, "step": "60"})
    status, body, _ = request(server, "/api/v1/query_range", "POST", form.encode(),
                              {"Content-Type": "application/x-www-form-urlencoded"})

    assert status == 200
    [series] = json.loads(body)["data"]["result"]
    assert series["metric"]["domain"] == "legal" and len(series["values"]) == 2


def test_query_range_takes_the_engine_lock_once_a_step(server):
    before = ENGINE.lock.taken
    get_json(server, "/api/v1/query_range", query="monitor_error_ratio",
             start=0, end=99, step=1)
    assert ENGINE.lock.taken - before == 100


@pytest.mark.parametrize("params, message", [
    ({"start": "0", "end": "60", "step": "15"}, 'invalid parameter "query": empty query'),
    ({"query": "sum(", "start": "0", "end": "60", "step": "15"}, 'invalid parameter "query"'),
    ({"query": "topk(1, up)", "start": "0", "end": "60", "step": "15"},
     "aggregation topk is not supported"),
    ({"query": "up[5m]", "start": "0", "end": "60", "step": "15"},
     'invalid expression type "range vector" for range query'),
    ({"query": "up", "end": "60", "step": "15"},
     'invalid parameter "start": cannot parse "" to a valid timestamp'),
    ({"query": "up", "start": "yesterday", "end": "60", "step": "15"},
     'invalid parameter "start": cannot parse "yesterday" to a valid timestamp'),
    ({"query": "up", "start": "60", "end": "0", "step": "15"},
     "end timestamp must not be before start time"),
    ({"query": "up", "start": "0", "end": "60", "step": "0"},
     "zero or negative query resolution step widths are not accepted"),
    ({"query": "up", "start": "0", "end": "60", "step": "soon"},
     'invalid parameter "step": cannot parse "soon" to a valid duration'),
    ({"query": "up", "start": "0", "end": str(MAX_POINTS + 1), "step": "1"},
     ("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the "
      "query resolution (?step=XX)")),
    # Python's regex engine backtracks: shapes that may take exponential time are refused.
    ({"query": 'up{job=~"(a+)+b"}', "start": "0", "end": "60", "step": "15"},
     'regex "(a+)+b" is refused: a repetition of something that itself repeats or alternates'),
    ({"query": 'up{job!~"(ab|a)*c"}', "start": "0", "end": "60", "step": "15"},
     'regex "(ab|a)*c" is refused'),
    ({"query": 'up{job=~".*a.*b.*c.*d"}', "start": "0", "end": "60", "step": "15"},
     "more than 3 unbounded repetitions"),
    ({"query": 'up{job=~"(a"}', "start": "0", "end": "60", "step": "15"},
     'illegal regex for (a'),
    ({"query": "up", "start": "0", "end": "1e308", "step": "15"},
     'invalid parameter "end": cannot parse "1e308" to a valid timestamp'),
])
def test_query_range_refuses_bad_parameters_with_bad_data(server, params, message):
    status, doc = get_json(server, "/api/v1/query_range", **params)

    assert status == 400
    assert doc["status"] == "error" and doc["errorType"] == "bad_data"
    assert message in doc["error"]


def test_the_point_cap_allows_exactly_11000_steps(server):
    status, doc = get_json(server, "/api/v1/query_range", query="vector(1)",
                           start=0, end=MAX_POINTS, step=1)
    assert status == 200 and len(doc["data"]["result"][0]["values"]) == MAX_POINTS + 1


def test_an_evaluation_error_is_an_execution_error(server):
    # two series with the same labels once the name is dropped
    status, doc = get_json(server, "/api/v1/query", query="abs({domain='legal'})",
                           time=T0 / 1000 + 60)
    assert status == 422 and doc["errorType"] == "execution", doc


# -- /api/v1/query -----------------------------------------------------------------------------

def test_query_returns_an_instant_vector_at_the_time_given(server):
    status, doc = get_json(server, "/api/v1/query",
                           query="monitor_records_total{domain='legal'}",
                           time=T0 / 1000 + 90.5)

    assert status == 200
    assert doc["data"] == {"resultType": "vector", "result": [
        {"metric": {"__name__": "monitor_records_total", "domain": "legal"},
         "value": [T0 / 1000 + 90.5, "60"]}]}


def test_query_defaults_to_now_and_answers_scalars_and_range_vectors(server):
    status, doc = get_json(server, "/api/v1/query", query="time()")
    assert status == 200 and doc["data"] == {"resultType": "scalar",
                                             "result": [int(NOW), str(int(NOW))]}

    status, doc = get_json(server, "/api/v1/query",
                           query="monitor_error_ratio{domain='legal'}[2m]")
    assert status == 200 and doc["data"]["resultType"] == "matrix"
    [series] = doc["data"]["result"]
    assert series["values"] == [[int(NOW) - 120, "0.25"], [int(NOW) - 60, "0.25"],
                                [int(NOW), "0.25"]]


def test_query_refuses_a_bad_time(server):
    status, doc = get_json(server, "/api/v1/query", query="up", time="2025-13-01T00:00:00Z")
    assert (status, doc["errorType"]) == (400, "bad_data")


# -- /api/v1/actions: what a pending change would do ---------------------------------------------

def test_a_pending_rollback_shows_the_change_approving_it_would_make(server):
    status, doc = get_json(server, "/api/v1/actions", status="all")

    assert status == 200
    listed = {a["id"]: a for a in doc["data"]["actions"]}
    assert listed["a1"]["plan"] == {"from": "v2", "to": "v1", "why": "last good version"}
    assert listed["a2"]["plan_error"] == "domain broken is not in the registry"
    assert "plan" not in listed["a3"] and listed["a3"]["result"] == {"from": "v3", "to": "v2"}
    assert "plan" not in listed["a4"] and "plan_error" not in listed["a4"]  # a retrain


# -- the operator page ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/index.html"])
def test_the_operator_page_is_served_with_a_strict_policy(server, path):
    status, body, headers = request(server, path)

    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"
    policy = headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "connect-src 'self'" in policy
    assert headers["Cache-Control"] == "no-store"
    assert body == operator_page()
    html = body.decode()
    for hook in ('id="token"', 'type="password"', 'id="message"', 'id="domains"',
                 'id="alerts"', 'id="pending"', 'id="recent"'):
        assert hook in html
    assert request(server, path, method="HEAD")[1] == b""


def test_the_page_loads_nothing_from_elsewhere_and_keeps_no_token():
    html = operator_page().decode()

    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert not re.search(r"""fetch\(\s*["'`](https?:)?//""", html)
    assert not re.search(r"@import|url\(", html)
    for forbidden in ("localStorage", "sessionStorage", "document.cookie", "indexedDB",
                      "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                      "eval(", "history.pushState", "location.hash ="):
        assert forbidden not in html, forbidden
    # the token goes into a header, nowhere else
    assert html.count('getElementById("token")') == 1
    assert '"Bearer " + token' in html


def test_the_page_ships_as_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "static/*" in config["tool"]["setuptools"]["package-data"]["monitor"]
    assert (ROOT / "monitor" / "static" / "operator.html").read_bytes() == operator_page()


def test_not_found_points_to_the_page(server):
    status, body, _ = request(server, "/nope")
    assert status == 404 and b"operator page is at /" in body


# -- the daemon's wiring ------------------------------------------------------------------------

def test_the_daemon_serves_its_registry_verdicts_and_series(tmp_path):
    from monitor.ingest.dlq import MemoryDeadLetters
    from tests.unit.test_daemon import FakeSource, Running, make_config

    _registry(tmp_path)
    config = make_config(tmp_path)
    state = StateStore(config.state.url)
    try:
        state.save_eval_run(_run("v2", "regressed", NOW))
    finally:
        state.close()
    with Running(config, FakeSource(), MemoryDeadLetters(),
                 registry_path=str(tmp_path / "registry.yaml")) as running:
        running.wait_for(lambda: running.daemon.http is not None and running.daemon.ready()[0])
        server = running.daemon.http

        [legal, _support] = get_json(server, "/api/v1/domains")[1]["data"]["domains"]
        assert legal["active"] == "v2"
        assert legal["versions"][1] == {"version": "v2", "status": None, "verdict": "regressed",
                                        "evaluated_at": "2025-11-24T16:00:00.000Z"}

        def build_info():
            doc = get_json(server, "/api/v1/query", query="monitor_build_info")[1]
            return doc["data"]["result"]

        running.wait_for(build_info, what="monitor_build_info in the rule engine's series")
        now = time.time()
        status, doc = get_json(server, "/api/v1/query_range", query="monitor_build_info",
                               start=now - 60, end=now + 1, step="1s")
        assert status == 200 and doc["data"]["result"][0]["values"][-1][1] == "1"
        assert running.stop() == 0


def test_ordinary_label_regexes_are_answered(server):
    for regex in ("legal|support", "prompt_.*", ".*drift.*", "(legal|support)_v[0-9]+"):
        status, doc = get_json(server, "/api/v1/query", query=f'up{{job=~"{regex}"}}')
        assert status == 200, (regex, doc)
