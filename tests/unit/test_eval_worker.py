"""The evaluation worker (job queue -> runs), its process, the cron scheduler and
the queuing of new versions. No real model: a fake evaluator scores real (tiny)
adapters' golden sets, as in test_eval_run."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from monitor.config import Config, EvalConfig, StateConfig
from monitor.eval.schedule import EvalScheduler, cron_trigger, enqueue_new_versions
from monitor.eval.worker import WorkerProcess, work
from monitor.registry import load_registry
from monitor.state import StateStore
from tests.unit.test_eval_run import FakeEvaluator, write_registry


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A registry (legal: v1 active, v2) with real tiny adapters, built once."""
    root = tmp_path_factory.mktemp("registry")
    write_registry(root)
    return root


@pytest.fixture
def config(tmp_path):
    return Config(state=StateConfig(url=f"sqlite:///{tmp_path}/state.db"),
                  eval=EvalConfig(bootstrap_resamples=1000, device="cpu"))


@pytest.fixture
def store(config):
    store = StateStore(config.state.url)
    yield store
    store.close()


class Factory:
    """evaluator_factory: one FakeEvaluator per call, every call recorded."""

    def __init__(self, evaluator_class=FakeEvaluator):
        self.evaluator_class = evaluator_class
        self.calls: list[str] = []
        self.made: list = []

    def __call__(self, base_path):
        self.calls.append(str(base_path))
        self.made.append(self.evaluator_class())
        return self.made[-1]


def run_until_idle(config, registry_path, factory, store, timeout=20.0) -> int:
    """work() in a thread until no job is queued or running, then stopped."""
    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "done", work(config, str(registry_path), stop, poll_seconds=0.05,
                     evaluator_factory=factory)))
    thread.start()
    deadline = time.monotonic() + timeout
    while store.eval_jobs("queued") or store.eval_jobs("running"):
        assert time.monotonic() < deadline, store.eval_jobs()
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the stop event did not end the loop"
    return result["done"]


def test_the_worker_runs_queued_jobs_in_order_and_saves_their_runs(root, config, store):
    store.enqueue_eval("legal", "v2", "new version", at=1.0)
    store.enqueue_eval("medical", None, "schedule 0 3 * * *", at=2.0)  # not in the registry
    store.enqueue_eval("legal", None, "schedule 0 3 * * *", at=3.0)    # the active version
    factory = Factory()
    assert run_until_idle(config, root / "registry.yaml", factory, store) == 2

    jobs = store.eval_jobs()
    assert [(j["domain"], j["version"], j["state"]) for j in jobs] == [
        ("legal", "v2", "done"), ("medical", None, "failed"), ("legal", None, "done")]
    # One base model: loaded once, for both evaluations, in queue order.
    assert factory.calls == [str(root / "base")]
    assert factory.made[0].calls == ["v2", "v1", "base", "v1", "base"]
    assert store.latest_verdicts() == {("legal", "v2"): "regressed", ("legal", "v1"): "pass"}
    runs = {r["id"]: r for r in store.eval_runs()}
    assert {jobs[0]["run_id"], jobs[2]["run_id"]} <= set(runs)
    failed = runs[jobs[1]["run_id"]]
    assert failed["status"] == "failed" and failed["domain"] == "medical"
    assert "no domain 'medical'" in failed["doc"]["error"]
    assert "Traceback" in failed["doc"]["traceback"] and failed["doc"]["job"] == jobs[1]["id"]
    assert len(store.eval_items(jobs[0]["run_id"])["candidate"]) == 60


def test_a_refused_adapter_fails_its_job_without_loading_anything(tmp_path, config, store):
    reg = write_registry(tmp_path / "reg")
    (reg.domains["legal"].versions["v2"].path / "adapter_model.bin").write_bytes(b"x")
    store.enqueue_eval("legal", "v2", "new version", at=1.0)
    factory = Factory()
    assert run_until_idle(config, reg.path, factory, store) == 0
    job, = store.eval_jobs()
    run, = store.eval_runs()
    assert job["state"] == "failed" and job["run_id"] == run["id"]
    assert run["doc"]["reason"] == "pickle" and factory.calls == []


def test_an_exception_fails_the_job_and_the_loop_goes_on(root, config, store):
    failures = ["v2"]

    class Flaky(FakeEvaluator):
        def score_adapter(self, path, items, name="candidate"):
            if name in failures:
                failures.remove(name)
                raise ValueError("tokenizer exploded")
            return super().score_adapter(path, items, name)

    store.enqueue_eval("legal", "v2", "new version", at=1.0)
    store.enqueue_eval("legal", "v1", "new version", at=2.0)
    factory = Factory(Flaky)
    assert run_until_idle(config, root / "registry.yaml", factory, store) == 1
    jobs = store.eval_jobs()
    assert [j["state"] for j in jobs] == ["failed", "done"]
    failed, = store.eval_runs(status="failed")
    assert failed["version"] == "v2" and "tokenizer exploded" in failed["doc"]["error"]
    # The evaluator that failed mid-job is dropped: the next job loads the base afresh.
    assert len(factory.calls) == 2


def test_a_cuda_error_ends_the_worker_for_a_fresh_process(root, config, store):
    class Broken(FakeEvaluator):
        def score_adapter(self, path, items, name="candidate"):
            raise RuntimeError("CUDA error: device-side assert triggered")

    store.enqueue_eval("legal", "v2", "new version", at=1.0)
    store.enqueue_eval("legal", "v1", "new version", at=2.0)
    stop = threading.Event()
    assert work(config, str(root / "registry.yaml"), stop, poll_seconds=0.05,
                evaluator_factory=Factory(Broken)) == 0
    assert not stop.is_set()
    assert [j["state"] for j in store.eval_jobs()] == ["failed", "queued"]


def test_a_registry_that_cannot_be_read_again_leaves_the_last_one_in_use(root, config, store):
    path = root / "registry-copy.yaml"
    path.write_text((root / "registry.yaml").read_text())

    class Corrupting(FakeEvaluator):
        def score_base(self, items):
            path.write_text("domains: [not, a, mapping\n")
            return super().score_base(items)

    store.enqueue_eval("legal", "v2", "new version", at=1.0)
    store.enqueue_eval("legal", "v1", "new version", at=2.0)
    try:
        assert run_until_idle(config, path, Factory(Corrupting), store) == 2
    finally:
        path.unlink()


def test_jobs_survive_a_restart(root, config, store):
    store.enqueue_eval("legal", "v2", "new version", at=1.0)
    store.enqueue_eval("legal", "v1", "new version", at=2.0)
    claimed = store.claim_eval_job()  # a worker that died in the middle of it
    assert claimed["version"] == "v2"
    store.close()

    restarted = StateStore(config.state.url)  # the daemon's next start
    try:
        assert restarted.requeue_running_evals() == 1
        assert run_until_idle(config, root / "registry.yaml", Factory(), restarted) == 2
        assert [(j["version"], j["state"]) for j in restarted.eval_jobs()] == [
            ("v2", "done"), ("v1", "done")]
        assert set(restarted.latest_verdicts()) == {("legal", "v2"), ("legal", "v1")}
    finally:
        restarted.close()


def test_importing_the_worker_and_the_scheduler_does_not_import_torch():
    code = ("import sys, monitor.eval.worker, monitor.eval.schedule; "
            "sys.exit('torch' in sys.modules or 'transformers' in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- the worker process ---------------------------------------------------------
def wait_dead(process, timeout=10.0):
    process.join(timeout)
    assert not process.is_alive()


def test_a_killed_worker_process_is_restarted_and_stops_cleanly(tmp_path, config):
    worker = WorkerProcess(config, str(tmp_path / "no-registry.yaml"))
    worker.start()
    try:
        assert worker.alive()
        first = worker.pid
        os.kill(first, signal.SIGKILL)
        wait_dead(worker.process)
        assert not worker.alive()
        assert worker.ensure_running() is True
        assert worker.alive() and worker.pid != first
        assert worker.ensure_running() is False  # alive: nothing to do
    finally:
        worker.stop(timeout=10)
    assert not worker.alive() and worker.process.exitcode == 0
    assert worker.ensure_running() is False  # stopped on purpose: not restarted


def test_a_job_running_in_a_crashed_worker_fails_and_one_stopped_from_outside_is_requeued(
        tmp_path, config, store, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="monitor.eval.worker")
    crashed = store.enqueue_eval("legal", "v2", "new version", at=1.0)
    store.claim_eval_job()
    worker = WorkerProcess(config, str(tmp_path / "no-registry.yaml"))
    worker.start()
    try:
        worker._current.value = crashed.encode()  # as the child does when it claims a job
        os.kill(worker.pid, signal.SIGKILL)
        wait_dead(worker.process)
        assert worker.ensure_running() is True
        job, = store.eval_jobs()
        assert job["state"] == "failed"
        run, = store.eval_runs()
        assert run["id"] == job["run_id"] and run["status"] == "failed"
        assert run["version"] == "v2" and "SIGKILL" in run["doc"]["error"]

        # A second quick death: the restart waits a little.
        os.kill(worker.pid, signal.SIGKILL)
        wait_dead(worker.process)
        assert worker.ensure_running() is False and not worker.alive()
        # (Claimed while no worker runs, so that no worker takes it first.)
        stopped = store.enqueue_eval("legal", "v1", "new version", at=2.0)
        assert store.claim_eval_job()["id"] == stopped
        worker._died_at -= 60
        assert worker.ensure_running() is True

        # SIGTERM (the whole process group stopped): the job is queued again, and
        # the new worker takes it (and fails it: this registry does not exist).
        worker._current.value = stopped.encode()
        os.kill(worker.pid, signal.SIGTERM)
        wait_dead(worker.process)
        worker._died_at = None
        worker._quick_deaths = 0
        assert worker.ensure_running() is True
        assert f"job {stopped} queued again" in caplog.text
        deadline = time.monotonic() + 15
        while store.eval_jobs("failed")[-1]["id"] != stopped:
            assert time.monotonic() < deadline, store.eval_jobs()
            time.sleep(0.1)
        error = store.eval_runs()[-1]["doc"]["error"]
        assert "no-registry.yaml" in error
    finally:
        worker.stop(timeout=10)
    assert worker.process.exitcode == 0


# -- scheduling ---------------------------------------------------------------
def scheduled_registry(root, schedules: dict[str, str | None], name="scheduled.yaml"):
    domains = "".join(f"""\
  {domain}:
    base_model: tiny-llama
    kind: lora
    active: v1
    golden_set: legal/golden.jsonl
    versions:
      v1: {{path: legal/v1}}
""" + (f'    schedule: "{cron}"\n' if cron else "") for domain, cron in schedules.items())
    path = root / name
    path.write_text(f"base_models:\n  tiny-llama: {{path: {root / 'base'}}}\ndomains:\n{domains}")
    return load_registry(path)


def test_the_scheduler_keeps_one_job_per_scheduled_domain(root, store):
    scheduler = EvalScheduler(store, clock=lambda: 42.0)
    scheduler.apply(scheduled_registry(root, {"legal": "0 3 * * *", "medical": "*/15 * * * *",
                                              "finance": None}))
    assert scheduler.jobs() == {"legal": "0 3 * * *", "medical": "*/15 * * * *"}
    assert sorted(j.id for j in scheduler.scheduler.get_jobs()) == ["eval:legal", "eval:medical"]

    scheduler.apply(scheduled_registry(root, {"legal": "0 3 * * *", "medical": "*/15 * * * *"}))
    assert len(scheduler.scheduler.get_jobs()) == 2  # re-applied: still one job each

    scheduler.apply(scheduled_registry(root, {"legal": "0 4 * * mon"}))
    job, = scheduler.scheduler.get_jobs()
    assert job.id == "eval:legal" and scheduler.jobs() == {"legal": "0 4 * * mon"}
    assert "day_of_week='mon'" in str(job.trigger) and "hour='4'" in str(job.trigger)

    job_id = job.func(*job.args)  # what the trigger does
    queued, = store.eval_jobs("queued")
    assert queued["id"] == job_id
    assert (queued["domain"], queued["version"], queued["reason"], queued["requested_at"]) == (
        "legal", None, "schedule 0 4 * * mon", 42.0)
    assert job.func(*job.args) == job_id  # still queued: not queued twice

    scheduler.start()
    try:
        assert scheduler.scheduler.get_job("eval:legal").next_run_time is not None
        scheduler.apply(None)
        assert scheduler.scheduler.get_jobs() == [] and scheduler.jobs() == {}
    finally:
        scheduler.shutdown()


def test_cron_follows_the_registry_not_apscheduler_3():
    from datetime import UTC, datetime

    def fires(expression, count=4):
        trigger = cron_trigger(expression, timezone="UTC")
        now = datetime(2025, 1, 1, 0, 0, 30, tzinfo=UTC)  # a Wednesday
        previous, out = None, []
        for _ in range(count):
            previous = now = trigger.get_next_fire_time(previous, now)
            out.append(now.strftime("%a %d %H:%M"))
        return out

    assert fires("0 3 * * 0") == fires("0 3 * * 7") == fires("0 3 * * sun") == [
        "Sun 05 03:00", "Sun 12 03:00", "Sun 19 03:00", "Sun 26 03:00"]
    assert fires("0 3 * * 1", 1) == ["Mon 06 03:00"]
    assert fires("0 3 * * */2") == ["Thu 02 03:00", "Sat 04 03:00", "Sun 05 03:00",
                                    "Tue 07 03:00"]
    # Both day fields restricted: either matches.
    assert fires("30 2 15 * mon") == ["Mon 06 02:30", "Mon 13 02:30", "Wed 15 02:30",
                                      "Mon 20 02:30"]
    assert fires("5/20 * * * *", 3) == ["Wed 01 00:05", "Wed 01 00:25", "Wed 01 00:45"]
    with pytest.raises(ValueError):
        cron_trigger("@daily")


def test_new_versions_are_queued_once(root, store):
    path = root / "versions.yaml"
    path.write_text(f"""\
base_models:
  tiny-llama: {{path: {root / 'base'}}}
domains:
  legal:
    base_model: tiny-llama
    kind: lora
    active: v1
    golden_set: legal/golden.jsonl
    versions:
      v1: {{path: legal/v1, status: good}}
      v2: {{path: legal/v2, status: candidate}}
      v0: {{path: legal/v0, status: retired}}
      v3: {{path: legal/v3, status: candidate}}
  medical:
    base_model: tiny-llama
    kind: lora
    active: v1
    golden_set: legal/golden.jsonl
    versions:
      v1: {{path: legal/v1}}
""")
    registry = load_registry(path)
    store.save_eval_run({"id": "r1", "domain": "medical", "version": "v1", "started_at": 1.0,
                         "finished_at": 2.0, "status": "failed", "verdict": None,
                         "doc": {"error": "earlier"}})
    # v0 retired, v3 not copied yet, medical/v1 evaluated already (failed counts).
    assert enqueue_new_versions(store, registry, at=10.0) == [("legal", "v1"), ("legal", "v2")]
    assert [(j["version"], j["reason"]) for j in store.eval_jobs("queued")] == [
        ("v1", "new version"), ("v2", "new version")]
    assert enqueue_new_versions(store, registry, at=11.0) == []
    store.claim_eval_job()  # running: still not queued again
    assert enqueue_new_versions(store, registry, at=12.0) == []
    assert len(store.eval_jobs()) == 2
    assert enqueue_new_versions(store, None, at=13.0) == []

    # A queued evaluation of the active version (a schedule) covers it.
    other = StateStore("sqlite://")
    try:
        other.enqueue_eval("legal", None, "schedule 0 3 * * *", at=1.0)
        assert enqueue_new_versions(other, registry, at=2.0) == [("legal", "v2"),
                                                                 ("medical", "v1")]
    finally:
        other.close()
