"""Deciding about actions: from firing alerts, the command line and the HTTP API.

An alert acts when its labels carry `action` (rollback, retrain, reevaluate)
and `domain`. For each firing (its labels and the time it became active) the
service decides once, in this order:

1. an action of the same kind on the same domain executed (or dry-ran) within
   `actions.cooldown_seconds`, or one awaits approval: `skipped_cooldown`;
2. the alert's `approval: required` label: `pending_approval`, until someone
   approves (`monitor actions approve ID`, `POST /api/v1/actions/ID/approve`)
   or rejects it;
3. dry-run mode (`actions.dry_run`, `monitor run --dry-run`): `dry_run`, with
   what it would have done (the rollback's from and to);
4. otherwise it executes (see monitor.actions.execute).

Requests by hand (`monitor adapters rollback|promote`) skip the cooldown and
the approval: a person asked. Every decision is in the audit log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
import uuid
from pathlib import Path

from monitor.actions import model as m
from monitor.actions.model import ActionError, firing_key
from monitor.timestamps import rfc3339

log = logging.getLogger(__name__)


class ActionService:
    def __init__(self, actions, executor, config, *, clock: Callable[[], float] = time.time,
                 dry_run: bool | None = None,
                 retrain_context: Callable[[str, str, bool], dict] | None = None):
        """`config` is the `actions` section; `dry_run` overrides its `dry_run`.
        `retrain_context(domain, action_id, write_snapshot)` gives a retrain
        request's statistics, lineage and snapshot."""
        self.actions = actions
        self.executor = executor
        self.config = config
        self.clock = clock
        self.dry_run = config.dry_run if dry_run is None else dry_run
        self.retrain_context = retrain_context
        self._seen: set[str] = set()
        self._warned: set[tuple[str, str]] = set()

    # -- alerts ---------------------------------------------------------------------
    def on_alerts(self, firing) -> list[dict]:
        """Act on a rule round's firing alerts ((rule state, Alert) pairs); returns
        the actions decided now (each firing once, ever)."""
        decided = []
        if not self.config.enabled:
            return decided
        for _rule, alert in firing:
            if alert.state != "firing":
                continue
            labels = dict(alert.labels)
            kind = labels.get("action")
            if not kind or kind == m.NOTIFY_ONLY:
                continue
            key = firing_key(labels, alert.active_at)
            if key in self._seen:
                continue
            name = labels.get("alertname", "?")
            domain = labels.get("domain")
            if kind not in m.ALERT_ACTIONS or not domain:
                self._seen.add(key)
                self._warn_once(name, f"alert {name} asks for action {kind!r}"
                                + ("" if domain else " without a `domain` label")
                                + f": ignored (actions: {', '.join(m.ALERT_ACTIONS)}; "
                                "the alert needs a domain label)")
                continue
            reason = {"alert": {"alertname": name, "labels": labels, "value": alert.value,
                                "active_at": rfc3339(alert.active_at / 1000),
                                "fired_at": rfc3339(alert.fired_at / 1000)
                                if alert.fired_at else None}}
            try:
                action, new = self.request(domain, kind, actor=f"rule:{name}", reason=reason,
                                           key=key, by_alert=True,
                                           approval=labels.get("approval") == "required")
            except ActionError:  # failed, audited and logged
                self._seen.add(key)
                failed = self.actions.by_key(key)
                if failed is not None:
                    decided.append(failed)
                continue
            except Exception:  # not decided (a store that is busy...): the next round retries
                log.exception("action %s on %s for alert %s not taken; retried next round",
                              kind, domain, name)
                continue
            self._seen.add(key)
            if new:
                decided.append(action)
        return decided

    def _warn_once(self, name: str, message: str) -> None:
        if (name, message) not in self._warned:
            self._warned.add((name, message))
            log.warning(message)

    # -- requests ---------------------------------------------------------------------
    def request(self, domain: str, kind: str, *, actor: str, reason: dict | None = None,
                params: dict | None = None, key: str | None = None, by_alert: bool = False,
                approval: bool = False, dry_run: bool | None = None) -> tuple[dict, bool]:
        """Decide and record one action; returns (action as stored, new). With a
        `key` already decided, returns that decision and False."""
        if kind not in m.KINDS:
            raise ActionError(f"unknown action {kind!r} (one of {', '.join(m.KINDS)})")
        if key is not None:
            existing = self.actions.by_key(key)
            if existing is not None:
                return existing, False
        now = self.clock()
        dry_run = self.dry_run if dry_run is None else dry_run
        doc = {"reason": reason or {}, "params": params or {}}
        if dry_run:
            doc["dry_run"] = True  # an approval later, from any process, stays a dry run
        # An alert's action is named by its firing: the same in every replay of a file.
        action_id = key[:32] if key is not None else uuid.uuid4().hex
        status = m.EXECUTING
        why = None
        if by_alert:
            why = self._cooling(domain, kind, now)
            if why is not None:
                status = m.SKIPPED_COOLDOWN
                doc["skipped"] = why
            elif approval:
                status = m.PENDING_APPROVAL
        if status == m.EXECUTING and dry_run:
            status = m.DRY_RUN
        if kind == m.RETRAIN and status != m.SKIPPED_COOLDOWN:
            if self.retrain_context is None:
                raise ActionError("retrain requests need the daemon's windows (monitor run)",
                                  "no_context")
            doc["request"] = self._retrain_request(domain, action_id, actor, doc["reason"],
                                                   write_snapshot=not dry_run)
        if status == m.DRY_RUN and kind in (m.ROLLBACK, m.PROMOTE):
            try:
                doc["plan"] = self.executor.dry_plan({"domain": domain, "action": kind,
                                                     "doc": doc})
            except ActionError as exc:
                doc["error"] = str(exc)
        audit = {"actor": actor, "why": doc["reason"], "params": doc["params"]}
        if why:
            audit["detail"] = why
        if "plan" in doc:
            audit["what"] = {"would_change": {"from": doc["plan"]["from"],
                                              "to": doc["plan"]["to"]}}
        action, new = self.actions.create(domain=domain, action=kind, status=status, at=now,
                                          actor=actor, doc=doc, key=key, action_id=action_id,
                                          audit=audit if status != m.EXECUTING else None)
        if not new:
            return action, False
        self._log(action)
        if status == m.EXECUTING:
            action = self.executor.execute(action, actor)
        return action, True

    def _cooling(self, domain: str, kind: str, now: float) -> str | None:
        waiting = self.actions.list(status=(m.PENDING_APPROVAL, m.EXECUTING), domain=domain)
        for other in waiting:
            if other["action"] == kind:
                return (f"a {kind} of {domain} already "
                        + ("awaits approval" if other["status"] == m.PENDING_APPROVAL
                           else "is in progress"))
        cooldown = self.config.cooldown_seconds
        last = self.actions.last_at(domain, kind, (m.EXECUTED, m.DRY_RUN))
        if last is not None and now - last < cooldown:
            return (f"a {kind} of {domain} was taken {now - last:.0f}s ago (cooldown "
                    f"{cooldown:.0f}s)")
        return None

    def _retrain_request(self, domain: str, action_id: str, actor: str, reason: dict,
                         write_snapshot: bool) -> dict:
        context = self.retrain_context(domain, action_id, write_snapshot)
        return {"id": action_id, "type": "retrain_request", "domain": domain,
                "time": rfc3339(self.clock()), "actor": actor, "reason": reason, **context}

    # -- approvals ----------------------------------------------------------------------
    def approve(self, action_id: str, actor: str) -> dict:
        """Approve a pending action: it executes now (or dry-runs in dry-run mode)."""
        dry = self.dry_run or bool(self._pending(action_id)["doc"].get("dry_run"))
        status = m.DRY_RUN if dry else m.EXECUTING
        action = self._decide(action_id, actor, status, "approve")
        if status == m.EXECUTING:
            action = self.executor.execute(action, actor)
        return action

    def reject(self, action_id: str, actor: str) -> dict:
        """Reject a pending action; a retrain's snapshot (prompts) is deleted."""
        action = self._decide(action_id, actor, m.REJECTED, "reject")
        snapshot = (action["doc"].get("request") or {}).get("snapshot") or {}
        if snapshot.get("path"):
            Path(snapshot["path"]).unlink(missing_ok=True)
        return action

    def _decide(self, action_id: str, actor: str, status: str, verb: str) -> dict:
        action = self._pending(action_id)
        doc = {"approved_by" if verb == "approve" else "rejected_by": actor}
        if status == m.DRY_RUN and action["action"] in (m.ROLLBACK, m.PROMOTE):
            try:
                doc["plan"] = self.executor.dry_plan(action)
            except ActionError as exc:
                doc["error"] = str(exc)
        if not self.actions.transition(action_id, status, self.clock(),
                                       expect=(m.PENDING_APPROVAL,), doc=doc,
                                       audit={"actor": actor, "event": verb,
                                              "why": action["doc"].get("reason")}):
            raise ActionError(f"action {action_id} was decided meanwhile", "conflict")
        log.info("action %s (%s of %s) %s by %s", action_id, action["action"],
                 action["domain"], "approved" if verb == "approve" else "rejected", actor)
        return self.actions.get(action_id)

    def _pending(self, action_id: str) -> dict:
        action = self.actions.get(action_id)
        if action is None:
            raise ActionError(f"no action {action_id!r}", "not_found")
        if action["status"] != m.PENDING_APPROVAL:
            raise ActionError(f"action {action_id} is {action['status']}, not pending approval",
                              "not_pending")
        return action

    @staticmethod
    def _log(action: dict) -> None:
        status = action["status"]
        if status == m.EXECUTING:
            return
        level = logging.INFO if status != m.SKIPPED_COOLDOWN else logging.DEBUG
        log.log(level, "%s of %s: %s (%s)", action["action"], action["domain"], status,
                action["actor"])
