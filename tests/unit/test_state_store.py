"""Unit tests of monitor.state.StateStore on a SQLite file."""

from __future__ import annotations

import os
import sqlite3

import pytest

from monitor.errors import StateError
from monitor.state import SCHEMA_VERSION, StateChanges, StateStore, StoredState


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "state.db"


@pytest.fixture
def url(db_path):
    return f"sqlite:///{db_path}"


@pytest.fixture
def store(url):
    store = StateStore(url)
    yield store
    store.close()


def full_changes() -> StateChanges:
    return StateChanges(
        buckets=[("legal", 960, b"bucket-a"), ("legal", 1020, b"bucket-b"), ("support", 960, b"c")],
        dropped_buckets=[],
        domains={"legal": (1075.5, 42), "support": (999.0, 7)},
        rejected={"invalid_json": 3, "late": 1},
        offsets={("logs", 0): 100, ("logs", 1): 55, ("other", 0): 9},
    )


def test_a_new_store_loads_empty(store):
    assert store.load() == StoredState()


def test_a_new_store_records_its_schema_version(store, db_path):
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT value FROM monitor_meta WHERE key = 'schema_version'").fetchall()

    assert rows == [(str(SCHEMA_VERSION),)]


def test_commit_then_load_round_trips_everything(store):
    store.commit(full_changes())

    state = store.load()

    assert state.offsets == {("logs", 0): 100, ("logs", 1): 55, ("other", 0): 9}
    assert state.watermarks == {"legal": 1075.5, "support": 999.0}
    assert state.records_total == {"legal": 42, "support": 7}
    assert state.buckets == {"legal": {960: b"bucket-a", 1020: b"bucket-b"}, "support": {960: b"c"}}
    assert state.rejected == {"invalid_json": 3, "late": 1}


def test_offsets_of_one_topic(store):
    store.commit(full_changes())

    assert store.offsets("logs") == {0: 100, 1: 55}
    assert store.offsets("nothing") == {}


def test_an_empty_commit_changes_nothing(store):
    store.commit(full_changes())

    store.commit(StateChanges())

    assert store.load().records_total == {"legal": 42, "support": 7}


def test_counters_and_offsets_are_absolute_values_not_increments(store):
    store.commit(StateChanges(domains={"legal": (1.0, 5)}, rejected={"late": 5},
                              offsets={("logs", 0): 5}))

    store.commit(StateChanges(domains={"legal": (2.0, 7)}, rejected={"late": 7},
                              offsets={("logs", 0): 7}))
    state = store.load()

    assert state.records_total == {"legal": 7}
    assert state.watermarks == {"legal": 2.0}
    assert state.rejected == {"late": 7}
    assert state.offsets == {("logs", 0): 7}


def test_a_commit_leaves_rows_it_does_not_mention_alone(store):
    store.commit(full_changes())

    store.commit(StateChanges(buckets=[("legal", 960, b"new")], domains={"legal": (2000.0, 43)},
                              offsets={("logs", 0): 101}))
    state = store.load()

    assert state.buckets["legal"] == {960: b"new", 1020: b"bucket-b"}
    assert state.records_total == {"legal": 43, "support": 7}
    assert state.offsets[("logs", 1)] == 55
    assert state.rejected == {"invalid_json": 3, "late": 1}


def test_dropped_buckets_are_deleted(store):
    store.commit(full_changes())

    store.commit(StateChanges(dropped_buckets=[("legal", 960), ("support", 960), ("nobody", 0)]))

    assert store.load().buckets == {"legal": {1020: b"bucket-b"}}


def test_a_bucket_dropped_and_rewritten_in_one_commit_is_kept(store):
    store.commit(full_changes())

    store.commit(StateChanges(buckets=[("legal", 960, b"again")], dropped_buckets=[("legal", 960)]))

    assert store.load().buckets["legal"][960] == b"again"


def test_large_bucket_data_round_trips(store):
    data = os.urandom(256 * 1024)

    store.commit(StateChanges(buckets=[("legal", 0, data)]))

    assert store.load().buckets["legal"][0] == data


def test_state_survives_reopening_the_store(url):
    first = StateStore(url)
    first.commit(full_changes())
    first.close()

    second = StateStore(url)
    try:
        state = second.load()
    finally:
        second.close()

    assert state.records_total == {"legal": 42, "support": 7}
    assert state.offsets[("logs", 0)] == 100
    assert state.buckets["legal"][1020] == b"bucket-b"


def test_a_second_store_on_the_same_file_sees_committed_data(url, store):
    other = StateStore(url)
    try:
        store.commit(full_changes())
        assert other.load().records_total == {"legal": 42, "support": 7}
    finally:
        other.close()


def test_reopening_does_not_reset_the_schema_version(url, db_path):
    StateStore(url).close()
    StateStore(url).close()

    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT value FROM monitor_meta").fetchall()

    assert rows == [(str(SCHEMA_VERSION),)]


def test_a_store_with_a_newer_schema_version_is_refused(url, db_path):
    StateStore(url).close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE monitor_meta SET value = ? WHERE key = 'schema_version'",
                     (str(SCHEMA_VERSION + 1),))

    with pytest.raises(StateError) as info:
        StateStore(url)

    assert "schema version" in str(info.value)
    assert "upgrade" in str(info.value)


def test_a_store_with_the_same_schema_version_opens(url, db_path):
    StateStore(url).close()

    store = StateStore(url)
    store.close()


def test_an_unopenable_database_is_a_state_error(tmp_path):
    with pytest.raises(StateError):
        StateStore(f"sqlite:///{tmp_path}/no/such/dir/state.db")


def test_a_file_that_is_not_a_database_is_a_state_error(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not sqlite" * 100)

    with pytest.raises(StateError):
        StateStore(f"sqlite:///{path}")


def test_commit_failure_raises_state_error(url, db_path, store):
    store.commit(full_changes())
    if os.geteuid() != 0:
        # A read-only file: effective for anyone but root. Closing the pool
        # makes the store reopen the file, read-only now, on the next commit.
        store.engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(f"{db_path}{suffix}"):
                os.chmod(f"{db_path}{suffix}", 0o444)
    else:
        # Root writes read-only files anyway: break the schema instead.
        with sqlite3.connect(db_path) as conn:
            conn.execute("DROP TABLE monitor_offsets")

    with pytest.raises(StateError) as info:
        store.commit(StateChanges(domains={"legal": (2.0, 43)}, offsets={("logs", 0): 101}))

    assert "commit failed" in str(info.value)


def test_a_failed_commit_writes_nothing(url, db_path, store):
    store.commit(full_changes())
    with sqlite3.connect(db_path) as conn:
        conn.execute("DROP TABLE monitor_offsets")

    with pytest.raises(StateError):
        store.commit(StateChanges(buckets=[("legal", 960, b"new")], domains={"legal": (2.0, 43)},
                                  rejected={"late": 9}, offsets={("logs", 0): 101}))

    with sqlite3.connect(db_path) as conn:
        total = conn.execute("SELECT records_total FROM monitor_domains WHERE domain = 'legal'")
        data = conn.execute("SELECT data FROM monitor_window_buckets WHERE domain = 'legal' "
                            "AND start = 960")
        late = conn.execute("SELECT count FROM monitor_rejected WHERE reason = 'late'")
        assert (total.fetchone(), data.fetchone(), late.fetchone()) == ((42,), (b"bucket-a",), (1,))


def test_password_is_redacted_from_state_errors():
    with pytest.raises(StateError) as info:
        StateStore("postgresql+nosuchdriver://user:hunter2@127.0.0.1:1/db")

    assert "hunter2" not in str(info.value)


def test_in_memory_store_round_trips():
    store = StateStore("sqlite://")
    store.commit(StateChanges(domains={"legal": (1.0, 3)}, offsets={("logs", 0): 3}))

    assert store.load().records_total == {"legal": 3}
    store.close()
