"""The state store: offsets and window state written together, in one transaction."""

from monitor.state.store import SCHEMA_VERSION, StateChanges, StateStore, StoredState

__all__ = ["SCHEMA_VERSION", "StateChanges", "StateStore", "StoredState"]
