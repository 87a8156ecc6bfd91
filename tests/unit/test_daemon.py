"""Unit tests of monitor.daemon.Daemon: the ingest loop with an in-memory source
(no Kafka), MemoryDeadLetters and a SQLite state store in tmp_path."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import orjson
import pytest

from monitor.config import Config
from monitor.daemon import Daemon
from monitor.errors import StateError
from monitor.ingest.dlq import MemoryDeadLetters
from monitor.ingest.source import Message, Run
from monitor.state import StateStore

TOPIC = "inference-logs"


class FakeSource:
    """Stands in for KafkaSource: hands out prepared batches (lists of `Run`s) and
    records what the daemon does with it."""

    def __init__(self, batches=(), partitions=((TOPIC, 0),)):
        self.batches = list(batches)
        self.partitions = list(partitions)
        self.assigned = False
        self.paused = False
        self.events: list[str] = []
        self.commits: list[dict] = []
        self.polls = 0
        self.polls_while_paused = 0
        self.stored: dict | None = None
        self.closed = False
        self._lock = threading.Lock()

    def bind(self, stored_offsets, on_revoked):
        self.stored_offsets = stored_offsets
        self.on_revoked = on_revoked
        return self

    def add(self, *batches):
        with self._lock:
            self.batches.extend(batches)

    def poll(self, timeout_ms):
        self.polls += 1
        if not self.assigned:
            # What KafkaSource does on assignment: ask for the stored offsets.
            self.stored = self.stored_offsets(self.partitions)
            self.assigned = True
        if self.paused:
            self.polls_while_paused += 1
            time.sleep(0.005)
            return []
        with self._lock:
            if self.batches:
                return self.batches.pop(0)
        time.sleep(0.005)
        return []

    def commit(self, offsets):
        self.commits.append(dict(offsets))

    def pause(self):
        self.paused = True
        self.events.append("pause")

    def resume(self):
        self.paused = False
        self.events.append("resume")

    def lag(self):
        return {}

    def close(self):
        self.closed = True
        self.events.append("close")


def record(domain: str, i: int, now: float) -> bytes:
    return orjson.dumps({
        "schema_version": 1, "timestamp": int((now + i * 0.01) * 1000), "domain": domain,
        "input": {"text": "q" * 10, "tokens": 5},
        "output": {"text": "ok", "tokens": 2, "mean_logprob": -0.5},
        "latency_ms": 120.0, "status": "ok",
    })


def messages(partition: int, values: list[bytes], first_offset: int = 0) -> Run:
    """One partition's run of consecutive messages, as a source's poll() returns it."""
    return Run.of([Message(TOPIC, partition, first_offset + i, b"k", v)
                   for i, v in enumerate(values)])


def make_config(tmp_path) -> Config:
    return Config.model_validate({
        "kafka": {"topic": TOPIC},
        "state": {"url": f"sqlite:///{tmp_path}/state.db", "flush_interval_seconds": 0.05},
        "http": {"address": "127.0.0.1:0"},
        # The sentence-embedding model is tested elsewhere; these tests stay free of torch.
        "drift": {"embeddings": {"enabled": False}},
    })


def slow_flush_config(tmp_path) -> Config:
    """A config whose timed flush never comes during a test: only revocations flush."""
    config = make_config(tmp_path)
    return config.model_copy(update={"state": config.state.model_copy(
        update={"flush_interval_seconds": 60})})


class Running:
    """A daemon running in a thread."""

    def __init__(self, config, source, dead_letters, **kwargs):
        self.source = source
        self.dead_letters = dead_letters
        self.daemon = Daemon(config, source_factory=lambda cfg, stored, revoked: source.bind(stored, revoked),
                             dead_letters_factory=lambda cfg: dead_letters, **kwargs)
        self.result: dict = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            self.result["code"] = self.daemon.run()
        except BaseException as exc:  # surfaced by stop()
            self.result["error"] = exc

    def __enter__(self):
        self.thread.start()
        return self

    def wait_for(self, condition, timeout=10.0, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if not self.thread.is_alive():
                raise AssertionError(f"daemon exited while waiting for {what}: {self.result}")
            time.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}")

    def wait_committed(self, offsets, timeout=10.0):
        """Until the source saw a commit of `offsets` (done after the state commit)."""
        self.wait_for(lambda: any(all(c.get(tp) == o for tp, o in offsets.items())
                                  for c in list(self.source.commits)), timeout, f"commit {offsets}")

    def stop(self, timeout=15.0) -> int:
        self.daemon.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "daemon did not stop"
        if "error" in self.result:
            raise self.result["error"]
        return self.result["code"]

    def __exit__(self, *exc):
        if self.thread.is_alive():
            self.daemon.stop()
            self.thread.join(15)
        http = self.daemon.http
        if "error" in self.result and http is not None:  # a crash skips the daemon's own shutdown
            http.shutdown()
            http.server_close()


def load(config):
    store = StateStore(config.state.url)
    try:
        return store.load()
    finally:
        store.close()


# -- the loop --------------------------------------------------------------------------

def test_records_are_processed_and_state_and_offsets_committed(tmp_path):
    config = make_config(tmp_path)
    now = time.time()
    batch_a = [messages(0, [record("legal", i, now) for i in range(5)] + [b"{bad"]),
               messages(1, [record("support", i, now) for i in range(3)])]
    batch_b = [messages(0, [b"[1]", record("legal", 9, now)], first_offset=6)]
    source, dlq = FakeSource([batch_a, batch_b], partitions=[(TOPIC, 0), (TOPIC, 1)]), MemoryDeadLetters()

    with Running(config, source, dlq) as running:
        running.wait_committed({(TOPIC, 0): 8, (TOPIC, 1): 3})
        code = running.stop()

    assert code == 0
    state = load(config)
    assert state.records_total == {"legal": 6, "support": 3}
    assert state.rejected == {"invalid_json": 1, "not_object": 1}
    assert state.offsets == {(TOPIC, 0): 8, (TOPIC, 1): 3}  # last offset + 1
    assert set(state.buckets) == {"legal", "support"}
    assert source.closed


def test_rejected_messages_go_to_the_dead_letters_with_their_reason(tmp_path):
    config = make_config(tmp_path)
    now = time.time()
    batch = [messages(0, [record("legal", 0, now), b"{bad", b"[1]",
                          orjson.dumps({"schema_version": 2, "timestamp": 0, "domain": "x",
                                        "input": {"tokens": 1}})])]
    source, dlq = FakeSource([batch]), MemoryDeadLetters()

    with Running(config, source, dlq) as running:
        running.wait_committed({(TOPIC, 0): 4})
        assert running.stop() == 0

    assert [(m.offset, e.reason) for m, e in dlq.letters] == [
        (1, "invalid_json"), (2, "not_object"), (3, "unsupported_version")]
    assert all(m.topic == TOPIC and m.key == b"k" for m, _ in dlq.letters)
    assert dlq.letters[0][0].value == b"{bad"


def test_stop_without_any_traffic_exits_0(tmp_path):
    config = make_config(tmp_path)
    source = FakeSource()

    with Running(config, source, MemoryDeadLetters()) as running:
        running.wait_for(lambda: source.polls > 2, what="polling")
        assert running.stop() == 0

    assert source.closed
    assert load(config).records_total == {}


def test_records_received_just_before_stop_are_flushed_at_shutdown(tmp_path):
    config = make_config(tmp_path).model_copy(
        update={"state": make_config(tmp_path).state.model_copy(update={"flush_interval_seconds": 60})})
    now = time.time()
    source = FakeSource([[messages(0, [record("legal", i, now) for i in range(4)])]])

    with Running(config, source, MemoryDeadLetters()) as running:
        running.wait_for(lambda: running.daemon.pipeline.records_total.get("legal") == 4,
                         what="records processed")
        assert running.stop() == 0

    state = load(config)
    assert state.records_total == {"legal": 4}
    assert state.offsets == {(TOPIC, 0): 4}


def test_flush_max_records_triggers_a_commit_before_the_interval(tmp_path):
    base = make_config(tmp_path)
    config = base.model_copy(update={"state": base.state.model_copy(
        update={"flush_interval_seconds": 60, "flush_max_records": 3})})
    now = time.time()
    source = FakeSource([[messages(0, [record("legal", i, now) for i in range(3)])]])

    with Running(config, source, MemoryDeadLetters()) as running:
        running.wait_committed({(TOPIC, 0): 3}, timeout=5)
        assert running.stop() == 0


def test_snapshot_is_published_after_a_commit_and_served_over_http(tmp_path):
    config = make_config(tmp_path)
    now = time.time()
    source = FakeSource([[messages(0, [record("legal", i, now) for i in range(2)] + [b"{x"])]])

    with Running(config, source, MemoryDeadLetters()) as running:
        running.wait_committed({(TOPIC, 0): 3})
        snap = running.daemon.holder.get()
        with urllib.request.urlopen(running.daemon.http.url + "/metrics", timeout=5) as response:
            body = response.read().decode()
        with urllib.request.urlopen(running.daemon.http.url + "/-/ready", timeout=5) as response:
            ready_status = response.status
        assert running.stop() == 0

    assert snap.accepted == 2 and snap.rejected == {"invalid_json": 1}
    assert 'monitor_records_total{domain="legal"} 2.0' in body
    assert 'monitor_records_rejected_total{reason="invalid_json"} 1.0' in body
    assert ready_status == 200


def test_not_ready_before_the_state_is_loaded(tmp_path):
    daemon = Daemon(make_config(tmp_path), source_factory=lambda *a: FakeSource(),
                    dead_letters_factory=lambda cfg: MemoryDeadLetters())

    ok, why = daemon.ready()

    assert not ok and "state" in why


def test_http_server_is_shut_down_when_the_daemon_stops(tmp_path):
    config = make_config(tmp_path)
    source = FakeSource()

    with Running(config, source, MemoryDeadLetters()) as running:
        running.wait_for(lambda: source.assigned, what="assignment")
        url = running.daemon.http.url
        assert running.stop() == 0

    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/-/healthy", timeout=2)


# -- restart ---------------------------------------------------------------------------

def test_a_second_daemon_on_the_same_store_resumes_from_the_committed_offsets(tmp_path):
    config = make_config(tmp_path)
    now = time.time()
    first = FakeSource([[messages(0, [record("legal", i, now) for i in range(5)]),
                         messages(1, [record("support", 0, now), b"{bad"], first_offset=10)]],
                       partitions=[(TOPIC, 0), (TOPIC, 1)])
    with Running(config, first, MemoryDeadLetters()) as running:
        running.wait_committed({(TOPIC, 0): 5, (TOPIC, 1): 12})
        assert running.stop() == 0
    assert first.stored == {}  # a fresh store has no offsets

    second = FakeSource([[messages(0, [record("legal", 5 + i, now) for i in range(2)], first_offset=5)]],
                        partitions=[(TOPIC, 0), (TOPIC, 1), (TOPIC, 2)])
    with Running(config, second, MemoryDeadLetters()) as running:
        running.wait_committed({(TOPIC, 0): 7})
        restored = running.daemon.pipeline
        assert running.stop() == 0

    assert second.stored == {(TOPIC, 0): 5, (TOPIC, 1): 12}
    state = load(config)
    assert state.records_total == {"legal": 7, "support": 1}  # counted on, not from zero
    assert state.rejected == {"invalid_json": 1}
    assert state.offsets == {(TOPIC, 0): 7, (TOPIC, 1): 12}
    assert restored.records_total == {"legal": 7, "support": 1}


def test_stored_offsets_of_other_topics_are_not_handed_to_the_source(tmp_path):
    config = make_config(tmp_path)
    store = StateStore(config.state.url)
    from monitor.state import StateChanges
    store.commit(StateChanges(offsets={(TOPIC, 0): 40, ("other-topic", 0): 99}))
    store.close()
    source = FakeSource(partitions=[(TOPIC, 0), ("other-topic", 0)])

    with Running(config, source, MemoryDeadLetters()) as running:
        running.wait_for(lambda: source.assigned, what="assignment")
        assert running.stop() == 0

    assert source.stored == {(TOPIC, 0): 40}


def test_revoking_partitions_persists_the_state_first(tmp_path):
    config = slow_flush_config(tmp_path)
    now = time.time()
    source = FakeSource([[messages(0, [record("legal", i, now) for i in range(3)])]])

    with Running(config, source, MemoryDeadLetters()) as running:
        running.wait_for(lambda: running.daemon.pipeline.records_total.get("legal") == 3,
                         what="records processed")
        # kafka-python calls this from inside poll(); calling it here is close enough,
        # since the loop is idle (flush interval 60 s) and the fake poll takes no lock.
        source.on_revoked([(TOPIC, 0)])
        state = load(config)
        assert running.stop() == 0

    assert state.records_total == {"legal": 3}
    assert state.offsets == {(TOPIC, 0): 3}


# -- backpressure ----------------------------------------------------------------------

def test_failing_state_commits_pause_then_resume_consumption_without_losing_records(
        tmp_path, monkeypatch):
    config = make_config(tmp_path)
    real_commit = StateStore.commit
    calls = {"n": 0}

    def flaky_commit(self, changes):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise StateError("simulated: database is locked")
        return real_commit(self, changes)

    monkeypatch.setattr(StateStore, "commit", flaky_commit)
    now = time.time()
    source = FakeSource([[messages(0, [record("legal", i, now) for i in range(4)] + [b"{bad"])]])
    dlq = MemoryDeadLetters()

    with Running(config, source, dlq) as running:
        running.wait_for(lambda: "pause" in source.events, what="pause")
        # More traffic arrives while paused: it must wait, then go through.
        source.add([messages(0, [record("legal", 10 + i, now) for i in range(3)], first_offset=5)])
        running.wait_for(lambda: "resume" in source.events, timeout=10, what="resume")
        running.wait_committed({(TOPIC, 0): 8})
        assert running.stop() == 0

    assert source.events[:2] == ["pause", "resume"]
    assert source.polls_while_paused > 0  # kept polling to stay in the group
    state = load(config)
    assert state.records_total == {"legal": 7}
    assert state.rejected == {"invalid_json": 1}
    assert state.offsets == {(TOPIC, 0): 8}
    assert [m.offset for m, _ in dlq.letters] == [4]


# -- fatal conditions -----------------------------------------------------------------

def test_a_dead_fetcher_stops_the_daemon_with_1_after_flushing_what_it_processed(tmp_path):
    from monitor.ingest.fetcher import FetcherDied

    config = slow_flush_config(tmp_path)
    now = time.time()

    class DyingSource(FakeSource):
        def poll(self, timeout_ms):
            runs = super().poll(timeout_ms)
            if not runs and not self.batches:
                raise FetcherDied("Kafka fetcher exited (status -9)")
            return runs

    source = DyingSource([[messages(0, [record("legal", i, now) for i in range(3)])]])
    with Running(config, source, MemoryDeadLetters()) as running:
        running.thread.join(10)
        assert not running.thread.is_alive()
        code = running.stop()

    assert code == 1
    assert source.closed
    state = load(config)
    assert state.records_total == {"legal": 3}
    assert state.offsets == {(TOPIC, 0): 3}


def test_failing_to_persist_state_on_revocation_stops_the_daemon_with_1(tmp_path, monkeypatch):
    config = slow_flush_config(tmp_path)
    now = time.time()
    source = FakeSource([[messages(0, [record("legal", i, now) for i in range(3)])]])

    with Running(config, source, MemoryDeadLetters()) as running:
        running.wait_for(lambda: running.daemon.pipeline.records_total.get("legal") == 3,
                         what="records processed")

        def broken_commit(self, changes):
            raise StateError("simulated: disk full")

        monkeypatch.setattr(StateStore, "commit", broken_commit)
        source.on_revoked([(TOPIC, 0)])
        code = running.stop()

    assert code == 1
    monkeypatch.undo()
    state = load(config)
    assert state.records_total == {}   # nothing half-written
    assert state.offsets == {}


# -- regressions -------------------------------------------------------------------------

def test_a_backlog_older_than_the_window_is_ingested_without_crashing(tmp_path):
    config = make_config(tmp_path)
    an_hour_ago = time.time() - 3600
    source = FakeSource([[messages(0, [record("legal", i, an_hour_ago) for i in range(3)])]])

    with Running(config, source, MemoryDeadLetters()) as running:
        running.wait_committed({(TOPIC, 0): 3}, timeout=5)
        code = running.stop()

    assert code == 0
    assert load(config).records_total == {"legal": 3}


class ExplodingDeadLetters(MemoryDeadLetters):
    """A dead-letter sink that fails in the middle of a run."""

    def send(self, message, error):
        raise RuntimeError("producer exploded")


def test_an_error_in_the_middle_of_a_run_commits_nothing_of_that_run(tmp_path):
    config = make_config(tmp_path)
    now = time.time()
    first = messages(0, [record("legal", i, now) for i in range(3)])
    # Good records, a bad one whose dead letter fails, more good records: one run.
    second = messages(0, [record("legal", i, now) for i in range(3, 5)] + [b"{bad"]
                      + [record("legal", i, now) for i in range(5, 9)], first_offset=3)
    source = FakeSource([[first]])

    with Running(config, source, ExplodingDeadLetters()) as running:
        running.wait_committed({(TOPIC, 0): 3})
        source.add([second])
        running.thread.join(10)
        code = running.result.get("code")

    assert code == 1
    stored = load(config)
    # Exactly the first run: neither the 2 good records before the failure nor the failure.
    assert stored.records_total == {"legal": 3}
    assert stored.rejected == {}
    assert stored.offsets == {(TOPIC, 0): 3}
    assert source.closed


class RevokingSource(FakeSource):
    """Revokes partitions from inside poll(), as kafka-python does."""

    revoke: list | None = None

    def poll(self, timeout_ms):
        if self.revoke:
            revoked, self.revoke = self.revoke, None
            self.on_revoked(revoked)
            self.events.append("revoked")
        return super().poll(timeout_ms)


def test_revoked_partitions_are_not_written_again_and_resume_from_the_store(tmp_path):
    config = make_config(tmp_path)
    now = time.time()
    source = RevokingSource([[messages(0, [record("legal", i, now) for i in range(4)])],
                             [messages(1, [record("support", i, now) for i in range(2)])]],
                            partitions=[(TOPIC, 0), (TOPIC, 1)])

    with Running(config, source, MemoryDeadLetters()) as running:
        running.wait_committed({(TOPIC, 0): 4, (TOPIC, 1): 2})
        source.revoke = [(TOPIC, 0)]
        running.wait_for(lambda: "revoked" in source.events, what="the revocation")
        assert (TOPIC, 0) not in running.daemon.offsets
        assert source.stored_offsets([(TOPIC, 0), (TOPIC, 1)]) == {(TOPIC, 0): 4, (TOPIC, 1): 2}
        assert running.stop() == 0


def test_a_version_being_activated_is_not_given_back_its_old_reference(tmp_path):
    # The registry's hook retires a domain's reference; until the new version's
    # reference is built, the one still active in the store must not come back.
    from monitor.state import StateStore
    from monitor.synthetic import Shape, scenario

    config = make_config(tmp_path)
    config = config.model_copy(update={"drift": config.drift.model_copy(
        update={"reference_records": 100})})
    daemon = Daemon(config, clock=lambda: 1_764_000_000.0 + 600)
    daemon.store = StateStore(config.state.url)
    for raw in scenario({"legal": Shape()}, 1_764_000_000.0, 300, rate=1.0):
        daemon.pipeline.process(raw)
    daemon.store.commit(daemon.pipeline.take_changes({}))
    old = daemon.pipeline.drift.references["legal"]

    daemon.pipeline.drift.activate("legal", "v2")
    assert daemon._evaluate_drift()

    assert "legal" not in daemon.pipeline.drift.references
    assert daemon.store.active_reference_ids() == {"legal": old.id}
    daemon.store.close()
