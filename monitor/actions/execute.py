"""Executing actions: the registry change, the transactions around it, recovery.

A change of a domain's active version (rollback, promote) runs under the
registry's lock, in three steps:

1. plan: the action becomes `executing` with its plan (from, to) and its
   messages (control event, serving-hook calls) written to the outbox *held*;
2. the registry is rewritten atomically (`monitor.registry.set_active`);
3. the action becomes `executed`, its audit entry is appended and its messages
   are released to the publisher, in one transaction.

A crash between the steps leaves the action `executing`; `recover()` (at the
daemon's start, then every minute for actions left by a command that died, and
at the start of each action command) looks at the registry: when it names the plan's `to`, step 3 is
done; when it still names `from`, steps 2 and 3 are; otherwise someone changed
the registry meanwhile and the action fails, its messages dropped. So a change
is announced exactly once, whatever moment the process dies at.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from monitor.actions import model as m
from monitor.actions.hooks import (command_message, describe_target, http_message, kafka_message,
                                   serving_messages)
from monitor.actions.model import ActionError
from monitor.config import Config
from monitor.faults import fault
from monitor.timestamps import rfc3339

log = logging.getLogger(__name__)

def _fault(point: str) -> None:
    fault(point)  # a name of this module's own, so tests can replace it


def rollback_target(registry, domain: str, verdicts: dict[tuple[str, str], str],
                    previous: str | None) -> tuple[str, str]:
    """(version, why) a rollback of `domain` goes to: the most recent version
    (the last listed) other than the active one, not retired or marked bad, whose
    latest golden-set verdict is `pass`; else `previous` (the version active
    before the current one) unless it regressed or is retired or bad; else
    ActionError. A rollback never goes to a version known to be worse."""
    dom = registry.domains[domain]
    for name in reversed(list(dom.versions)):
        version = dom.versions[name]
        if name == dom.active or version.status in ("retired", "bad"):
            continue
        if verdicts.get((domain, name)) == "pass":
            return name, f"the most recent version whose latest verdict is pass ({name})"
    usable = previous in dom.versions and dom.versions[previous] is not None and \
        dom.versions[previous].status not in ("retired", "bad")
    if previous and previous != dom.active and usable and \
            verdicts.get((domain, previous)) != "regressed":
        return previous, (f"the previously active version ({previous}): no other version "
                          "has a passing verdict")
    raise ActionError(f"domain {domain}: no version to roll back to (no other version has a "
                      "passing golden-set verdict, and the previous active version is unknown "
                      "or regressed); "
                      "use --to VERSION", reason="no_target")


class Executor:
    """Runs actions against the registry at `registry_path` and the action store.

    `retrain_context(domain, dry_run)` gives a retrain request's statistics,
    lineage and snapshot (the daemon reads its pipeline); `on_change(domain,
    from, to)` is told each change of an active version; `publisher` (optional)
    is woken when messages are released; `verdicts()` gives the latest golden-set
    verdicts (default: the action store's state store)."""

    def __init__(self, actions, config: Config, registry_path: str | os.PathLike | None, *,
                 clock: Callable[[], float] = time.time,
                 retrain_context: Callable[[str, bool], dict] | None = None,
                 on_change: Callable[[str, str | None, str], None] | None = None,
                 publisher=None, verdicts: Callable[[], dict] | None = None):
        self.actions = actions
        self.config = config
        self.registry_path = Path(registry_path) if registry_path else None
        self.clock = clock
        self.retrain_context = retrain_context
        self.on_change = on_change
        self.publisher = publisher
        # {(domain, version): latest verdict}; a replay's dry run reads the real store's.
        self.verdicts = verdicts or actions.state.latest_verdicts

    # -- entry points ---------------------------------------------------------------
    def execute(self, action: dict, actor: str) -> dict:
        """Carry out an `executing` action; returns it as stored afterwards. An
        ActionError (no rollback target...) ends it `failed`, audited, and is raised."""
        kind = action["action"]
        try:
            if kind in (m.ROLLBACK, m.PROMOTE):
                self._change_active(action, actor)
            elif kind == m.RETRAIN:
                self._retrain(action, actor)
            elif kind == m.REEVALUATE:
                self._reevaluate(action, actor)
            else:
                raise ActionError(f"unknown action {kind!r}")
        except ActionError as exc:
            self._fail(action, actor, str(exc), exc.reason)
            raise
        except Exception as exc:
            log.exception("action %s (%s on %s) failed", action["id"], kind, action["domain"])
            self._fail(action, actor, f"{exc.__class__.__name__}: {exc}", "error")
            raise ActionError(f"{kind} of {action['domain']} failed: {exc}", "error") from exc
        return self.actions.get(action["id"])

    def recover(self, older_than: float | None = None) -> int:
        """Finish the actions a crash left `executing` (see the module docstring);
        with `older_than`, only those not touched for that many seconds (another
        process may be executing a fresh one right now)."""
        done = 0
        now = self.clock()
        for action in self.actions.list(status=m.EXECUTING):
            if older_than is not None and now - action["updated_at"] < older_than:
                continue
            log.warning("action %s (%s on %s) was cut short by a stop; finishing it",
                        action["id"], action["action"], action["domain"])
            try:
                self.execute(action, action["actor"])
                done += 1
            except ActionError as exc:
                log.error("action %s could not be finished: %s", action["id"], exc)
        return done

    # -- active version changes -------------------------------------------------------
    def _change_active(self, action: dict, actor: str) -> None:
        from monitor.registry import load_registry, registry_lock, set_active

        if self.registry_path is None:
            raise ActionError("no adapter registry is configured (registry.path)", "no_registry")
        domain = action["domain"]
        with registry_lock(self.registry_path):
            registry = load_registry(self.registry_path)
            dom = registry.domains.get(domain)
            if dom is None:
                raise ActionError(f"domain {domain} is not in the registry {self.registry_path}",
                                  "unknown_domain")
            plan = action["doc"].get("plan")
            if plan is None:
                plan = self._plan(action, registry)
                event = self._control_event(action, registry, plan, actor)
                messages = self._change_messages(event)
                for message in messages:
                    message["held"] = True
                if not self.actions.transition(action["id"], m.EXECUTING, self.clock(),
                                               expect=(m.EXECUTING,),
                                               doc={"plan": plan, "event": event},
                                               outbox=messages):
                    raise ActionError(f"action {action['id']} changed meanwhile", "conflict")
                _fault("after_plan")
            if dom.active == plan["from"] and plan["from"] != plan["to"]:
                set_active(self.registry_path, domain, plan["to"], expect=plan["from"])
                log.info("domain %s: active version %s -> %s (%s by %s)", domain, plan["from"],
                         plan["to"], action["action"], actor)
                _fault("after_registry_write")
            elif dom.active != plan["to"]:
                raise ActionError(f"domain {domain}: the registry names {dom.active} as active, "
                                  f"not {plan['from']} as planned: changed meanwhile, nothing "
                                  "done", "conflict")
            self.actions.transition(
                action["id"], m.EXECUTED, self.clock(), expect=(m.EXECUTING,),
                doc={"result": {"from": plan["from"], "to": plan["to"]}},
                audit={"actor": actor, "what": {"active": {"from": plan["from"],
                                                           "to": plan["to"]}},
                       "why": action["doc"].get("reason"), "detail": plan.get("why")},
                release=True)
        self._wake()
        if self.on_change is not None and plan["from"] != plan["to"]:
            self.on_change(domain, plan["from"], plan["to"])

    def _plan(self, action: dict, registry) -> dict:
        domain = action["domain"]
        dom = registry.domains[domain]
        params = action["doc"].get("params", {})
        if action["action"] == m.PROMOTE:
            to, why = params["version"], "promotion"
        elif params.get("to"):
            to, why = params["to"], f"rollback to {params['to']}, as asked"
        else:
            to, why = rollback_target(registry, domain, self.verdicts(),
                                      self.previous_active(domain, dom.active))
        if to not in dom.versions:
            raise ActionError(f"domain {domain} has no version {to!r} (versions: "
                              f"{', '.join(dom.versions)})", "unknown_version")
        status = dom.versions[to].status if dom.versions[to] is not None else None
        if status == "retired":
            raise ActionError(f"{domain}/{to} is retired", "retired")
        if not params.get("force"):
            if status == "bad":
                raise ActionError(f"{domain}/{to} is marked bad; --force overrides", "bad")
            verdict = self.verdicts().get((domain, to))
            if action["action"] == m.ROLLBACK and verdict == "regressed":
                raise ActionError(f"{domain}/{to}: its latest golden-set verdict is regressed; "
                                  "--force overrides", "regressed")
        if to == dom.active:
            raise ActionError(f"domain {domain}: {to} is already the active version",
                              "already_active")
        return {"from": dom.active, "to": to, "why": why}

    def dry_plan(self, action: dict) -> dict:
        """What a rollback or promotion would change, without changing it."""
        from monitor.registry import load_registry

        if self.registry_path is None:
            raise ActionError("no adapter registry is configured (registry.path)", "no_registry")
        registry = load_registry(self.registry_path)
        if action["domain"] not in registry.domains:
            raise ActionError(f"domain {action['domain']} is not in the registry "
                              f"{self.registry_path}", "unknown_domain")
        return self._plan(action, registry)

    def previous_active(self, domain: str, active: str | None) -> str | None:
        """The version active before `active`, from the executed changes on record."""
        for action in self.actions.list(status=m.EXECUTED, domain=domain):
            result = action["doc"].get("result") or {}
            if action["action"] in (m.ROLLBACK, m.PROMOTE) and result.get("to") == active:
                return result.get("from")
        return None

    def _control_event(self, action: dict, registry, plan: dict, actor: str) -> dict:
        dom = registry.domains[action["domain"]]
        version = dom.versions[plan["to"]]
        reason = action["doc"].get("reason") or {}
        return {"id": action["id"], "type": "adapter_change", "domain": action["domain"],
                "from": plan["from"], "to": plan["to"], "reason": action["action"],
                "kind": dom.kind, "base_model": dom.base_model,
                "path": str(version.path) if version is not None else None,
                "alert": reason.get("alert"), "actor": actor, "time": rfc3339(self.clock())}

    def _change_messages(self, event: dict) -> list[dict]:
        actions = self.config.actions
        messages = []
        if actions.control_topic:
            messages.append(kafka_message(actions.control_topic, event["domain"], event))
        return messages + serving_messages(actions, event)

    # -- retrain, reevaluate -----------------------------------------------------------
    def _retrain(self, action: dict, actor: str) -> None:
        request = action["doc"].get("request")
        if request is None:
            raise ActionError(f"retrain of {action['domain']} has no request document", "error")
        retrain = self.config.actions.retrain
        messages = []
        if retrain.topic:
            messages.append(kafka_message(retrain.topic, action["domain"], request))
        if retrain.webhook:
            messages.append(http_message(retrain.webhook, request))
        if retrain.command:
            messages.append(command_message(retrain.command, request))
        if not messages:
            log.warning("retrain of %s requested, but actions.retrain has no topic, webhook or "
                        "command: it is only recorded", action["domain"])
        self.actions.transition(
            action["id"], m.EXECUTED, self.clock(), expect=(m.EXECUTING,),
            doc={"result": {"destinations": [describe_target(msg) for msg in messages]}},
            audit={"actor": actor, "why": action["doc"].get("reason"),
                   "what": {"retrain_request": request["id"],
                            "snapshot": request.get("snapshot")}},
            outbox=messages)
        self._wake()

    def _reevaluate(self, action: dict, actor: str) -> None:
        job = self.actions.state.enqueue_eval(action["domain"], None,
                                              f"action {action['id']}", self.clock())
        self.actions.transition(
            action["id"], m.EXECUTED, self.clock(), expect=(m.EXECUTING,),
            doc={"result": {"eval_job": job}},
            audit={"actor": actor, "why": action["doc"].get("reason"),
                   "what": {"eval_job": job}})

    # -- helpers ---------------------------------------------------------------------
    def _fail(self, action: dict, actor: str, error: str, reason: str) -> None:
        self.actions.transition(action["id"], m.FAILED, self.clock(),
                                expect=(m.EXECUTING,), doc={"error": error},
                                audit={"actor": actor, "why": action["doc"].get("reason"),
                                       "error": error, "reason": reason})
        for message in self.actions.outbox(action["id"], state="held"):
            self.actions.outbox_failed(message["id"], "its action failed", None)
        log.error("%s of %s failed: %s", action["action"], action["domain"], error)

    def _wake(self) -> None:
        if self.publisher is not None:
            self.publisher.wake()
