"""The daemon: wires Kafka ingest, the pipeline, the state store and HTTP.

This is the only module that connects the parts. The loop:

1. load state and offsets from the store, publish a first snapshot, serve HTTP;
2. poll a batch, run each record through the pipeline, send rejects to the DLQ;
3. every `state.flush_interval_seconds` (or `flush_max_records` records):
   confirm dead letters, commit state + next offsets in one transaction,
   commit offsets to Kafka, evaluate drift when `drift.evaluation_interval_seconds`
   have passed, publish a new snapshot; evaluate the rules when their interval
   has passed (a scrape of our own /metrics into the series store first),
   hand due alerts to delivery, which never blocks this loop, and act on the
   firing alerts that carry an `action` label (monitor.actions: the outbox
   publisher thread announces the changes); re-read the adapter registry when
   it changed, and switch the drift reference of a domain whose active
   version changed;
4. if the store (or the DLQ) refuses a commit, pause the partitions, keep
   polling so the group membership stays alive, retry with backoff, resume;
5. on SIGHUP or `POST /-/reload`: reload the rule files, all or nothing;
6. on SIGTERM: stop polling, flush, commit, close, exit 0.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from kafka.errors import KafkaError

from monitor.config import Config
from monitor.errors import StateError
from monitor.exporter import (ActionCounts, ActiveAdapters, EvalResults, SnapshotHolder,
                              make_registry)
from monitor.http import MonitorHTTPServer
from monitor.query_api import QueryAPI, domains_view
from monitor.ingest.dlq import DeadLetterError
from monitor.ingest.fetcher import FetcherDied, FetcherSource
from monitor.pipeline import Pipeline
from monitor.rules.engine import RuleEngine
from monitor.rules.manager import metric_samples
from monitor.state import StateChanges, StateStore

log = logging.getLogger(__name__)

LAG_INTERVAL_SECONDS = 5.0
PROGRESS_INTERVAL_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 30.0
EVAL_REFRESH_SECONDS = 10.0


class Daemon:
    """`run()` blocks until `stop()`; returns the exit status."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time,
                 source_factory=None, dead_letters_factory=None, rule_paths: list[str] | None = None,
                 registry_path: str | None = None):
        self.config = config
        self.clock = clock
        self._source_factory = source_factory or _kafka_source
        self._dead_letters_factory = dead_letters_factory or _kafka_dead_letters
        self.pipeline = Pipeline(config, clock)
        self.holder = SnapshotHolder()
        self.store: StateStore | None = None
        self.source = None
        self.dead_letters = None
        self.http: MonitorHTTPServer | None = None
        self.offsets: dict[tuple[str, int], int] = {}
        self._unsaved: list[StateChanges] = []
        self._stop = threading.Event()
        self._state_loaded = False
        self._fatal: Exception | None = None
        self._lag: dict = {}
        self._lag_at = 0.0
        self._consistent = True
        self.embedder = None
        self.rules = RuleEngine(config, rule_paths)
        self.registry_path = registry_path or config.registry.path
        # The default registry file may be missing (no registry); one named must exist.
        self._registry_optional = registry_path is None and config.registry.path == \
            "adapters/registry.yaml"
        self.adapters = ActiveAdapters()
        self.evals = EvalResults()
        self._evals_at = 0.0
        self.eval_worker = None
        self.eval_scheduler = None
        self.dispatcher = None
        self.action_service = None  # monitor.actions.service.ActionService, once state is loaded
        self.action_counts = ActionCounts()
        self.publisher = None
        # Active versions the registry changed to, applied by the loop (references follow).
        self._version_changes: dict[str, str] = {}
        self._version_lock = threading.Lock()
        self._registry_stamp = None
        self.metrics_registry = None  # prometheus_client's, for /metrics and rule scrapes
        self._reload_requested = threading.Event()

    # -- lifecycle -----------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def ready(self) -> tuple[bool, str]:
        if not self._state_loaded:
            return False, "Not ready: loading state."
        if self.source is None or not self.source.assigned:
            return False, "Not ready: waiting for a partition assignment from Kafka."
        return True, "Ready."

    def load_registry(self) -> bool:
        """(Re)read the adapter registry; at start a bad one stops the daemon, later
        the previous one stays in use."""
        from pathlib import Path

        from monitor.registry import RegistryError, load_registry

        if self._registry_optional and not Path(self.registry_path).exists():
            return True
        try:
            registry = load_registry(self.registry_path)
        except RegistryError as exc:
            if self.adapters.registry is None and self.dispatcher is None:
                raise
            log.error("adapter registry not reloaded, the previous one stays:\n%s", exc)
            return False
        previous, self.adapters.registry = self.adapters.registry, registry
        self._registry_stamp = _stamp(self.registry_path)
        self._follow_versions(previous, registry)
        log.info("adapter registry %s: %d domain(s)", self.registry_path, len(registry.domains))
        self._schedule_evals()
        return True

    # -- golden-set evaluations (the worker process does them) ------------------
    def _start_evals(self) -> None:
        """Jobs left running by a dead worker go back in the queue; with a registry
        and a shared (file or server) store, start the worker and the schedules."""
        from monitor.eval.schedule import EvalScheduler
        from monitor.eval.worker import WorkerProcess

        requeued = self.store.requeue_running_evals()
        if requeued:
            log.info("%d evaluation job(s) queued again after a restart", requeued)
        in_memory = self.config.state.url in ("sqlite://", "sqlite:///:memory:")
        if self.adapters.registry is None or in_memory:  # a worker could not see the results
            return
        self.eval_scheduler = EvalScheduler(self.store)
        self.eval_scheduler.start()
        self._schedule_evals()
        self.eval_worker = WorkerProcess(self.config, str(self.registry_path))
        self.eval_worker.start()

    # -- actions (monitor/actions) -------------------------------------------------
    def _start_actions(self) -> None:
        """The action service over the store; actions a crash cut short are finished,
        and the outbox publisher starts."""
        from monitor.actions.execute import Executor
        from monitor.actions.publish import Publisher
        from monitor.actions.service import ActionService
        from monitor.actions.store import ActionStore

        actions = ActionStore(self.store)
        self.publisher = Publisher(actions, self.config, clock=self.clock)
        registry = self.registry_path if self.adapters.registry is not None else None
        executor = Executor(actions, self.config, registry, clock=self.clock,
                            on_change=self._on_version_change, publisher=self.publisher)
        executor.recover()
        self.action_service = ActionService(actions, executor, self.config.actions,
                                            clock=self.clock,
                                            retrain_context=self._retrain_context)
        self.action_counts.refresh(actions)
        self.publisher.start()
        if self.config.actions.dry_run:
            log.warning("actions run dry: what they would do is recorded, nothing is changed")

    def _recover_stale_actions(self) -> None:
        """Finish changes a command (`monitor adapters rollback`, an approval) left
        half-done when it died; never stops ingestion."""
        from monitor.actions.commands import STALE_SECONDS

        try:
            self.action_service.executor.recover(older_than=STALE_SECONDS)
        except Exception:
            log.exception("stale actions not recovered; retrying later")

    def _retrain_context(self, domain: str, action_id: str, write: bool) -> dict:
        from monitor.actions.retrain import retrain_context

        return retrain_context(self.pipeline, self.config, self.config.kafka.topic, domain,
                               action_id, write)

    def _act(self) -> None:
        """Actions for this rule round's firing alerts (never stops ingestion)."""
        if self.action_service is None:
            return
        try:
            if self.action_service.on_alerts(self.rules.firing()):
                self.action_counts.refresh(self.action_service.actions)
        except Exception:
            log.exception("actions not taken this round; ingestion goes on")

    def _on_version_change(self, domain: str, old: str | None, new: str) -> None:
        """An action changed a domain's active version (any thread): the loop
        re-reads the registry."""
        with self._version_lock:
            self._version_changes[domain] = new

    def _follow_versions(self, previous, registry) -> None:
        """Domains whose active version changed since the last registry read get the
        reference of their new version (drift is measured against what is served)."""
        drift = self.pipeline.drift
        if drift is None:
            return
        for domain, dom in registry.domains.items():
            if not dom.active:
                continue
            if previous is None:
                drift.versions.setdefault(domain, dom.active)  # tags the first reference
                continue
            before = previous.domains.get(domain)
            if before is not None and before.active != dom.active:
                with self._version_lock:
                    self._version_changes[domain] = dom.active

    def _apply_version_changes(self) -> None:
        """In the loop: re-read a registry an action or a person changed; switch the
        references of domains whose active version changed."""
        with self._version_lock:
            pending = bool(self._version_changes)
        stamp = _stamp(self.registry_path)
        if pending or stamp != self._registry_stamp:
            self._registry_stamp = stamp  # a bad file is reported once, not every turn
            if self.adapters.registry is not None or pending:
                log.info("adapter registry %s changed: reading it again", self.registry_path)
                self.load_registry()
        with self._version_lock:
            changes, self._version_changes = self._version_changes, {}
        drift = self.pipeline.drift
        if drift is None or self.store is None:
            return
        for domain, version in changes.items():
            if drift.versions.get(domain) == version:
                continue
            stored = self.store.references(domain).get((domain, version))
            drift.activate(domain, version, stored)
            if stored is not None:
                self.store.save_reference(stored)
                log.info("domain %s: version %s is active; drift is measured against its "
                         "reference %s (%d records)", domain, version, stored.id, stored.count)
            else:
                log.info("domain %s: version %s is active; its reference is built from its "
                         "next %d records", domain, version, self.config.drift.reference_records)

    def _schedule_evals(self) -> None:
        """Cron schedules of the registry; new versions queued for evaluation."""
        from monitor.eval.schedule import enqueue_new_versions

        registry = self.adapters.registry
        if self.eval_scheduler is None or registry is None:
            return
        self.eval_scheduler.apply(registry)
        queued = enqueue_new_versions(self.store, registry, self.clock())
        for domain, version in queued:
            log.info("domain %s: new version %s queued for golden-set evaluation", domain, version)

    def reload(self) -> tuple[bool, list[str]]:
        """Reload the rule files and the adapter registry, each all or nothing
        (`POST /-/reload`; SIGHUP does the same at the loop's next turn)."""
        ok, errors = self.rules.reload()
        if not self.load_registry():
            ok, errors = False, errors + [f"{self.registry_path}: not reloaded (see the log)"]
        return ok, errors

    def request_reload(self) -> None:
        """Reload the rule files at the loop's next turn (safe from a signal handler)."""
        self._reload_requested.set()

    def load_rules(self) -> None:
        """The first load: a bad rule file stops the start (there are no old rules to keep)."""
        from monitor.errors import ConfigError
        from monitor.alerts.delivery import Dispatcher

        ok, errors = self.rules.reload()
        if not ok:
            raise ConfigError(errors, "rule files")
        self.load_registry()
        self.dispatcher = Dispatcher(self.config.alerting, clock=self.clock,
                                     external_url=self.rules.manager.external_url)

    def start_http(self) -> MonitorHTTPServer:
        http = self.config.http
        if self.dispatcher is None:
            self.load_rules()
        self.metrics_registry = make_registry(self.holder, self.rules, self.dispatcher,
                                              self.adapters, self.evals, self.action_counts)
        token = http.api_token.get_secret_value() if http.api_token is not None else None
        self.http = MonitorHTTPServer(
            http.host, http.port, self.metrics_registry, self.ready, reload=self.reload,
            alerts=self.rules.active_alerts, token=token, actions=lambda: self.action_service,
            domains=lambda: domains_view(self.adapters.registry, self.store.latest_eval_runs()
                                         if self.store is not None else ()),
            query=QueryAPI(self.rules, clock=self.clock))
        self.http.start()
        log.info("serving /metrics on %s/metrics", self.http.url)
        return self.http

    def run(self) -> int:
        """Load state, consume until stopped, shut down; 0 on a clean stop, 1 on a fatal error.
        A state store that cannot be opened raises `StateError` (after cleaning up)."""
        try:
            self._start()
            self._loop()
        except FetcherDied as exc:
            log.error("%s; stopping (a restart resumes from the stored offsets)", exc)
            self._fatal = exc
        except StateError:
            raise
        except KafkaError as exc:
            log.error("Kafka at %s: %s", ",".join(self.config.kafka.bootstrap_servers), exc)
            self._fatal = exc
        except Exception as exc:
            log.exception("unexpected error; stopping without committing the batch in progress")
            self._fatal = exc
        finally:
            self._shutdown()
        return 1 if self._fatal else 0

    def _start(self) -> None:
        self.store = StateStore(self.config.state.url)
        self._load_embedder()
        stored = self.store.load()
        self.pipeline.restore(stored)
        topic = self.config.kafka.topic
        self.offsets = {tp: o for tp, o in stored.offsets.items() if tp[0] == topic}
        self.holder.publish(self.pipeline.snapshot())
        if self.dispatcher is None:
            self.load_rules()
        restored = self.rules.manager.restore(self.store.rule_state())
        if restored:
            log.info("restored %d alert(s) from the state store", restored)
        self.dispatcher.start()
        self._start_evals()
        self._start_actions()
        self._state_loaded = True
        log.info("state loaded: %d domain(s), %d partition offset(s)",
                 len(stored.records_total), len(self.offsets))
        if self.http is None:
            self.start_http()
        self.dead_letters = self._dead_letters_factory(self.config)
        self.source = self._source_factory(self.config, self._stored_offsets, self._on_revoked)

    # -- the loop ------------------------------------------------------------
    def _loop(self) -> None:
        cfg = self.config.state
        process = self.pipeline.process
        send_dead_letter = self.dead_letters.send
        next_flush = time.monotonic() + cfg.flush_interval_seconds
        backoff = 0.0
        unflushed = 0
        progress = _Progress(self.pipeline)
        while not self._stop.is_set() and self._fatal is None:
            for run in self.source.poll(timeout_ms=200):
                # Until the run's offset is recorded, memory is ahead of the offsets:
                # nothing may be committed if an exception escapes from here.
                self._consistent = False
                partition = run.partition
                for index, (value, offset) in enumerate(zip(run.values, run.offsets)):
                    error = process(value, partition, offset)
                    if error is not None:
                        send_dead_letter(run.message(index), error)
                self.offsets[(run.topic, run.partition)] = run.next_offset
                self._consistent = True
                unflushed += len(run)
            now = time.monotonic()
            if unflushed >= cfg.flush_max_records or now >= next_flush:
                if self._try_flush():
                    backoff = 0.0
                    next_flush = now + cfg.flush_interval_seconds
                    unflushed = 0
                else:
                    backoff = min(MAX_BACKOFF_SECONDS, max(0.5, backoff * 2))
                    next_flush = now + backoff
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                self.reload()
            progress.maybe_log(self._lag)

    def _try_flush(self) -> bool:
        try:
            self._flush()
        except (StateError, DeadLetterError) as exc:
            if not self.source.paused:
                log.error("state commit failed, pausing consumption until it succeeds: %s", exc)
                self.source.pause()
            return False
        if self.source.paused:
            log.info("state commit succeeded again, resuming consumption")
            self.source.resume()
        return True

    def _flush(self, in_rebalance: bool = False) -> None:
        if not self._consistent:
            raise StateError("a batch was interrupted half-way; its state is not committed")
        self._unsaved.append(self.pipeline.take_changes(self.offsets))
        # Dead letters first: a rejected record is in the DLQ before its offset is committed.
        self.dead_letters.flush()
        while self._unsaved:
            self.store.commit(self._unsaved[0])
            self._unsaved.pop(0)
        if in_rebalance:
            # Called on kafka-python's IO thread, which must not block on the
            # consumer; the store already holds the offsets that matter.
            return
        self.source.commit(self.offsets)
        if time.monotonic() - self._lag_at >= LAG_INTERVAL_SECONDS:
            self._lag = self.source.lag()
            self._lag_at = time.monotonic()
        self.holder.publish(self.pipeline.snapshot(self._lag))
        if self._evaluate_drift():
            self.holder.publish(self.pipeline.snapshot(self._lag))
        if time.monotonic() - self._evals_at >= EVAL_REFRESH_SECONDS:
            # Results written by `monitor eval` or the eval worker, into the same store.
            self.evals.refresh(self.store)
            self._evals_at = time.monotonic()
            if self.eval_worker is not None:
                self.eval_worker.ensure_running()
            if self.action_service is not None:
                self._recover_stale_actions()
                self.action_counts.refresh(self.action_service.actions)
        self._apply_version_changes()
        self._evaluate_rules()

    def _evaluate_rules(self) -> None:
        """One rule round when due: scrape our own metrics, evaluate, deliver, save."""
        now = self.clock()
        if not self.rules.due(now) or self.metrics_registry is None:
            return
        try:
            notifications = self.rules.tick(now, metric_samples(self.metrics_registry))
        except Exception:  # alerting must never stop ingestion
            log.exception("rule evaluation round failed; ingestion goes on")
            return
        if notifications:
            self.dispatcher.send(notifications)
        self._act()
        try:
            self.store.save_rule_state(self.rules.manager.state_doc(), now)
        except StateError as exc:
            log.warning("alert state not saved (a restart may restart `for:` timers): %s", exc)

    def _load_embedder(self) -> None:
        drift = self.config.drift
        if not (drift.enabled and drift.embeddings.enabled) or self.pipeline.drift is None:
            return
        from monitor.features.embeddings import BackgroundEmbedder, load_embedder

        embedder = load_embedder(batch_size=drift.embeddings.batch_size,
                                 threads=drift.embeddings.threads)
        if embedder is not None:
            self.embedder = BackgroundEmbedder(embedder, drift.embeddings.batch_size)
            # Sketch layouts depend on whether texts are kept: rebuild the tracker.
            self.pipeline.set_embedder(self.embedder)
            log.info("semantic drift is on (all-MiniLM-L6-v2 on the CPU, %d thread(s))",
                     drift.embeddings.threads)

    def _evaluate_drift(self) -> bool:
        """Evaluate when due (True when it did); first pick up references built by
        `monitor reference build`."""
        pipeline = self.pipeline
        if pipeline.drift is None:
            return False
        last = pipeline.drift.last
        now = self.clock()
        if last is not None and now - last.at < self.config.drift.evaluation_interval_seconds:
            return False
        # Right after a commit the store holds every reference the pipeline built,
        # so an active reference that differs was written by someone else.
        for domain, ref_id in self.store.active_reference_ids().items():
            current = pipeline.drift.references.get(domain)
            builder = pipeline.drift.builders.get(domain)
            if builder is not None and builder.replaces == ref_id:
                continue  # a new version's reference is being built to replace that one
            if current is None or current.id != ref_id:
                reference = self.store.references(domain, active_only=True).get(domain)
                if reference is not None:
                    pipeline.drift.use(reference)
                    log.info("domain %s: using reference %s (version %s, %d records, %s)",
                             domain, reference.id, reference.version or "-", reference.count,
                             reference.source)
        started = time.monotonic()
        evaluation = pipeline.maybe_evaluate(now)
        if evaluation is not None:
            took = time.monotonic() - started
            detected = [f"{d.domain}/{d.feature}" for d in evaluation.decisions if d.detected]
            log.log(logging.INFO if detected else logging.DEBUG,
                    "drift evaluated in %.2fs: %d test(s), drift in %s", took, evaluation.tests,
                    ", ".join(detected) or "none")
        return evaluation is not None

    # -- rebalance callbacks (called from inside poll) -----------------------
    def _stored_offsets(self, partitions) -> dict[tuple[str, int], int]:
        """Offsets to resume from: the store's, which match the state just committed."""
        wanted = set(partitions)
        topic = self.config.kafka.topic
        return {(topic, p): o for p, o in self.store.offsets(topic).items() if (topic, p) in wanted}

    def _on_revoked(self, partitions) -> None:
        try:
            self._flush(in_rebalance=True)
            # Whoever gets these partitions next resumes from the store; this
            # process must not write their offsets again.
            for tp in partitions:
                self.offsets.pop(tuple(tp), None)
        except (StateError, DeadLetterError) as exc:
            # The in-memory state is ahead of the store; re-reading the partitions
            # from the stored offsets would count records twice. Exit instead: a
            # restart reloads state and offsets that agree.
            log.critical("cannot persist state before giving up partitions: %s", exc)
            self._fatal = exc
            self._stop.set()

    def _shutdown(self) -> None:
        committable = self._consistent and not isinstance(self._fatal, (StateError, DeadLetterError))
        if self.source is not None and committable:
            for attempt in range(3):
                if self._try_flush():
                    break
                time.sleep(1.0 + attempt)
            else:
                log.error("could not flush state at shutdown; unflushed records will be re-read")
        # Each step on its own: one failing must not leave the others undone.
        steps = []
        if self.source is not None:
            steps.append(("source", self.source.close))
        if self.dead_letters is not None and hasattr(self.dead_letters, "close"):
            steps.append(("dead letters", self.dead_letters.close))
        if self.http is not None:
            steps += [("http", self.http.shutdown), ("http", self.http.server_close)]
        if self.dispatcher is not None:
            steps.append(("alert delivery", self.dispatcher.close))
        if self.publisher is not None:
            steps.append(("outbox publisher", self.publisher.close))
        if self.eval_scheduler is not None:
            steps.append(("eval scheduler", self.eval_scheduler.shutdown))
        if self.eval_worker is not None:
            steps.append(("eval worker", self.eval_worker.stop))
        if self.store is not None:
            steps.append(("state store", self.store.close))
        if self.embedder is not None:
            steps.append(("embedder", self.embedder.close))
        for name, step in steps:
            try:
                step()
            except Exception as exc:
                log.warning("closing %s: %s", name, exc)
        log.info("stopped")


class _Progress:
    """Logs throughput every PROGRESS_INTERVAL_SECONDS while records flow."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.at = time.monotonic()
        self.seen = self._seen()

    def _seen(self) -> int:
        return sum(self.pipeline.records_total.values()) + sum(self.pipeline.rejected.values())

    def maybe_log(self, lag: dict) -> None:
        now = time.monotonic()
        if now - self.at < PROGRESS_INTERVAL_SECONDS:
            return
        seen = self._seen()
        if seen != self.seen:
            log.info("processed %d records (%.0f/s); accepted %d, rejected %d; lag %d",
                     seen - self.seen, (seen - self.seen) / (now - self.at),
                     sum(self.pipeline.records_total.values()), sum(self.pipeline.rejected.values()),
                     sum(lag.values()))
        self.at, self.seen = now, seen


def _stamp(path) -> tuple | None:
    """What tells a rewritten file (an atomic rename changes the inode)."""
    import os

    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _kafka_source(config: Config, stored_offsets, on_revoked):
    if config.kafka.fetcher == "process":
        return FetcherSource(config.kafka, stored_offsets, on_revoked,
                             log_level=logging.getLogger().getEffectiveLevel())
    from monitor.ingest.kafka import KafkaSource

    return KafkaSource(config.kafka, stored_offsets, on_revoked)


def _kafka_dead_letters(config: Config):
    from monitor.ingest.dlq import KafkaDeadLetters
    from monitor.ingest.kafka import ensure_topic, make_dead_letter_producer

    topic = config.kafka.dead_letter_topic
    if config.kafka.create_dlq_topic:
        ensure_topic(config.kafka, topic)
    return KafkaDeadLetters(make_dead_letter_producer(config.kafka, config.records.max_bytes), topic)
