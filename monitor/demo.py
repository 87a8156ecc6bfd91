"""`make demo`: the daemon on embedded defaults, fed synthetic traffic.

Starts the local broker, starts `monitor run` as a real subprocess (SQLite
state under demo-out/), produces traffic for a few domains (with some
malformed records) for about a minute, prints what the daemon saw, as read
from its own /metrics endpoint, then stops everything cleanly.

Environment: DEMO_SECONDS (default 60), DEMO_RATE (records/s, default 400).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from monitor.broker import LocalBroker, free_port
from monitor.synthetic import produce, traffic

TOPIC = "inference-logs"


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as reply:
        text = reply.read().decode()
    out: dict = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def wait_ready(url: str, daemon: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon exited with status {daemon.returncode}; "
                             "see demo-out/daemon.log")
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the daemon did not become ready; see demo-out/daemon.log")


def report(metrics: dict, url: str, produced: int, malformed: int) -> str:
    by_domain = {labels["domain"]: int(v) for labels, v in metrics.get("monitor_records_total", [])}
    rejected = {labels["reason"]: int(v) for labels, v in metrics.get("monitor_records_rejected_total", [])}
    window = {labels["domain"]: int(v) for labels, v in metrics.get("monitor_window_samples", [])}
    quality: dict = {}
    for labels, value in metrics.get("monitor_quality", []):
        quality.setdefault(labels["domain"], {})[labels["signal"]] = value
    latency: dict = {}
    for labels, value in metrics.get("monitor_latency_seconds", []):
        latency.setdefault(labels["domain"], {})[labels["quantile"]] = value
    lines = [
        "",
        f"produced {produced} records ({malformed} malformed); the daemon accepted "
        f"{sum(by_domain.values())} and rejected {sum(rejected.values())}",
        "",
        f"{'domain':<10}{'records':>9}{'window':>8}{'errors':>8}{'refusals':>10}{'empty':>7}"
        f"{'logprob':>9}{'feedback':>10}{'p50 s':>8}{'p99 s':>8}",
    ]
    for domain in sorted(by_domain):
        q, lat = quality.get(domain, {}), latency.get(domain, {})
        lines.append(
            f"{domain:<10}{by_domain[domain]:>9}{window.get(domain, 0):>8}"
            f"{q.get('error_ratio', 0):>8.3f}{q.get('refusal_ratio', 0):>10.3f}"
            f"{q.get('empty_output_ratio', 0):>7.3f}{q.get('mean_logprob', 0):>9.3f}"
            f"{q.get('feedback_mean', 0):>10.3f}{lat.get('0.5', 0):>8.3f}{lat.get('0.99', 0):>8.3f}")
    lines.append("")
    detected: dict = {}
    for labels, value in metrics.get("monitor_drift_detected", []):
        detected.setdefault(labels["domain"], []).append((labels["feature"], value))
    if detected:
        lines.append("drift against each domain's reference (its first records):")
        for domain in sorted(detected):
            drifting = sorted(f for f, v in detected[domain] if v)
            lines.append(f"  {domain:<10}" + (f"DRIFT in {', '.join(drifting)}" if drifting
                                              else f"no drift in {len(detected[domain])} features"))
    else:
        lines.append("drift: no evaluation with a reference yet (a domain's reference is its "
                     "first 5000 records; evaluations run every minute)")
    lines.append("rejected by reason (each one is in the dead-letter topic "
                 f"{TOPIC}.dlq): " + (", ".join(f"{r} {c}" for r, c in sorted(rejected.items()))
                                      or "none"))
    lines.append(f"metrics were served at {url}/metrics (state: demo-out/state.db, "
                 "log: demo-out/daemon.log)")
    return "\n".join(lines)


def alerts_line(url: str) -> str:
    """What the rule pack says now, from the daemon's /api/v1/alerts."""
    import json

    with urllib.request.urlopen(url + "/api/v1/alerts", timeout=5) as reply:
        alerts = json.loads(reply.read())["data"]["alerts"]
    if not alerts:
        return "alerts: none pending or firing (the default rules wait 5-15 minutes: `for:`)"
    return "alerts:\n" + "\n".join(
        f"  {a['state']:<8} {a['labels']['alertname']} {a['labels'].get('domain', '')}  "
        f"{a['annotations'].get('summary', '')}" for a in alerts)


def main() -> int:
    seconds = float(os.environ.get("DEMO_SECONDS", "60"))
    rate = float(os.environ.get("DEMO_RATE", "400"))
    out = Path("demo-out")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    port = 9464
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=0.5):
            port = free_port()
    except OSError:
        pass
    url = f"http://127.0.0.1:{port}"

    print("starting the local broker (Tansu) ...", flush=True)
    with LocalBroker(log_path=str(out / "broker.log")) as broker:
        broker.create_topic(TOPIC, partitions=3)
        env = dict(os.environ, MONITOR_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
                   MONITOR_KAFKA_TOPIC=TOPIC, MONITOR_STATE_URL=f"sqlite:///{(out / 'state.db').resolve()}",
                   MONITOR_HTTP_ADDRESS=f"127.0.0.1:{port}")
        log = open(out / "daemon.log", "wb")
        print(f"starting the daemon: monitor run  (broker {broker.bootstrap_servers}, "
              f"metrics {url}/metrics)", flush=True)
        # Run from demo-out/ so that no monitor.yaml is picked up: embedded defaults + env.
        rules = Path(__file__).resolve().parent.parent / "rules"
        command = [sys.executable, "-m", "monitor", "run"]
        if rules.is_dir():
            command += ["--rules", str(rules)]  # the default rule pack
        daemon = subprocess.Popen(command, env=env, cwd=out,
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(url, daemon)
            produced = malformed = 0
            started = time.monotonic()
            tick = 0
            print(f"producing synthetic traffic for {seconds:.0f}s at ~{rate:.0f} records/s "
                  "(domains legal, support, medical; 1 in 50 malformed)", flush=True)
            while time.monotonic() - started < seconds:
                chunk = list(traffic(int(rate), start=time.time() - 1, rate=rate, seed=tick,
                                     malformed_every=50))
                produced += produce(broker.bootstrap_servers, TOPIC, chunk, linger_ms=5)
                malformed += sum(1 for m in chunk if m.expected_reason)
                tick += 1
                if tick % 10 == 0:
                    metrics = scrape(url)
                    seen = sum(v for _, v in metrics.get("monitor_records_total", []))
                    print(f"  {time.monotonic() - started:5.0f}s  produced {produced:>7}  "
                          f"daemon accepted {int(seen):>7}", flush=True)
                time.sleep(max(0.0, tick - (time.monotonic() - started)))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                metrics = scrape(url)
                seen = sum(v for _, v in metrics.get("monitor_records_total", [])) + \
                    sum(v for _, v in metrics.get("monitor_records_rejected_total", []))
                if seen >= produced:
                    break
                time.sleep(0.5)
            print(report(scrape(url), url, produced, malformed), flush=True)
            print(alerts_line(url), flush=True)
        finally:
            daemon.send_signal(signal.SIGTERM)
            status = daemon.wait(timeout=60)
            print(f"daemon stopped (exit status {status})", flush=True)
    return 0 if status == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
