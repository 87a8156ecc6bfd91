"""A real Alertmanager (Debian package prometheus-alertmanager) on loopback, for tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from monitor.broker import free_port
from tests.receiver import Receiver

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


class Alertmanager:
    """A real Alertmanager on a free loopback port, routing every alert to a local
    webhook receiver (`hook`) with group_wait 0 s and group_interval 1 s."""

    def __init__(self, workdir: Path):
        self.hook = Receiver()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "alertmanager.yml"
        config.write_text(
            "route:\n  receiver: hook\n  group_wait: 0s\n  group_interval: 1s\n"
            "  repeat_interval: 1h\n"
            "receivers:\n  - name: hook\n    webhook_configs:\n"
            f"      - url: {self.hook.url}/am\n        send_resolved: true\n")
        self.log_path = workdir / "alertmanager.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [ALERTMANAGER, f"--config.file={config}", f"--storage.path={workdir / 'data'}",
                 "--cluster.listen-address=", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"alertmanager exited:\n{self.log()}"
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"alertmanager not ready in {timeout}s:\n{self.log()}")

    def alerts(self, query: str = "") -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts{query}", timeout=5) as reply:
            return json.loads(reply.read())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.hook.close()


@pytest.fixture
def alertmanager(tmp_path):
    if not os.access(ALERTMANAGER, os.X_OK):
        pytest.fail(f"{ALERTMANAGER} is missing: `make test` installs the Debian package "
                    "prometheus-alertmanager")
    workdir = tmp_path / "alertmanager"
    workdir.mkdir()
    am = Alertmanager(workdir)
    try:
        am.wait_ready()
        yield am
    finally:
        am.stop()
