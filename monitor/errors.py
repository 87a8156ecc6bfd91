"""Errors of the monitor, drawn as a tree:

    MonitorError
    ├── ConfigError (ValueError)     -- a config file or variable is wrong; exit 2
    ├── RecordError (ValueError)     -- one inference log record is rejected (has a `reason`)
    └── StateError (RuntimeError)    -- the state store cannot be read or written
"""

from __future__ import annotations


class MonitorError(Exception):
    """Base of every error the monitor raises on purpose."""


class ConfigError(MonitorError, ValueError):
    """Configuration is invalid; carries every problem found, each with its path."""

    def __init__(self, problems: list[str], source: str = "configuration"):
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} error(s)\n{lines}")


class RecordError(MonitorError, ValueError):
    """A record was rejected; `reason` is one of `monitor.records.REJECT_REASONS`."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class StateError(MonitorError, RuntimeError):
    """The state store is unusable (wrong schema version, unreachable database)."""


def yaml_error_where(exc) -> tuple[str, str]:
    """(" line:col:" or "", the problem) of a PyYAML error, for file: messages."""
    mark = getattr(exc, "problem_mark", None)
    where = f" {mark.line + 1}:{mark.column + 1}:" if mark else ""
    return where, getattr(exc, "problem", None) or str(exc)
