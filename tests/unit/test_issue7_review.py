"""Defects found reviewing the operator page, the query API, the demo and the
dashboards (issue 7), each pinned by a test written before its fix. Fast:
loopback servers started in-process, short subprocesses with hard timeouts,
promtool when installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.registry import CollectorRegistry

from monitor.http import MonitorHTTPServer, operator_page
from monitor.query_api import QueryAPI
from monitor.series import CACHE_LIMIT, SeriesStore

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_764_000_000.0


def _engine() -> SimpleNamespace:
    store = SeriesStore(retention_ms=3_600_000)
    t0 = int(NOW * 1000) - 600_000
    for minute in range(11):
        t = t0 + minute * 60_000
        store.append((("__name__", "up"), ("job", "monitor")), t, 1.0)
        store.append((("__name__", "monitor_quality"), ("domain", "legal"),
                      ("signal", "empty_output_ratio")), t, 0.01)
    return SimpleNamespace(store=store, lock=threading.RLock())


@pytest.fixture()
def server():
    srv = MonitorHTTPServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, "ok"),
                            alerts=lambda: [], query=QueryAPI(_engine(), clock=lambda: NOW))
    srv.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _status(server, path: str) -> int | str:
    """The HTTP status of a GET, or what went wrong when no answer came."""
    try:
        with urllib.request.urlopen(server.url + path, timeout=5) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except Exception as exc:  # the server dropped the connection
        return f"no answer: {exc.__class__.__name__}: {exc}"


# -- monitor/query_api.py ------------------------------------------------------------

def test_an_instant_query_at_a_huge_time_is_bad_data(server):
    params = urllib.parse.urlencode({"query": "up", "time": "1e308"})
    assert _status(server, "/api/v1/query?" + params) == 400


def test_a_range_query_ending_at_a_huge_time_is_bad_data(server):
    params = urllib.parse.urlencode({"query": "up", "start": "0", "end": "1e308",
                                     "step": "1e305"})
    assert _status(server, "/api/v1/query_range?" + params) == 400


def test_a_pathological_regex_is_answered_quickly():
    script = textwrap.dedent("""
        import threading, time
        from types import SimpleNamespace
        from monitor.query_api import QueryAPI
        from monitor.series import SeriesStore
        store = SeriesStore()
        store.append((("__name__", "monitor_quality"), ("domain", "legal"),
                      ("signal", "empty_output_ratio")), 1_000_000, 0.01)
        api = QueryAPI(SimpleNamespace(store=store, lock=threading.RLock()),
                       clock=lambda: 1_000.0)
        began = time.monotonic()
        status, doc = api.query({"query": 'monitor_quality{signal=~"(.*.*)*z"}'})
        print(status, round(time.monotonic() - began, 2))
    """)
    try:
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                              text=True, timeout=3)
    except subprocess.TimeoutExpired:
        pytest.fail("a query with the regex (.*.*)*z over one 18-character label value "
                    "did not finish within 3 s")
    assert done.returncode == 0, done.stderr


def test_distinct_queries_do_not_grow_the_store_without_bound():
    engine = _engine()
    api = QueryAPI(engine, clock=lambda: NOW)
    for i in range(3 * CACHE_LIMIT):
        status, _ = api.query({"query": f'up{{job!="probe-{i}"}}'})
        assert status == 200
    store = engine.store
    cached = sum(len(c) for c in store._selections.values())
    assert len(store._predicates) <= CACHE_LIMIT and cached <= CACHE_LIMIT, (
        len(store._predicates), cached)


# -- monitor/http.py ---------------------------------------------------------------------

def _raw(server, request: bytes, wait: float = 2.0) -> bytes:
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=wait) as sock:
        sock.sendall(request)
        try:
            return sock.recv(4096)
        except socket.timeout:
            return b"(no answer within %.0fs)" % wait


@pytest.mark.parametrize("length", ["abc", "-1"])
def test_a_post_with_a_bad_content_length_is_answered_400(server, length):
    head = _raw(server, f"POST /api/v1/query HTTP/1.1\r\nHost: x\r\n"
                        f"Content-Length: {length}\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.1 400"), head[:80]


# -- monitor/static/operator.html ----------------------------------------------------------

class _Actions:
    """ActionService stand-in whose list() is newest first and honours `limit`."""

    def __init__(self, rows):
        self.rows = rows
        self.actions = self
        self.executor = self

    def list(self, status=None, domain=None, limit=None):
        rows = [r for r in self.rows if status in (None, r["status"])
                and domain in (None, r["domain"])]
        rows.sort(key=lambda r: -r["created_at"])
        return rows[:limit] if limit is not None else rows

    def dry_plan(self, action):
        return {"from": "v2", "to": "v1", "why": "last good version"}


def _action(i: int, status: str) -> dict:
    return {"id": f"a{i}", "domain": "legal", "action": "retrain", "status": status,
            "created_at": NOW - 100_000 + i, "updated_at": NOW - 100_000 + i,
            "actor": "rule:X", "doc": {"reason": {}, "params": {}}}


def test_the_page_shows_a_pending_approval_older_than_500_actions():
    rows = [_action(0, "pending_approval")] + [_action(i, "skipped") for i in range(1, 502)]
    srv = MonitorHTTPServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, "ok"),
                            actions=lambda: _Actions(rows))
    srv.start()
    try:
        html = operator_page().decode()
        paths = sorted(set(re.findall(r'"(/api/v1/actions(?:\?[^"]*)?)"', html)))
        assert paths, "the page reads no action list"
        shown = set()
        for path in paths:
            with urllib.request.urlopen(srv.url + path, timeout=5) as reply:
                shown |= {a["id"] for a in json.loads(reply.read())["data"]["actions"]
                          if a["status"] == "pending_approval"}
        assert "a0" in shown, f"the page reads {paths}; pending a0 is in none of them"
    finally:
        srv.shutdown()
        srv.server_close()


# -- monitor/demo/run.py -------------------------------------------------------------------

def test_the_demo_does_not_empty_a_folder_it_did_not_create(tmp_path, monkeypatch):
    import monitor.demo.run as demo_run

    out = tmp_path / "mine"
    (out / ".git").mkdir(parents=True)
    (out / "notes.txt").write_text("keep me")

    class Stop(Exception):
        pass

    def prepare(settings, log=print):
        raise Stop

    monkeypatch.setattr(demo_run, "prepare", prepare)
    demo = demo_run.Demo(demo_run.Settings(out=out, echo=False, port=0))
    try:
        demo.setup()
    except (Stop, demo_run.DemoError, SystemExit):
        pass
    finally:
        demo.close()
    assert (out / "notes.txt").exists() and (out / ".git").is_dir()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_to_the_demo_stops_the_daemon_it_started(tmp_path):
    script = textwrap.dedent("""
        import subprocess, sys, time
        from pathlib import Path
        import monitor.demo.run as r

        def setup(self):
            self.daemon = r.Daemon.__new__(r.Daemon)
            self.daemon.log_path = Path(sys.argv[1]) / "daemon.log"
            self.daemon.process = subprocess.Popen(["sleep", "30"], start_new_session=True)
            print(self.daemon.process.pid, flush=True)

        def run(self):
            time.sleep(30)
            return False

        r.Demo.setup, r.Demo.run = setup, run
        sys.exit(r.main())
    """)
    env = {**os.environ, "DEMO_OUT": str(tmp_path)}
    demo = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    daemon_pid = None
    try:
        daemon_pid = int(demo.stdout.readline())
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=20)
        deadline = time.monotonic() + 5
        while _alive(daemon_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(daemon_pid), "the daemon outlived the demo"
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        if daemon_pid is not None and _alive(daemon_pid):
            os.kill(daemon_pid, signal.SIGKILL)


# -- grafana/generate.py -------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool")
def test_the_active_version_panels_survive_two_scraped_instances(tmp_path):
    from tests.dashboards import load_dashboards, panel_queries, substitute

    exprs = sorted({substitute(q.expr, {"domain": "legal"})
                    for d in load_dashboards(ROOT / "grafana" / "dashboards")
                    for q in panel_queries(d) if "monitor_adapter_active_info" in q.expr
                    and "group_left" in q.expr})
    assert exprs
    series = []
    for instance in ("10.0.0.1:9464", "10.0.0.2:9464"):
        common = f'domain="legal",instance="{instance}",job="monitor"'
        series += [
            f'monitor_golden_score{{{common},version="v2",metric="nll"}}',
            f'monitor_golden_regression{{{common},version="v2",metric="nll",baseline="v1"}}',
            f'monitor_adapter_active_info{{{common},version="v2",kind="lora",'
            f'base_model="tiny"}}']
    test = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": s, "values": "1 1 1"} for s in series],
        "promql_expr_test": [{"expr": e, "eval_time": "1m", "exp_samples": []}
                             for e in exprs]}]}
    path = tmp_path / "test.yml"
    path.write_text(json.dumps(test))  # JSON is YAML
    done = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True,
                          text=True, timeout=30)
    output = done.stdout + done.stderr
    assert "duplicate series" not in output and "many-to-many" not in output, output
