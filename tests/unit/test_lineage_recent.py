"""Unit tests of the data a retrain request carries: bucket lineage (event-time
range and per-partition offsets), `window_lineage`, `RecentRecords` and
`write_snapshot`, and their wiring into the pipeline, replay and the daemon."""

from __future__ import annotations

import os
import time

import orjson
import pytest

from monitor.config import Config
from monitor.pipeline import Pipeline
from monitor.records import Record
from monitor.state import StoredState
from monitor.timestamps import rfc3339
from monitor.windows import Bucket
from monitor.windows.lineage import window_lineage
from monitor.windows.recent import RecentRecords, write_snapshot

NO_FLAGS = (False, False, False, False)
BASE = 1_764_359_640.0  # a whole minute (2025-11-28T19:54:00Z)
TOPIC = "inference-logs"


class Clock:
    def __init__(self, now: float = BASE):
        self.now = now

    def __call__(self) -> float:
        return self.now


def raw(domain: str = "legal", t: float = BASE, **fields) -> bytes:
    doc = {"schema_version": 1, "timestamp": round(t * 1000), "domain": domain,
           "input": {"tokens": 10}}
    doc.update(fields)
    return orjson.dumps(doc)


def make_config(snapshot_records: int = 1000, max_domains: int = 1000, **windows) -> Config:
    return Config.model_validate({
        "windows": {"bucket_seconds": 60, "length_seconds": 300, "allowed_lateness_seconds": 60,
                    "max_domains": max_domains, **windows},
        "drift": {"enabled": False},
        "actions": {"retrain": {"snapshot_records": snapshot_records}},
    })


def make_pipeline(clock: Clock | None = None, **kwargs) -> Pipeline:
    return Pipeline(make_config(**kwargs), clock or Clock())


# -- Bucket lineage ----------------------------------------------------------------

def test_bucket_keeps_event_time_range_and_offsets_per_partition():
    bucket = Bucket()
    assert (bucket.first_time, bucket.last_time, bucket.offsets) == (None, None, {})

    for t, partition, offset in [(20.0, 0, 7), (10.0, 0, 9), (30.0, 1, 4), (25.0, 0, 3),
                                 (15.0, 1, 2)]:
        bucket.add(Record(t, "legal"), NO_FLAGS, partition, offset)

    assert (bucket.first_time, bucket.last_time) == (10.0, 30.0)
    assert bucket.offsets == {0: [3, 9], 1: [2, 4]}
    assert bucket.count == 5


def test_bucket_without_offsets_keeps_times_only():
    bucket = Bucket()
    bucket.add(Record(5.0, "legal"), NO_FLAGS)
    bucket.add(Record(6.0, "legal"), NO_FLAGS, partition=None, offset=3)  # no partition: no offset

    assert (bucket.first_time, bucket.last_time, bucket.offsets) == (5.0, 6.0, {})


def test_bucket_merge_takes_min_and_max():
    a, b = Bucket(), Bucket()
    a.add(Record(20.0, "d"), NO_FLAGS, 0, 10)
    a.add(Record(25.0, "d"), NO_FLAGS, 0, 12)
    b.add(Record(15.0, "d"), NO_FLAGS, 0, 11)
    b.add(Record(40.0, "d"), NO_FLAGS, 0, 30)
    b.add(Record(30.0, "d"), NO_FLAGS, 2, 5)

    merged = Bucket()
    merged.merge(a)
    merged.merge(b)
    merged.merge(Bucket())  # an empty bucket changes nothing

    assert (merged.first_time, merged.last_time) == (15.0, 40.0)
    assert merged.offsets == {0: [10, 30], 2: [5, 5]}
    # merge copies the spans: the sources stay as they were
    assert a.offsets == {0: [10, 12]} and b.offsets == {0: [11, 30], 2: [5, 5]}
    a.merge(b)
    assert a.offsets == {0: [10, 30], 2: [5, 5]}
    assert (a.first_time, a.last_time) == (15.0, 40.0)


def test_bucket_lineage_round_trips():
    bucket = Bucket()
    bucket.add(Record(12.5, "d"), NO_FLAGS, 3, 100)
    bucket.add(Record(11.0, "d"), NO_FLAGS, 1, 7)
    bucket.add(Record(13.0, "d"), NO_FLAGS, 3, 140)

    restored = Bucket.from_bytes(bucket.to_bytes())

    assert (restored.first_time, restored.last_time) == (11.0, 13.0)
    assert restored.offsets == {1: [7, 7], 3: [100, 140]}
    empty = Bucket.from_bytes(Bucket().to_bytes())
    assert (empty.first_time, empty.last_time, empty.offsets) == (None, None, {})


def test_bucket_written_without_lineage_loads_and_takes_new_records():
    bucket = Bucket()
    bucket.add(Record(10.0, "d"), NO_FLAGS, 0, 1)
    doc = orjson.loads(bucket.to_bytes())
    for key in ("first_time", "last_time", "offsets"):
        del doc[key]

    old = Bucket.from_bytes(orjson.dumps(doc))

    assert old.count == 1
    assert (old.first_time, old.last_time, old.offsets) == (None, None, {})
    old.add(Record(20.0, "d"), NO_FLAGS, 0, 5)  # lineage covers the records since
    assert (old.count, old.first_time, old.last_time, old.offsets) == (2, 20.0, 20.0, {0: [5, 5]})
    merged = Bucket()
    merged.merge(Bucket.from_bytes(orjson.dumps(doc)))
    assert (merged.count, merged.first_time, merged.offsets) == (1, None, {})


# -- window_lineage through the pipeline ----------------------------------------

def test_window_lineage_of_a_pipeline_fed_with_partitions_and_offsets():
    clock = Clock(BASE + 200)
    pipeline = make_pipeline(clock)
    offsets = {0: 0, 1: 0}
    for i in range(20):  # 10 s apart, legal and support interleaved over two partitions
        partition = i % 2
        domain = "legal" if i % 4 < 2 else "support"
        offset = 100 + offsets[partition]
        assert pipeline.process(raw(domain, BASE + i * 10), partition, offset) is None
        offsets[partition] += 1
    # Rejected records never enter the lineage.
    assert pipeline.process(b"{bad", 0, 500) is not None
    assert pipeline.process(raw("legal", BASE - 3600), 1, 501).reason == "late"

    lineage = window_lineage(pipeline.windows, "legal", TOPIC)

    # legal: i = 0,1,4,5,8,9,12,13,16,17 -> partition 0 offsets 100,102,...,108;
    # partition 1 the same
    assert lineage == {
        "topic": TOPIC,
        "partitions": {"0": {"first_offset": 100, "last_offset": 108},
                       "1": {"first_offset": 100, "last_offset": 108}},
        "event_time": {"start": rfc3339(BASE), "end": rfc3339(BASE + 170)},
        # the domain's own watermark (its last record) ends its window
        "window": {"start": rfc3339(BASE + 170 - 300), "end": rfc3339(BASE + 170)},
        "records": 10,
    }
    support = window_lineage(pipeline.windows, "support", TOPIC)
    assert support["records"] == 10
    assert support["partitions"] == {"0": {"first_offset": 101, "last_offset": 109},
                                     "1": {"first_offset": 101, "last_offset": 109}}
    assert support["event_time"] == {"start": rfc3339(BASE + 20), "end": rfc3339(BASE + 190)}
    assert window_lineage(pipeline.windows, "medical", TOPIC) is None
    orjson.dumps(lineage)  # JSON-able as it is


def test_evicted_buckets_drop_out_of_the_lineage_as_the_window_moves():
    clock = Clock(BASE)
    pipeline = make_pipeline(clock)  # buckets of 60 s, window of 300 s, lateness 60 s
    for minute in range(5):  # offsets 10*minute .. 10*minute+2 in the minute's bucket
        for k in range(3):
            clock.now = BASE + minute * 60 + k * 20
            assert pipeline.process(raw("legal", clock.now), 0, minute * 10 + k) is None

    lineage = window_lineage(pipeline.windows, "legal", TOPIC)
    assert lineage["partitions"] == {"0": {"first_offset": 0, "last_offset": 42}}
    assert lineage["records"] == 15
    assert lineage["event_time"]["start"] == rfc3339(BASE)

    # Time passes without records: the window end follows the clock (minus lateness).
    clock.now = BASE + 60 * 7 + 1  # end = BASE + 361: buckets ending at or before BASE + 61 go
    lineage = window_lineage(pipeline.windows, "legal", TOPIC)
    assert lineage["partitions"] == {"0": {"first_offset": 10, "last_offset": 42}}
    assert lineage["records"] == 12
    assert lineage["event_time"] == {"start": rfc3339(BASE + 60), "end": rfc3339(BASE + 280)}
    assert lineage["window"] == {"start": rfc3339(BASE + 61), "end": rfc3339(BASE + 361)}

    clock.now = BASE + 60 * 9 + 1  # two more buckets go
    lineage = window_lineage(pipeline.windows, "legal", TOPIC)
    assert lineage["partitions"] == {"0": {"first_offset": 30, "last_offset": 42}}
    assert lineage["records"] == 6

    clock.now = BASE + 3600  # everything has left the window
    lineage = window_lineage(pipeline.windows, "legal", TOPIC)
    assert lineage["partitions"] == {} and lineage["records"] == 0
    assert lineage["event_time"] == {"start": None, "end": None}


def test_lineage_survives_the_state_store_round_trip():
    clock = Clock(BASE + 100)
    pipeline = make_pipeline(clock)
    for i in range(6):
        pipeline.process(raw("legal", BASE + i * 15), 4, 1000 + i)
    before = window_lineage(pipeline.windows, "legal", TOPIC)
    changes = pipeline.take_changes({(TOPIC, 4): 1006})

    buckets = {}
    for domain, start, data in changes.buckets:
        buckets.setdefault(domain, {})[start] = data
    stored = StoredState(records_total={"legal": 6}, rejected={}, offsets={},
                         watermarks={"legal": pipeline.windows.domains["legal"].watermark},
                         buckets=buckets, references={})
    again = make_pipeline(clock)
    again.restore(stored)

    assert window_lineage(again.windows, "legal", TOPIC) == before
    assert before["partitions"] == {"4": {"first_offset": 1000, "last_offset": 1005}}
    assert again.recent.records("legal") == []  # recent records are memory only


def test_process_without_offsets_gives_times_but_no_partitions():
    pipeline = make_pipeline(Clock(BASE + 30))
    pipeline.process(raw("legal", BASE + 5))
    pipeline.process(raw("legal", BASE + 25))

    lineage = window_lineage(pipeline.windows, "legal", TOPIC)

    assert lineage["partitions"] == {}
    assert lineage["event_time"] == {"start": rfc3339(BASE + 5), "end": rfc3339(BASE + 25)}
    assert lineage["records"] == 2


# -- RecentRecords ------------------------------------------------------------------

def test_recent_records_keep_the_last_n_per_domain_oldest_first():
    recent = RecentRecords(capacity=3, max_domains=10)
    for i in range(5):
        assert recent.add("legal", float(i), 0, i, b"%d" % i)

    assert recent.records("legal") == [(2.0, 0, 2, b"2"), (3.0, 0, 3, b"3"), (4.0, 0, 4, b"4")]
    assert len(recent) == 3
    assert recent.records("nobody") == []


def test_recent_records_of_other_domains_never_appear():
    recent = RecentRecords(capacity=4, max_domains=10)
    for i in range(40):
        domain = ("legal", "support", "medical")[i % 3]
        recent.add(domain, float(i), i % 2, i, domain.encode())

    for domain in ("legal", "support", "medical"):
        kept = recent.records(domain)
        assert len(kept) == 4
        assert {r[3] for r in kept} == {domain.encode()}
    assert [r[2] for r in recent.records("legal")] == [27, 30, 33, 36, 39][-4:]
    assert sorted(recent.domains) == ["legal", "medical", "support"]


def test_recent_records_filter_by_time_start_exclusive_end_inclusive():
    recent = RecentRecords(capacity=10, max_domains=1)
    for t in (10.0, 20.0, 30.0, 40.0):
        recent.add("legal", t, 0, int(t), b"x")

    def times(**kw):
        return [r[0] for r in recent.records("legal", **kw)]

    assert times(start=20.0) == [30.0, 40.0]
    assert times(end=30.0) == [10.0, 20.0, 30.0]
    assert times(start=10.0, end=30.0) == [20.0, 30.0]
    assert times(start=40.0) == []


def test_recent_records_are_bounded_by_capacity_times_max_domains():
    recent = RecentRecords(capacity=5, max_domains=3)
    for i in range(1000):
        recent.add(f"d{i % 10}", float(i), 0, i, b"x")

    assert len(recent.domains) == 3
    assert len(recent) == 15
    assert not recent.add("d9", 1.0, 0, 1, b"x")  # a fourth domain is not kept
    assert recent.add("d0", 1.0, 0, 1, b"x")


@pytest.mark.parametrize("capacity, max_domains", [(0, 1), (1, 0), (-1, 5)])
def test_recent_records_reject_bad_sizes(capacity, max_domains):
    with pytest.raises(ValueError):
        RecentRecords(capacity, max_domains)


def test_pipeline_keeps_recent_accepted_records_by_reference():
    clock = Clock(BASE + 100)
    pipeline = make_pipeline(clock, snapshot_records=3)
    values = [raw("legal", BASE + i, request_id=f"r{i}") for i in range(5)]
    for offset, value in enumerate(values):
        pipeline.process(value, 2, offset)
    pipeline.process(raw("support", BASE), 1, 77)
    pipeline.process(b"{bad", 2, 99)  # rejected: not kept
    pipeline.process(raw("legal", BASE - 3600), 2, 100)  # late: not kept

    kept = pipeline.recent.records("legal")

    assert pipeline.recent.capacity == 3
    assert pipeline.recent.max_domains == 1000
    assert [(t, p, o) for t, p, o, _ in kept] == [(BASE + 2, 2, 2), (BASE + 3, 2, 3),
                                                  (BASE + 4, 2, 4)]
    assert all(r[3] is values[r[2]] for r in kept)  # the message's own bytes, not a copy
    assert pipeline.recent.records("support") == [(BASE, 1, 77, raw("support", BASE))]


def test_pipeline_recent_records_within_the_window():
    clock = Clock(BASE + 200)
    pipeline = make_pipeline(clock)
    for i in range(30):
        pipeline.process(raw("legal", BASE + i * 10), 0, i)
    summary = pipeline.windows.summary("legal")

    kept = pipeline.recent.records("legal", summary.start, summary.end)

    assert [r[2] for r in kept] == list(range(30))  # window (BASE - 10, BASE + 290]
    clock.now = BASE + 500
    summary = pipeline.windows.summary("legal")
    assert [r[2] for r in pipeline.recent.records("legal", summary.start, summary.end)] == \
        list(range(15, 30))  # window (BASE + 140, BASE + 440]


# -- write_snapshot -----------------------------------------------------------------

def test_write_snapshot_writes_jsonl_and_creates_the_folder(tmp_path):
    records = [(BASE, 0, 1, raw("legal", BASE, request_id="a")),
               (BASE + 1, 0, 2, raw("legal", BASE + 1, request_id="b") + b"\n"),
               (BASE + 2, 0, 3, b'{\n  "pretty": "one\\ntwo"\r\n}\r\n')]
    path = tmp_path / "snapshots" / "legal" / "snap.jsonl"

    assert write_snapshot(path, records) == 3

    data = path.read_bytes()
    lines = data.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4
    docs = [orjson.loads(line) for line in lines[:-1]]
    assert [d.get("request_id") for d in docs[:2]] == ["a", "b"]
    assert docs[2] == {"pretty": "one\ntwo"}
    assert lines[0] == records[0][3]  # written as it is
    assert os.listdir(path.parent) == ["snap.jsonl"]


def test_write_snapshot_takes_raw_bytes_and_replaces_an_old_file(tmp_path):
    path = tmp_path / "snap.jsonl"
    path.write_bytes(b'{"old": true}\n')

    assert write_snapshot(path, [b'{"n": 1}', bytearray(b'{"n": 2}\n')]) == 2

    assert path.read_bytes() == b'{"n": 1}\n{"n": 2}\n'
    assert write_snapshot(path, []) == 0
    assert path.read_bytes() == b""


def test_write_snapshot_leaves_no_temporary_file_and_the_old_file_on_error(tmp_path):
    path = tmp_path / "snap.jsonl"
    path.write_bytes(b'{"old": true}\n')

    def failing():
        yield b'{"n": 1}'
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        write_snapshot(path, failing())

    assert os.listdir(tmp_path) == ["snap.jsonl"]
    assert path.read_bytes() == b'{"old": true}\n'
    with pytest.raises(TypeError):
        write_snapshot(path, [b'{"n": 1}', 42])
    assert os.listdir(tmp_path) == ["snap.jsonl"]


def test_write_snapshot_of_a_pipeline_domain(tmp_path):
    pipeline = make_pipeline(Clock(BASE + 100))
    values = [raw(("legal", "support")[i % 2], BASE + i) for i in range(10)]
    for offset, value in enumerate(values):
        pipeline.process(value, 0, offset)

    count = write_snapshot(tmp_path / "legal.jsonl", pipeline.recent.records("legal"))

    assert count == 5
    assert (tmp_path / "legal.jsonl").read_bytes() == b"".join(v + b"\n" for v in values[::2])


# -- wiring: replay and the daemon --------------------------------------------------

def test_replay_passes_partition_zero_and_the_zero_based_line_number(tmp_path, monkeypatch):
    import monitor.replay as replay_module

    seen = []

    class Recording(Pipeline):
        def process(self, raw, partition=None, offset=None):
            seen.append((partition, offset))
            return super().process(raw, partition, offset)

    monkeypatch.setattr(replay_module, "Pipeline", Recording)
    path = tmp_path / "logs.jsonl"
    path.write_bytes(raw("legal", BASE) + b"\n\n" + raw("legal", BASE + 1) + b"\n{bad\n")

    replay_module.replay(str(path), make_config())

    assert seen == [(0, 0), (0, 2), (0, 3)]


def test_daemon_passes_each_message_partition_and_offset(tmp_path):
    from monitor.ingest.dlq import MemoryDeadLetters
    from monitor.ingest.source import Run
    from tests.unit.test_daemon import FakeSource, Running
    from tests.unit.test_daemon import make_config as daemon_config

    config = daemon_config(tmp_path)
    now = time.time()
    values = [raw("legal", now - 5 + i * 0.1) for i in range(4)]
    # Offsets need not be consecutive (compacted topics, transaction markers).
    runs = [Run(TOPIC, 3, [10, 11, 15, 16], [None] * 4, values),
            Run(TOPIC, 1, [7, 8], [None] * 2, [raw("legal", now - 4), b"{bad"])]
    source = FakeSource([runs], partitions=[(TOPIC, 1), (TOPIC, 3)])

    with Running(config, source, MemoryDeadLetters()) as running:
        running.wait_committed({(TOPIC, 3): 17, (TOPIC, 1): 9})
        lineage = window_lineage(running.daemon.pipeline.windows, "legal", TOPIC)
        recent = running.daemon.pipeline.recent.records("legal")
        running.stop()

    assert lineage["partitions"] == {"1": {"first_offset": 7, "last_offset": 7},
                                     "3": {"first_offset": 10, "last_offset": 16}}
    assert lineage["records"] == 5
    assert sorted((p, o) for _, p, o, _ in recent) == [(1, 7), (3, 10), (3, 11), (3, 15), (3, 16)]
