"""Golden sets: the fixed prompts and references an adapter is re-scored on (DESIGN §7).

A golden set is a JSONL file, one item per line:

    {"id": "lease-01", "prompt": "Can my landlord ...", "reference": "Only if ..."}

`load_golden` parses the whole file at the edge into `GoldenItem`s and reports
every bad line at once, each with its line number, so one edit fixes them all.
Blank lines are skipped; keys other than the three above are ignored (room for
metadata). No torch here: the daemon reads golden sets without the eval extra.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as folder:
...     path = Path(folder, "golden.jsonl")
...     _ = path.write_text('{"id": "a", "prompt": "2+2=", "reference": "4"}\\n')
...     load_golden(path)
[GoldenItem(id='a', prompt='2+2=', reference='4')]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from monitor.errors import ConfigError

FIELDS = ("id", "prompt", "reference")


@dataclass(frozen=True)
class GoldenItem:
    """One golden prompt and the reference answer it is scored against."""

    id: str
    prompt: str
    reference: str


class GoldenSetError(ConfigError):
    """A golden set file is invalid; `problems` lists every bad line (`line N: ...`)."""

    def __init__(self, problems: list[str], path: str | Path):
        super().__init__(problems, source=f"golden set {path}")
        self.path = str(path)


def load_golden(path: str | Path) -> list[GoldenItem]:
    """The items of the JSONL golden set at `path`, in file order.

    Raises GoldenSetError listing every problem: a line that is not a JSON
    object, a missing or non-string field, an empty id or reference, an id
    used twice (with the line that used it first), or a file with no items.
    """
    items: list[GoldenItem] = []
    problems: list[str] = []
    first_line_of: dict[str, int] = {}
    raw_lines = Path(path).read_bytes().splitlines()
    for number, raw in enumerate(raw_lines, start=1):
        try:
            item = _parse_line(raw)
        except (ValueError, TypeError) as exc:
            problems.append(f"line {number}: {exc}")
            continue
        if item is None:
            continue
        if item.id in first_line_of:
            problems.append(f"line {number}: duplicate id {item.id!r} "
                            f"(first used on line {first_line_of[item.id]})")
            continue
        first_line_of[item.id] = number
        items.append(item)
    if not items and not problems:
        problems.append("no items: the file is empty")
    if problems:
        raise GoldenSetError(problems, path)
    return items


def _parse_line(raw: bytes) -> GoldenItem | None:
    """One line as an item, None for a blank line; the exception says what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise TypeError(f"expected a JSON object, got {type(obj).__name__}")
    wrong = [f"{key!r} is missing" if key not in obj else
             f"{key!r} must be a string, got {type(obj[key]).__name__}"
             for key in FIELDS if not isinstance(obj.get(key), str)]
    if wrong:
        raise ValueError("; ".join(wrong))
    empty = [f"{key!r} is empty" for key in ("id", "reference") if not obj[key].strip()]
    if empty:
        raise ValueError("; ".join(empty))
    return GoldenItem(id=obj["id"], prompt=obj["prompt"], reference=obj["reference"])
