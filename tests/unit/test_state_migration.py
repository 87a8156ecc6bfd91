"""Unit tests of the state store's schema migration: version 1 -> 2 (monitor_references)."""

from __future__ import annotations

import sqlite3

import pytest

from monitor.drift.reference import ReferenceBuilder
from monitor.errors import StateError
from monitor.state import SCHEMA_VERSION, StateStore

# The DDL of schema version 1, as SQLAlchemy created it before monitor_references.
V1_DDL = """
CREATE TABLE monitor_meta (
    "key" VARCHAR(64) NOT NULL,
    value VARCHAR(256) NOT NULL,
    PRIMARY KEY ("key")
);
CREATE TABLE monitor_offsets (
    topic VARCHAR(255) NOT NULL,
    partition INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE monitor_domains (
    domain VARCHAR(128) NOT NULL,
    watermark FLOAT NOT NULL,
    records_total BIGINT NOT NULL,
    PRIMARY KEY (domain)
);
CREATE TABLE monitor_window_buckets (
    domain VARCHAR(128) NOT NULL,
    start BIGINT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (domain, start)
);
CREATE TABLE monitor_rejected (
    reason VARCHAR(64) NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (reason)
);
"""
BUCKET = (b'{"count":1,"errors":0,"with_output":0,"refusals":0,"empty":0,"logprob_sum":0.0,'
          b'"logprob_n":0,"feedback_sum":0.0,"feedback_n":0,"latency":[]}')


def create_store(path, version: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_DDL)
        conn.execute("INSERT INTO monitor_meta VALUES ('schema_version', ?)", (str(version),))
        conn.execute("INSERT INTO monitor_offsets VALUES ('logs', 0, 1234)")
        conn.execute("INSERT INTO monitor_domains VALUES ('legal', 1764359649.5, 42)")
        conn.execute("INSERT INTO monitor_window_buckets VALUES ('legal', 1764359640, ?)",
                     (BUCKET,))
        conn.execute("INSERT INTO monitor_rejected VALUES ('invalid_json', 3)")
    conn.close()


def tables(path) -> set[str]:
    with sqlite3.connect(path) as conn:
        found = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    return found


def schema_version(path) -> str:
    with sqlite3.connect(path) as conn:
        (value,) = conn.execute(
            "SELECT value FROM monitor_meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    return value


def a_reference():
    b = ReferenceBuilder("legal", "v1", ("prompt_tokens",), ("finish_reason",), limit=None)
    for i in range(10):
        b.add((float(100 + i),), ("stop",), None, 1764359649.0 + i, key=i / 10)
    return b.build(built_at=1764359700.0, source="test")


@pytest.fixture
def v1_path(tmp_path):
    path = tmp_path / "v1.db"
    create_store(path, 1)
    return path


def test_the_current_schema_version_is_5():
    assert SCHEMA_VERSION == 5


def test_a_version_1_store_opens_and_keeps_its_rows(v1_path):
    store = StateStore(f"sqlite:///{v1_path}")
    try:
        state = store.load()
    finally:
        store.close()

    assert state.offsets == {("logs", 0): 1234}
    assert state.watermarks == {"legal": 1764359649.5}
    assert state.records_total == {"legal": 42}
    assert state.buckets == {"legal": {1764359640: BUCKET}}
    assert state.rejected == {"invalid_json": 3}
    assert state.references == {}


def test_a_version_1_store_gains_the_new_tables_and_reports_version_5(v1_path):
    assert "monitor_references" not in tables(v1_path)

    StateStore(f"sqlite:///{v1_path}").close()

    assert {"monitor_references", "monitor_rule_state", "monitor_eval_runs", "monitor_eval_items",
            "monitor_eval_jobs", "monitor_actions", "monitor_audit",
            "monitor_outbox"} <= set(tables(v1_path))
    assert schema_version(v1_path) == "5"


def test_a_migrated_store_keeps_rule_state(v1_path):
    store = StateStore(f"sqlite:///{v1_path}")
    try:
        assert store.rule_state() is None
        store.save_rule_state({"version": 1, "rules": {}, "groups": {"f;g": 60000}}, 1.0)
        store.save_rule_state({"version": 1, "rules": {}, "groups": {"f;g": 120000}}, 2.0)
        assert store.rule_state() == {"version": 1, "rules": {}, "groups": {"f;g": 120000}}
    finally:
        store.close()


def test_a_migrated_store_stores_references(v1_path):
    store = StateStore(f"sqlite:///{v1_path}")
    reference = a_reference()
    try:
        store.save_reference(reference)
        assert store.load().references == {"legal": reference}
        assert store.active_reference_ids() == {"legal": reference.id}
        assert store.load().records_total == {"legal": 42}
    finally:
        store.close()


def test_migrating_twice_changes_nothing(v1_path):
    StateStore(f"sqlite:///{v1_path}").close()
    store = StateStore(f"sqlite:///{v1_path}")
    try:
        assert store.load().offsets == {("logs", 0): 1234}
    finally:
        store.close()

    assert schema_version(v1_path) == "5"
    with sqlite3.connect(v1_path) as conn:
        assert conn.execute("SELECT count(*) FROM monitor_meta").fetchone() == (1,)
    conn.close()


def test_a_newer_schema_version_is_refused(tmp_path):
    path = tmp_path / "v6.db"
    create_store(path, 6)

    with pytest.raises(StateError, match="schema version 6, newer than this monitor's 5"):
        StateStore(f"sqlite:///{path}")

    assert schema_version(path) == "6"
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT next_offset FROM monitor_offsets").fetchall() == [(1234,)]
    conn.close()


def test_a_refused_newer_store_is_left_untouched(tmp_path):
    path = tmp_path / "v6.db"
    create_store(path, 6)
    before = tables(path)

    with pytest.raises(StateError):
        StateStore(f"sqlite:///{path}")

    assert tables(path) == before
