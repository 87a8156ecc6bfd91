"""A real Prometheus (Debian package prometheus, /usr/bin/prometheus) on loopback,
scraping one static target every second, for tests.

    with Prometheus("127.0.0.1:9464", tmp_path) as prom:   # started, ready
        prom.wait_target_up()                              # first scrape succeeded
        ...                                                # let it scrape a while
        series = prom.query_range("monitor_records_total", start, end, step=1)
        failures = check_against_prometheus(prom.url, dashboards, {...}, start, end, 1)

`stop()` (also on leaving the `with`) terminates Prometheus, kills it after a
grace period, and always reaps it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from monitor.broker import free_port
from tests.dashboards import api_get

PROMETHEUS = "/usr/bin/prometheus"


class Prometheus:
    """Prometheus on a free loopback port (`url`), scraping `target` ("host:port")
    at `metrics_path` every `scrape_interval` under job `job`, with its config
    and TSDB in `workdir` (a fresh folder is made inside it). Started by the
    constructor; `wait_ready()` (done by `__enter__`) waits for `/-/ready`."""

    def __init__(self, target: str, workdir: str | Path, *, metrics_path: str = "/metrics",
                 scrape_interval: str = "1s", job: str = "monitor",
                 binary: str = PROMETHEUS):
        if not os.access(binary, os.X_OK):
            raise FileNotFoundError(f"{binary} is missing: install the Debian package "
                                    "prometheus")
        self.target = target
        self.job = job
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(workdir) / f"prometheus-{self.port}"
        self.workdir.mkdir(parents=True)
        self.config_path = self.workdir / "prometheus.yml"
        # JSON is YAML: no quoting surprises from the target or the path.
        self.config_path.write_text(json.dumps({
            "global": {"scrape_interval": scrape_interval,
                       "scrape_timeout": scrape_interval,
                       "evaluation_interval": scrape_interval},
            "scrape_configs": [{"job_name": job, "metrics_path": metrics_path,
                                "static_configs": [{"targets": [target]}]}],
        }, indent=2) + "\n")
        self.log_path = self.workdir / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={self.config_path}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1d", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    # -- lifecycle --------------------------------------------------------------
    def __enter__(self):
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until `/-/ready` answers 200; AssertionError (with the log) otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._assert_running()
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready in {timeout}s:\n{self.log()}")

    def wait_target_up(self, timeout: float = 30.0) -> dict:
        """Until the target's last scrape succeeded (`/api/v1/targets` health "up");
        returns that target's entry. AssertionError with its last error otherwise."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self._assert_running()
            try:
                active = self._api("/api/v1/targets", [("state", "active")])["activeTargets"]
            except OSError:
                active = []
            for entry in active:
                if entry.get("labels", {}).get("job") == self.job:
                    last = entry
                    if entry.get("health") == "up":
                        return entry
            time.sleep(0.2)
        error = (last or {}).get("lastError", "no target yet")
        raise AssertionError(f"target {self.target} not up in {timeout}s: {error}\n{self.log()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL (its whole process group) after `timeout`; always reaped."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.process.wait()

    # -- queries ----------------------------------------------------------------
    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        """The result matrix of `expr` over [start, end] (Unix seconds): a list of
        {"metric": {labels}, "values": [[t, "v"], ...]}. RuntimeError carries
        Prometheus' error (a bad query)."""
        return self._api("/api/v1/query_range",
                         [("query", expr), ("start", repr(float(start))),
                          ("end", repr(float(end))), ("step", repr(float(step)))])["result"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """The instant vector (or scalar) of `expr` at `at` (default: now)."""
        params = [("query", expr)] + ([("time", repr(float(at)))] if at is not None else [])
        return self._api("/api/v1/query", params)["result"]

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict]:
        """Until the instant query `expr` returns a non-empty result; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._assert_running()
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"no data for {expr} in {timeout}s")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def _assert_running(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited ({self.process.returncode}):\n{self.log()}")

    def _api(self, path: str, params: list[tuple[str, str]]):
        return api_get(self.url, path, params)
