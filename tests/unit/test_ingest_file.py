"""Unit tests of monitor.ingest.file.read_jsonl, the replay source."""

from __future__ import annotations

from monitor.ingest.file import read_jsonl


def test_each_non_empty_line_is_one_message_numbered_from_one(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"b": 2}\r\n   \nlast-without-newline')

    batches = list(read_jsonl(path))

    messages = [m for batch in batches for m in batch]
    assert [(m.offset, m.value) for m in messages] == [
        (1, b'{"a": 1}'), (3, b'{"b": 2}'), (5, b"last-without-newline")]
    assert all(m.topic == str(path) and m.partition == 0 and m.key is None for m in messages)


def test_lines_come_in_chunks_of_the_given_size(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"".join(b"%d\n" % i for i in range(25)))

    sizes = [len(batch) for batch in read_jsonl(path, chunk=10)]

    assert sizes == [10, 10, 5]


def test_an_empty_file_yields_nothing(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")

    assert list(read_jsonl(path)) == []


def test_bytes_are_passed_through_undecoded(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"\xff\xfe not utf-8\n")

    assert [m.value for batch in read_jsonl(path) for m in batch] == [b"\xff\xfe not utf-8"]
