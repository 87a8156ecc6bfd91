"""Golden-set evaluation inside the running daemon, end to end: a real `monitor
run` subprocess with a registry of the tiny real models (a tiny Llama, peft LoRA
adapters, see monitor.eval.tiny) evaluates new versions in its worker process,
exports the verdicts on /metrics, evaluates a version registered while it runs
(SIGHUP), restarts a worker killed with SIGKILL, and keeps queued jobs across a
`kill -9` of the whole daemon. The broker is the real local one; no record is
sent: evaluations do not depend on traffic.

Every wait polls with a deadline; evaluations of the tiny models take seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from monitor.state import StateStore
from tests.integration.test_alerting_daemon import AlertingDaemon

pytest.importorskip("torch")
pytest.importorskip("peft")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

LEGAL = """\
base_models:
  tiny-llama: {path: ../models/tiny-llama}
domains:
  legal:
    base_model: tiny-llama
    kind: lora
    active: v1
    golden_set: legal/golden.jsonl
    versions:
      v1: {path: legal/v1, status: good}
      v2: {path: legal/v2}
"""
WORKER_STARTED = re.compile(r"evaluation worker started \(pid (\d+)\)")


@pytest.fixture
def world(tmp_path, tiny_models):
    """A copy of the tiny models with a registry of its own (the cache is shared)."""
    shutil.copytree(tiny_models.root, tmp_path / "tiny", symlinks=True)
    return tmp_path / "tiny" / "adapters" / "registry.yaml"


@pytest.fixture
def daemons(tmp_path, broker, topic):
    made: list[AlertingDaemon] = []

    def make(registry: Path) -> AlertingDaemon:
        daemon = AlertingDaemon(tmp_path, broker.bootstrap_servers, topic, semantic=False)
        daemon.configure(f"registry:\n  path: {registry}\n"
                         "eval:\n  device: cpu\n  threads: 1\n  bootstrap_resamples: 1000\n")
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.cleanup()


def write_registry(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)  # a reload never reads half a file


def wait_for(what: str, check, daemon: AlertingDaemon, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        daemon.assert_running()
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout}s; log:\n{daemon.log_tail(60)}")


def worker_pids(daemon: AlertingDaemon) -> list[int]:
    return [int(pid) for pid in WORKER_STARTED.findall(daemon.log_text())]


def golden(daemon: AlertingDaemon, name: str, **labels) -> float | None:
    return daemon.sample(name, domain="legal", **labels)


def test_the_daemon_evaluates_new_versions_and_exports_the_verdicts(daemons, world):
    world.write_text(LEGAL)
    started = time.time()
    daemon = daemons(world).start()
    daemon.wait_ready()

    # Both versions are new to the store: queued at start, evaluated by the worker.
    wait_for("the verdict of legal/v2", lambda: golden(
        daemon, "monitor_golden_regression", version="v2", metric="nll", baseline="v1")
        is not None and golden(daemon, "monitor_golden_score", version="v1", metric="nll"),
        daemon)
    assert golden(daemon, "monitor_golden_regression", version="v2", metric="nll",
                  baseline="v1") == 1
    assert golden(daemon, "monitor_golden_regression", version="v2", metric="exact_match",
                  baseline="v1") == 1
    assert golden(daemon, "monitor_golden_regression", version="v1", metric="nll",
                  baseline="base") == 0
    assert golden(daemon, "monitor_golden_delta", version="v2", metric="nll",
                  baseline="v1") < 0  # higher is better: v2 is worse
    assert daemon.sample("monitor_adapter_active_info", domain="legal", version="v1",
                         kind="lora", base_model="tiny-llama") == 1
    assert golden(daemon, "monitor_eval_last_success_timestamp_seconds") >= started
    assert golden(daemon, "monitor_eval_duration_seconds_count") == 2
    nll = {v: golden(daemon, "monitor_golden_score", version=v, metric="nll")
           for v in ("v1", "v2")}
    assert nll["v1"] < nll["v2"]

    # `monitor adapters list` reads the same verdicts from the state store.
    listing = subprocess.run(
        [sys.executable, "-m", "monitor", "adapters", "list", "--config",
         str(daemon.config_path)], capture_output=True, text=True, timeout=60, check=True,
        cwd=daemon.workdir).stdout
    rows = {tuple(line.split()[:2]): line for line in listing.splitlines()[1:]}
    assert rows[("legal", "v1")].split()[-1] == "pass", listing
    assert rows[("legal", "v2")].split()[-1] == "regressed", listing

    # A worker killed with SIGKILL is restarted by the daemon.
    [first] = worker_pids(daemon)
    os.kill(first, signal.SIGKILL)
    wait_for("a new worker", lambda: len(worker_pids(daemon)) == 2, daemon, timeout=60)
    assert psutil.Process(worker_pids(daemon)[1]).ppid() == daemon.process.pid

    # A version registered while the daemon runs is evaluated after a reload.
    write_registry(world, LEGAL + "      v3: {path: legal/v3}\n")
    daemon.process.send_signal(signal.SIGHUP)
    wait_for("the verdict of legal/v3", lambda: golden(
        daemon, "monitor_golden_score", version="v3", metric="nll"), daemon)
    nll["v3"] = golden(daemon, "monitor_golden_score", version="v3", metric="nll")
    assert nll["v1"] < nll["v3"] < nll["v2"], nll  # the weakened copy lies between
    assert golden(daemon, "monitor_eval_duration_seconds_count") == 3
    assert "Traceback" not in daemon.log_text(), daemon.log_tail(80)

    assert daemon.terminate() == 0
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"]
                and str(daemon.config_path) in " ".join(p.info["cmdline"])]


def test_queued_evaluations_survive_a_kill_9_of_the_whole_daemon(daemons, world):
    text = LEGAL + "      v3: {path: legal/v3}\n" + """\
  support:
    base_model: tiny-llama
    kind: lora
    active: v1
    golden_set: support/golden.jsonl
    versions:
      v1: {path: support/v1, status: good}
      v2: {path: support/v2}
"""
    world.write_text(text)
    daemon = daemons(world).start()
    daemon.wait_ready()
    # Killed as soon as the worker claims its first job: that job is left
    # "running" and the four others queued.
    wait_for("the first evaluation", lambda: "evaluating legal/v1" in daemon.log_text(), daemon)
    daemon.kill9(whole_group=True)
    store = StateStore(f"sqlite:///{daemon.state_path}")
    try:
        left = store.eval_jobs("queued") + store.eval_jobs("running")
        assert len(left) >= 4, store.eval_jobs()

        daemon.start()
        daemon.wait_ready()
        versions = {("legal", "v1"), ("legal", "v2"), ("legal", "v3"),
                    ("support", "v1"), ("support", "v2")}
        wait_for("every version evaluated", lambda: {
            (r["domain"], r["version"]) for r in store.eval_runs()
            if r["status"] == "done"} == versions, daemon, timeout=300)
        assert not store.eval_jobs("queued") and not store.eval_jobs("running")
        runs = [(r["domain"], r["version"]) for r in store.eval_runs()]
        assert sorted(runs) == sorted(versions), runs  # each once: nothing lost or repeated
        verdicts = {(r["domain"], r["version"]): r["verdict"] for r in store.eval_runs()}
        assert verdicts[("legal", "v1")] == verdicts[("support", "v1")] == "pass"
        assert verdicts[("legal", "v2")] == "regressed"
    finally:
        store.close()
    assert daemon.terminate() == 0
