"""`make demo`'s scenario, shortened, end to end; and the shipped Grafana
dashboards proven against a real Prometheus scraping the demo's daemon.

One run of the scenario (the real broker, a real `monitor run` with the default
rule pack on a faster clock, the tiny real models, the eval worker, the actions)
serves both checks, to keep the suite short:

- the timeline: the drifting domain (support) gets a drift alert and a retrain
  request, the regressed rollout (legal v2) is rolled back to v1, the healthy
  domain (medical) gets nothing; the charts are drawn from the daemon's own
  series; no process is left behind;
- the dashboards: a real Prometheus scrapes the daemon every second during the
  scenario; every panel query of every dashboard in grafana/dashboards, with
  its template variables substituted, parses with the PromQL parser and returns
  data from Prometheus' query_range API (see tests/dashboards.py).
"""

from __future__ import annotations

import json
import time

import psutil
import pytest

from monitor.demo.run import DRIFTING, HEALTHY_DOMAIN, REGRESSING, REPO, Demo, Settings
from tests.dashboards import check_against_prometheus, load_dashboards
from tests.integration.prometheus import Prometheus

pytestmark = pytest.mark.integration


def kinds(events, domain: str) -> set[tuple[str, str]]:
    return {(e.kind, e.data.get("alertname") or e.data.get("action") or "")
            for e in events if e.domain == domain}


RETRAIN_ALERTS = {"InputDrift", "PromptLengthDrift", "SemanticDrift"}


@pytest.fixture
def demo(tmp_path, tiny_models, receivers):
    # A webhook receiver: alert delivery is on the Daemon health dashboard.
    hook = receivers()
    settings = Settings(out=tmp_path / "demo-out", rate=40.0, speedup=40.0, max_seconds=150.0,
                        rollout_at=15.0, drift_at=15.0, reference_records=500,
                        window_seconds=40, quiet_seconds=5.0, port=0, cache=tiny_models.root,
                        report=False, echo=True,
                        extra_config=f"alerting:\n  webhooks: [{hook.url}]\n")
    running = Demo(settings)
    try:
        yield running
    finally:
        running.close()


def test_the_demo_closes_the_loop_and_every_dashboard_panel_has_data(demo, tmp_path):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    demo.setup()
    daemon_pid = demo.daemon.process.pid
    target = demo.daemon.url.removeprefix("http://")
    with Prometheus(target, tmp_path / "prometheus", scrape_interval="1s") as prometheus:
        prometheus.wait_target_up()
        closed = demo.run()
        time.sleep(2)  # the last scrapes
        failures = check_against_prometheus(
            prometheus.url, load_dashboards(REPO / "grafana" / "dashboards"),
            {"domain": [DRIFTING, REGRESSING, HEALTHY_DOMAIN]}, demo.start, time.time(), 2)
    assert closed, "the loop did not close:\n" + "\n".join(
        demo.timeline.format(e) for e in demo.timeline.events)
    written = demo.finish()
    assert failures == [], f"{len(failures)} dashboard queries failed:\n" + "\n".join(failures)

    events = demo.timeline.events
    support, legal, medical = (kinds(events, d) for d in (DRIFTING, REGRESSING, HEALTHY_DOMAIN))
    assert ("drift_detected", "") in support
    assert {("alert_firing", name) for name in RETRAIN_ALERTS} & support
    assert ("action", "retrain") in support
    assert ("alert_firing", "GoldenRegression") in legal
    [rollback] = [e for e in events if e.domain == REGRESSING and e.kind == "action"]
    assert rollback.data["status"] == "executed" and "v2 -> v1" in rollback.text
    assert legal & {("drift_detected", ""), ("alert_firing", "InputDrift")} == set()
    noisy = {k for k in medical if k[0] in ("drift_detected", "alert_pending", "alert_firing",
                                            "action")}
    assert noisy == set(), f"the healthy domain was not quiet: {noisy}"
    assert ("golden_evaluated", "") in medical
    # The order of the story: rollout, regression alert, rollback; drift, alert, retrain.
    order = [(e.kind, e.domain, e.data.get("alertname") or e.data.get("action") or "")
             for e in events]
    assert order.index(("scenario", REGRESSING, "")) < order.index(
        ("alert_firing", REGRESSING, "GoldenRegression")) < order.index(
        ("action", REGRESSING, "rollback"))
    assert order.index(("scenario", DRIFTING, "")) < order.index(
        ("drift_detected", DRIFTING, "")) < order.index(("action", DRIFTING, "retrain"))

    out = demo.s.out
    lines = [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines()]
    assert len(lines) == len(events) and lines[-1]["text"] == events[-1].text
    assert "active: v1" in (out / "adapters" / "registry.yaml").read_text()
    for name in ("drift-score.png", "golden-score.png"):
        png = out / name
        assert str(png) in written and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "snapshots").glob(f"{DRIFTING}-*.jsonl"))

    demo.close()
    time.sleep(0.5)
    assert not psutil.pid_exists(daemon_pid) or psutil.Process(daemon_pid).status() == "zombie"
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert left == [], f"processes left running: {[p.cmdline() for p in left]}"
