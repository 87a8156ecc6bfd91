"""What every source hands the pipeline.

A source's `poll()` returns `Run`s: consecutive messages of one partition, in
offset order, kept as parallel lists so that the hot loop touches only the
values; `run.message(i)` builds the full `Message` when one is needed (a
dead letter).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Run:
    topic: str
    partition: int
    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]

    @classmethod
    def of(cls, messages) -> "Run":
        """A run from Message-like objects (all of one partition, in order)."""
        first = messages[0]
        return cls(first.topic, first.partition, [m.offset for m in messages],
                   [m.key for m in messages], [m.value for m in messages])

    def message(self, index: int) -> Message:
        return Message(self.topic, self.partition, self.offsets[index], self.keys[index],
                       self.values[index])

    @property
    def next_offset(self) -> int:
        return self.offsets[-1] + 1

    def __len__(self) -> int:
        return len(self.values)
