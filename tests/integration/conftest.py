"""Integration fixtures: a real Tansu broker on a free loopback port, and a
daemon started as a real subprocess (`python -m monitor run`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.broker import LocalBroker, free_port


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with LocalBroker(log_path=str(log)) as running:
        yield running


@pytest.fixture
def topic(broker):
    name = f"logs-{uuid.uuid4().hex[:8]}"
    broker.create_topic(name, partitions=3)
    return name


class DaemonProcess:
    """One `monitor run` subprocess with its own config file, state and port."""

    def __init__(self, workdir: Path, bootstrap: str, topic: str, group: str | None = None,
                 fetcher: str = "process", semantic: bool = True):
        self.workdir = workdir
        self.port = free_port()
        self.state_path = workdir / "state.db"
        self.config_path = workdir / "monitor.yaml"
        self.config_path.write_text(
            "kafka:\n"
            f"  bootstrap_servers: {bootstrap}\n"
            f"  topic: {topic}\n"
            f"  group: {group or 'it-' + topic}\n"
            "  session_timeout_ms: 6000\n"
            "  heartbeat_interval_ms: 1000\n"
            f"  fetcher: {fetcher}\n"
            "state:\n"
            f"  url: sqlite:///{self.state_path}\n"
            "  flush_interval_seconds: 0.2\n"
            "http:\n"
            f"  address: 127.0.0.1:{self.port}\n"
            + ("" if semantic else "drift:\n  embeddings:\n    enabled: false\n"))
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / "daemon.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "DaemonProcess":
        env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(self.config_path)],
            cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> dict:
        """{(name, frozenset(labels)): value} from a real scrape, parsed by prometheus-client."""
        status, text = self.get("/metrics")
        assert status == 200
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(accepted per domain, rejected per reason), or empty dicts while not up."""
        try:
            samples = self.metrics()
        except (OSError, AssertionError):
            return {}, {}
        accepted, rejected = {}, {}
        for (name, labels), value in samples.items():
            labels = dict(labels)
            if name == "monitor_records_total":
                accepted[labels["domain"]] = int(value)
            elif name == "monitor_records_rejected_total":
                rejected[labels["reason"]] = int(value)
        return accepted, rejected

    def wait_for_total(self, total: int, timeout: float = 90.0) -> tuple[dict, dict]:
        deadline = time.monotonic() + timeout
        accepted, rejected = {}, {}
        while time.monotonic() < deadline:
            accepted, rejected = self.counts()
            if sum(accepted.values()) + sum(rejected.values()) >= total:
                return accepted, rejected
            self.assert_running()
            time.sleep(0.2)
        raise AssertionError(f"daemon saw {sum(accepted.values()) + sum(rejected.values())} "
                             f"of {total} records in {timeout}s; log:\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.assert_running()
            try:
                if self.get("/-/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"daemon not ready in {timeout}s; log:\n{self.log_tail()}")

    def assert_running(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"daemon exited with {self.process.returncode}; "
                                 f"log:\n{self.log_tail()}")

    def kill9(self, whole_group: bool = False) -> None:
        """SIGKILL the daemon (and, with whole_group, its fetcher child too). Killing
        the daemon alone, its fetcher child must notice and exit by itself."""
        if whole_group:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            return
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.process.kill()
        self.process.wait()
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"orphaned after kill -9 of the daemon: {alive}"

    def terminate(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()


@pytest.fixture
def daemon_factory(tmp_path, broker, topic):
    made: list[DaemonProcess] = []

    def make(workdir: Path | None = None, fetcher: str = "process",
             semantic: bool = True) -> DaemonProcess:
        workdir = workdir or tmp_path
        daemon = DaemonProcess(workdir, broker.bootstrap_servers, topic, fetcher=fetcher,
                               semantic=semantic)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.cleanup()


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


from tests.integration.alertmanager import alertmanager  # noqa: E402,F401  (fixture)
