"""The evaluation worker: golden-set evaluations in a process of their own.

The daemon queues evaluations in the state store (`StateStore.enqueue_eval`:
cron schedules, new registry versions, `monitor eval`); `work()` claims them one
at a time, evaluates (`monitor.eval.run.evaluate_version`), saves the run and
finishes the job. `WorkerProcess` runs `work()` in a spawned child, so a CUDA
crash, an out-of-memory kill or a `kill -9` takes only the worker down: the
daemon's loop calls `ensure_running()`, which restarts it.

Jobs live in the state store, so they survive restarts. A job the worker was
running when the daemon stopped (or was stopped with it) is queued again: by
`WorkerProcess.stop`, and by the daemon's `requeue_running_evals()` at start. A
job the worker was running when it crashed on its own is marked failed, with a
failed run saying so: a job that crashes the worker every time must not crash
it forever (`enqueue_new_versions` skips a version with a failed run; a cron
schedule queues its domain again at the next fire).

Importing this module does not import torch: the engine is imported in the
worker, when the first evaluation needs a model.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable

from monitor.config import Config

_log = logging.getLogger(__name__)

# A worker dying sooner than this after its start counts as a quick death;
# consecutive quick deaths delay the next restart (5 s, 10 s, ... up to 5 min).
QUICK_DEATH_SECONDS = 60.0
MAX_RESTART_DELAY_SECONDS = 300.0
# After the queue or the store fails (database locked, connection lost).
STORE_RETRY_SECONDS = 5.0
# Exit status of a worker whose CUDA context is unusable: restarted at once.
EXIT_CUDA_UNUSABLE = 75
_JOB_ID_BYTES = 64


class _Evaluators:
    """One evaluator per base model path, created on first use, kept across jobs."""

    def __init__(self, factory: Callable, log: logging.Logger):
        self.factory = factory
        self.log = log
        self.by_path: dict[str, object] = {}

    def get(self, base_path) -> object:
        key = str(base_path)
        if key not in self.by_path:
            self.log.info("loading base model %s", key)
            started = time.monotonic()
            self.by_path[key] = self.factory(base_path)
            self.log.info("base model %s loaded in %.1fs", key, time.monotonic() - started)
        return self.by_path[key]

    def drop(self, base_path) -> None:
        evaluator = self.by_path.pop(str(base_path), None)
        if evaluator is not None and hasattr(evaluator, "close"):
            try:
                evaluator.close()
            except Exception as exc:
                self.log.warning("closing the evaluator of %s: %s", base_path, exc)

    def keep_only(self, paths: set[str]) -> None:
        """Close the evaluators of base models the registry no longer names."""
        for key in [k for k in self.by_path if k not in paths]:
            self.log.info("base model %s is no longer in the registry: unloaded", key)
            self.drop(key)

    def close(self) -> None:
        for key in list(self.by_path):
            self.drop(key)


class _Lazy:
    """Stands for the base model's evaluator; creates it on first use, so that a
    refused adapter or a bad golden set costs no model load."""

    def __init__(self, evaluators: _Evaluators, base_path):
        self._evaluators = evaluators
        self._base_path = base_path
        self.used = False

    def __getattr__(self, name):
        self.used = True
        return getattr(self._evaluators.get(self._base_path), name)


def _default_factory(config: Config) -> Callable:
    def factory(base_path):
        from monitor.eval.engine import Evaluator

        return Evaluator(base_path, device=config.eval.device,
                         max_batch_tokens=config.eval.max_batch_tokens,
                         threads=config.eval.threads)

    return factory


def _cuda_unusable(exc: BaseException) -> bool:
    """A CUDA error after which the process's CUDA context cannot be trusted (a
    device-side assert, an illegal access); out of memory is not one."""
    text = f"{exc.__class__.__name__}: {exc}"
    if "out of memory" in text.lower():
        return False
    return any(mark in text for mark in ("CUDA error", "CUBLAS_STATUS", "cuDNN error",
                                         "CUDNN_STATUS", "AcceleratorError"))


def _error_run(job: dict, version: str, error: str, at: float, **extra) -> dict:
    return {"id": uuid.uuid4().hex, "domain": job["domain"], "version": version or "",
            "started_at": at, "finished_at": at, "status": "failed", "verdict": None,
            "doc": {"domain": job["domain"], "version": version or "", "error": error,
                    "reason": "error", "job": job["id"], "job_reason": job.get("reason"),
                    **extra}}


def work(config: Config, registry_path: str, stop, *, poll_seconds: float = 1.0,
         evaluator_factory: Callable | None = None, log: logging.Logger | None = None,
         on_job: Callable[[str | None], None] | None = None) -> int:
    """Claim and run queued evaluations until `stop` (a threading or
    multiprocessing Event) is set; returns the number of jobs done.

    The registry at `registry_path` is read again for every job (when it cannot
    be read, the last one read is used). Every job ends `done` (its run saved)
    or `failed` (a failed run saved: a refused adapter, or the exception, whose
    traceback is logged); an exception never ends the loop, except a CUDA error
    that leaves the process's CUDA context unusable, which ends it early (the
    `WorkerProcess` child then exits for a fresh process). `evaluator_factory(
    base_path)` makes the evaluator of a base model (default: the real
    `Evaluator` with `config.eval`'s device and batch budget); each is made once
    and kept for later jobs. `on_job(job_id)` is told the claimed job, then None.
    """
    return _work(config, registry_path, stop, poll_seconds=poll_seconds,
                 evaluator_factory=evaluator_factory, log=log, on_job=on_job)[0]


def _work(config: Config, registry_path: str, stop, *, poll_seconds: float = 1.0,
          evaluator_factory: Callable | None = None, log: logging.Logger | None = None,
          on_job: Callable[[str | None], None] | None = None) -> tuple[int, bool]:
    """`work`, also saying whether it ended on an unusable CUDA context."""
    from monitor.state import StateStore

    log = log or _log
    store = StateStore(config.state.url)
    evaluators = _Evaluators(evaluator_factory or _default_factory(config), log)
    state = {"registry": None}
    done = 0
    log.info("evaluation worker started (pid %d, state %s)", os.getpid(),
             _redacted(config.state.url))
    try:
        while not stop.is_set():
            try:
                job = store.claim_eval_job()
            except Exception as exc:
                log.error("evaluation queue unavailable, retrying in %.0fs: %s",
                          STORE_RETRY_SECONDS, exc)
                stop.wait(STORE_RETRY_SECONDS)
                continue
            if job is None:
                stop.wait(poll_seconds)
                continue
            if on_job is not None:
                on_job(job["id"])
            try:
                ok, cuda_unusable = _run_job(job, config, registry_path, store, evaluators,
                                             state, log)
            finally:
                if on_job is not None:
                    on_job(None)
            done += ok
            if cuda_unusable:
                log.error("the CUDA context is unusable after that error: the evaluation "
                          "worker stops (a new worker process starts afresh)")
                return done, True
    finally:
        evaluators.close()
        store.close()
        log.info("evaluation worker stopped: %d evaluation(s) done", done)
    return done, False


def _run_job(job: dict, config: Config, registry_path: str, store, evaluators: _Evaluators,
             state: dict, log: logging.Logger) -> tuple[bool, bool]:
    """Evaluate one claimed job and finish it: (done, CUDA context unusable)."""
    from monitor.eval.run import evaluate_version
    from monitor.registry import load_registry

    started = time.time()
    what = f"{job['domain']}/{job['version'] or '(active)'}"
    log.info("evaluating %s (job %s: %s)", what, job["id"], job["reason"])
    version = job["version"]
    base_path = None
    try:
        try:
            state["registry"] = load_registry(registry_path)
            evaluators.keep_only({str(b.path) for b in state["registry"].base_models.values()})
        except Exception as exc:
            if state["registry"] is None:
                raise
            log.error("registry %s not read again, the last one read is used: %s",
                      registry_path, exc)
        registry = state["registry"]
        dom = registry.domains.get(job["domain"])
        if dom is not None:
            version = version or dom.active
            what = f"{job['domain']}/{version or '(no active version)'}"
            base = registry.base_models.get(dom.base_model)
            base_path = base.path if base is not None else None
        evaluator = _Lazy(evaluators, base_path) if base_path is not None else None

        def progress(label: str, step: int, total: int) -> None:
            if label != "done":
                log.info("evaluating %s: scoring %s (%d/%d)", what, label, step + 1, total)

        run = evaluate_version(registry, job["domain"], job["version"], config=config.eval,
                               evaluator=evaluator, progress=progress)
    except Exception as exc:
        log.exception("evaluation of %s failed (job %s)", what, job["id"])
        cuda_unusable = _cuda_unusable(exc)
        if base_path is not None:
            # Its model may be half-way through an adapter session: start afresh.
            evaluators.drop(base_path)
        row = _error_run(job, version, f"{exc.__class__.__name__}: {exc}", started,
                         traceback=traceback.format_exc(limit=20)[-8000:])
        row["finished_at"] = time.time()
        _finish(store, job, row, None, "failed", log)
        return False, cuda_unusable
    status = "done" if run.status == "done" else "failed"
    if status == "done":
        log.info("evaluated %s in %.1fs: %s", what, run.finished_at - run.started_at,
                 run.verdict)
    else:
        log.warning("evaluation of %s failed: %s", what, run.doc.get("error"))
    _finish(store, job, run.row(), run.items, status, log)
    return status == "done", False


def _finish(store, job: dict, row: dict, items, status: str, log: logging.Logger) -> None:
    run_id = row["id"]
    try:
        store.save_eval_run(row, items)
    except Exception:
        log.exception("evaluation run of job %s not saved", job["id"])
        run_id, status = None, "failed"
    try:
        store.finish_eval_job(job["id"], status, run_id)
    except Exception:
        # Left running: queued again when the daemon restarts.
        log.exception("job %s not marked %s", job["id"], status)


def _redacted(url: str) -> str:
    from monitor.state.store import _redact

    return _redact(url)


# -- the worker process ---------------------------------------------------------------
def _child_main(config: Config, registry_path: str, stop, current, log_level: int) -> None:
    # The daemon decides when the worker stops (the event, then SIGTERM): a Ctrl-C
    # sent to the whole process group must not cut an evaluation in half.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from monitor.logs import configure_logging

    configure_logging(log_level)
    _die_with_parent(stop)

    def on_job(job_id: str | None) -> None:
        current.value = (job_id or "").encode()[:_JOB_ID_BYTES - 1]

    _done, cuda_unusable = _work(config, registry_path, stop, on_job=on_job,
                                 log=logging.getLogger(__name__))
    if cuda_unusable:
        os._exit(EXIT_CUDA_UNUSABLE)


def _die_with_parent(stop) -> None:
    """A daemon killed with SIGKILL cannot stop its worker: the worker goes with it
    (Linux: PR_SET_PDEATHSIG), and in any case stops once it finds itself
    orphaned, so no worker outlives its daemon and competes for jobs."""
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # died before prctl took effect
        os._exit(0)

    def watch() -> None:
        while not stop.is_set():
            if os.getppid() != parent:
                _log.error("the daemon (pid %d) is gone: the evaluation worker stops", parent)
                stop.set()
                return
            time.sleep(1.0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class WorkerProcess:
    """The evaluation worker in a child process (spawned: no CUDA state, locks or
    threads inherited from the daemon). Logs go to stderr at the daemon's level."""

    def __init__(self, config: Config, registry_path: str, *, context: str = "spawn"):
        self.config = config
        self.registry_path = str(registry_path)
        self._context = multiprocessing.get_context(context)
        self.process = None
        self._stop = None
        # The job the child is running (its id, b"" between jobs); no lock, so a
        # child killed mid-write cannot leave the parent blocked on it.
        self._current = self._context.RawArray("c", _JOB_ID_BYTES)
        self._started_at = 0.0
        self._died_at: float | None = None
        self._quick_deaths = 0
        self._stopped = False
        self._lock = threading.Lock()
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        if _in_memory(self.config.state.url):
            _log.warning("state store %s is in memory: the evaluation worker has its own, "
                         "and its results never reach the daemon", self.config.state.url)
        with self._lock:
            self._stopped = False
            self._spawn()

    def _spawn(self) -> None:
        self._current.value = b""
        self._stop = self._context.Event()
        level = logging.getLogger().getEffectiveLevel()
        self.process = self._context.Process(
            target=_child_main, name="monitor-eval-worker", daemon=True,
            args=(self.config, self.registry_path, self._stop, self._current, level))
        self.process.start()
        self._started_at = time.monotonic()
        self._died_at = None
        _log.info("evaluation worker started (pid %d)", self.process.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def ensure_running(self) -> bool:
        """Restart the worker if it died (or was never started); True when it
        (re)started it now. A worker that keeps dying soon after its start is
        restarted after a growing delay. Never raises."""
        try:
            with self._lock:
                if self._stopped or self.alive():
                    return False
                now = time.monotonic()
                if self.process is not None and self._died_at is None:
                    self._died_at = now
                    self._on_death(now)
                if self._died_at is not None and now < self._died_at + self._restart_delay():
                    return False
                self._spawn()
                self.restarts += 1
                return True
        except Exception:
            _log.exception("evaluation worker not restarted; retrying later")
            return False

    def _restart_delay(self) -> float:
        if self._quick_deaths <= 1 or self._died_at is None:
            return 0.0
        return min(MAX_RESTART_DELAY_SECONDS, 5.0 * 2 ** (self._quick_deaths - 2))

    def _on_death(self, now: float) -> None:
        process = self.process
        process.join(timeout=1.0)
        code = process.exitcode
        lived = now - self._started_at
        self._quick_deaths = self._quick_deaths + 1 if lived < QUICK_DEATH_SECONDS else 0
        if code == EXIT_CUDA_UNUSABLE:
            self._quick_deaths = 0  # it chose to exit after a CUDA error: restart now
        how = (f"killed by signal {-code} ({_signal_name(-code)})" if code is not None and code < 0
               else f"exit status {code}")
        job_id = self._current.value.decode(errors="replace")
        _log.error("evaluation worker (pid %s) exited after %.0fs: %s%s; restarting it",
                   process.pid, lived, how, f", during job {job_id}" if job_id else "")
        if job_id:
            # Stopped from outside (SIGTERM, SIGINT): not the job's fault, queue it
            # again. Crashed (CUDA, out of memory, SIGKILL...): fail it, with a run.
            external = code is not None and -code in (signal.SIGTERM, signal.SIGINT)
            self._release_job(job_id, requeue=external,
                              error=f"the evaluation worker exited during this job ({how})")
        self._current.value = b""

    def _release_job(self, job_id: str, *, requeue: bool, error: str) -> None:
        from monitor.state import StateStore

        try:
            store = StateStore(self.config.state.url)
        except Exception as exc:
            _log.error("job %s left running (queued again at the next start): %s", job_id, exc)
            return
        try:
            job = next((j for j in store.eval_jobs("running") if j["id"] == job_id), None)
            if job is None:
                return
            if requeue:
                store.finish_eval_job(job_id, "queued", None)
                _log.info("job %s queued again", job_id)
                return
            at = time.time()
            version = job["version"] or self._active_version(job["domain"]) or ""
            row = _error_run(job, version, error, at)
            store.save_eval_run(row)
            store.finish_eval_job(job_id, "failed", row["id"])
            _log.error("job %s (%s/%s) marked failed: %s", job_id, job["domain"],
                       version or "(active)", error)
        except Exception:
            _log.exception("job %s not released", job_id)
        finally:
            store.close()

    def _active_version(self, domain: str) -> str | None:
        try:
            from monitor.registry import load_registry

            dom = load_registry(self.registry_path).domains.get(domain)
            return dom.active if dom is not None else None
        except Exception:
            return None

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to stop (it finishes nothing more: an evaluation in
        progress is cut, its job queued again); terminate, then kill, if it does
        not stop within `timeout` seconds."""
        with self._lock:
            self._stopped = True
            process = self.process
            if process is None:
                return
            if self._stop is not None:
                self._stop.set()
            process.join(timeout=timeout)
            if process.is_alive():
                _log.warning("evaluation worker (pid %d) still busy after %.0fs: terminated",
                             process.pid, timeout)
                process.terminate()
                process.join(timeout=5.0)
            if process.is_alive():
                process.kill()
                process.join(timeout=5.0)
            job_id = self._current.value.decode(errors="replace")
            if job_id and self._died_at is None:
                self._release_job(job_id, requeue=True, error="")
            self._current.value = b""
            _log.info("evaluation worker stopped (exit status %s)", process.exitcode)


def _in_memory(url: str) -> bool:
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # StateStore reports it
        return False
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"
