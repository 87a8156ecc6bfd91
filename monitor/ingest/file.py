"""A JSONL file as a record source, for `monitor replay`.

Each non-empty line is one message value; the offset is the line number
(1-based), so errors and dead letters point back at the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from monitor.ingest.source import Message


def read_jsonl(path: str | Path, chunk: int = 5000) -> Iterator[list[Message]]:
    """Yield lists of up to `chunk` messages from the file, in file order."""
    topic = str(path)
    batch: list[Message] = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            batch.append(Message(topic, 0, number, None, line))
            if len(batch) >= chunk:
                yield batch
                batch = []
    if batch:
        yield batch
