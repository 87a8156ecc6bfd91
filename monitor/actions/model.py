"""The vocabulary of actions: their kinds, statuses and errors.

An action moves through these statuses (each change is in the audit log):

    pending_approval ──approve──> executing ──> executed | failed
          │                          ▲
          └──reject──> rejected      └── (no approval needed)

`dry_run` and `skipped_cooldown` are final: what would have happened is
recorded, nothing changed. `executing` is short: the registry write and the
transaction that follows it; an action left `executing` by a crash is finished
at the next start (`Executor.recover`).
"""

from __future__ import annotations

import hashlib

from monitor.errors import MonitorError

ROLLBACK, RETRAIN, REEVALUATE, PROMOTE = "rollback", "retrain", "reevaluate", "promote"
# What an alert's `action` label may ask for; promotion is by hand only.
ALERT_ACTIONS = (ROLLBACK, RETRAIN, REEVALUATE)
NOTIFY_ONLY = "alert"  # `action: alert` (the default): notify, do nothing
KINDS = ALERT_ACTIONS + (PROMOTE,)

PENDING_APPROVAL = "pending_approval"
EXECUTING = "executing"
EXECUTED = "executed"
DRY_RUN = "dry_run"
SKIPPED_COOLDOWN = "skipped_cooldown"
REJECTED = "rejected"
FAILED = "failed"
STATUSES = (PENDING_APPROVAL, EXECUTING, EXECUTED, DRY_RUN, SKIPPED_COOLDOWN, REJECTED, FAILED)
FINAL = (EXECUTED, DRY_RUN, SKIPPED_COOLDOWN, REJECTED, FAILED)


class ActionError(MonitorError, ValueError):
    """An action cannot be taken (no version to roll back to, a regressed
    candidate, an unknown or already decided action); the message says why."""

    def __init__(self, message: str, reason: str = "refused"):
        super().__init__(message)
        self.reason = reason


def firing_key(labels: dict[str, str], active_at_ms: int) -> str:
    """Names one firing of one alert (its labels and the time it became active):
    an alert that keeps firing, or fires again after a restart of the daemon
    (the alert state keeps `activeAt`), maps to the same key, so it acts once.

    >>> firing_key({"alertname": "A", "domain": "legal"}, 1000) == \\
    ...     firing_key({"domain": "legal", "alertname": "A"}, 1000)
    True
    """
    text = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(f"{text}\x02{active_at_ms}".encode()).hexdigest()[:64]
