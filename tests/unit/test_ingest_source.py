"""Unit tests of monitor.ingest.source: Message and Run."""

from __future__ import annotations

import dataclasses

import pytest

from monitor.ingest import Message, Run


def test_run_of_messages_keeps_parallel_lists_in_order():
    messages = [Message("logs", 3, 10 + i, f"k{i}".encode(), f"v{i}".encode()) for i in range(4)]

    run = Run.of(messages)

    assert (run.topic, run.partition) == ("logs", 3)
    assert run.offsets == [10, 11, 12, 13]
    assert run.keys == [b"k0", b"k1", b"k2", b"k3"]
    assert run.values == [b"v0", b"v1", b"v2", b"v3"]
    assert len(run) == 4


def test_run_next_offset_is_the_last_offset_plus_one():
    run = Run("logs", 0, [5, 6, 9], [None] * 3, [b""] * 3)

    assert run.next_offset == 10


def test_run_message_rebuilds_one_message():
    messages = [Message("logs", 1, 7, None, b"a"), Message("logs", 1, 8, b"k", None)]

    run = Run.of(messages)

    assert [run.message(i) for i in range(2)] == messages


def test_messages_and_runs_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Message("logs", 0, 0, None, b"").offset = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        Run("logs", 0, [0], [None], [b""]).topic = "x"
