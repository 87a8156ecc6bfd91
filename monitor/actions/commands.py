"""The action commands: `monitor adapters rollback|promote`, `monitor actions
list|approve|reject` and `monitor audit`. Each works on the state store and the
registry directly, so it works with or without a running daemon; the messages
an action writes (control event, serving hook, retrain request) are published
before the command returns (what cannot be sent yet, the daemon's publisher
retries)."""

from __future__ import annotations

import getpass
import os
import sys
from contextlib import contextmanager

import orjson

from monitor.actions import model as m
from monitor.actions.model import ActionError
from monitor.timestamps import rfc3339


# An action `executing` for this long was left by a process that died.
STALE_SECONDS = 120.0


def cli_actor() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a container)
        user = str(os.getuid())
    return f"cli:{user}"


@contextmanager
def opened(config, registry_path: str | None, dry_run: bool = False):
    """(ActionService, Publisher) over the configured state store and registry."""
    from monitor.actions.execute import Executor
    from monitor.actions.publish import Publisher
    from monitor.actions.service import ActionService
    from monitor.actions.store import ActionStore
    from monitor.state import StateStore

    state = StateStore(config.state.url)
    actions = ActionStore(state)
    publisher = Publisher(actions, config)
    executor = Executor(actions, config, registry_path or config.registry.path,
                        publisher=None)
    service = ActionService(actions, executor, config.actions,
                            dry_run=dry_run or config.actions.dry_run)
    executor.recover(older_than=STALE_SECONDS)  # left by a process that died mid-change
    try:
        yield service, publisher
    finally:
        publisher.kafka.close()
        state.close()


def cmd_change(args, config) -> int:
    """`adapters rollback D [--to V]` and `adapters promote D V [--force]`."""
    from monitor.registry import load_registry

    registry_path = args.registry or config.registry.path
    registry = load_registry(registry_path)  # RegistryError: exit 2
    if args.domain not in registry.domains:
        print(f"monitor: no domain {args.domain!r} in {registry.path} (domains: "
              f"{', '.join(sorted(registry.domains)) or 'none'})", file=sys.stderr)
        return 2
    actor = cli_actor()
    with opened(config, registry_path, args.dry_run) as (service, publisher):
        if args.adapters_command == "rollback":
            kind = m.ROLLBACK
            params = {"to": args.to} if args.to else {}
            if args.force:
                params["force"] = True
        else:
            kind = m.PROMOTE
            gate = promotion_gate(service, config, registry, args.domain, args.version,
                                  args.force, actor)
            if gate is None:
                return 1
            params = {"version": args.version, "force": args.force, "gate": gate}
        try:
            action, _new = service.request(args.domain, kind, actor=actor, params=params,
                                           reason={"requested_by": actor})
        except ActionError as exc:
            print(f"monitor: {kind} refused: {exc}", file=sys.stderr)
            return 1
        if action["status"] == m.EXECUTED:
            publisher.publish_due(action["id"])
        print(describe(action))
        pending = [msg for msg in service.actions.outbox(action["id"])
                   if msg["state"] == "pending"]
        if pending:
            print(f"  {len(pending)} message(s) not delivered yet; the daemon's publisher "
                  f"retries them (last error: {pending[0]['last_error']})", file=sys.stderr)
    return 0


def promotion_gate(service, config, registry, domain: str, version: str, force: bool,
                   actor: str) -> dict | None:
    """The candidate's verdict against the active version, evaluated now when none
    is on record; None (refused, audited) when regressed without --force."""
    dom = registry.domains[domain]
    if version not in dom.versions:
        print(f"monitor: promote: domain {domain} has no version {version!r} (versions: "
              f"{', '.join(dom.versions)})", file=sys.stderr)
        return None
    if version == dom.active:
        print(f"monitor: promote: {domain}/{version} is already active", file=sys.stderr)
        return None
    run = _run_against(service.actions.state, domain, version, dom.active)
    if run is None:
        print(f"no verdict of {domain}/{version} against {dom.active} on record: evaluating "
              "now", file=sys.stderr)
        from monitor.eval.run import evaluate_version

        done = evaluate_version(registry, domain, version, config=config.eval)
        service.actions.state.save_eval_run(done.row(), done.items)
        run = done.row()
    verdict = run["verdict"] if run["status"] == "done" else "failed"
    gate = {"verdict": verdict, "against": dom.active, "eval_run": run["id"]}
    if verdict == "pass":
        return gate
    if force:
        print(f"monitor: promote: {domain}/{version} is {verdict} against {dom.active}; "
              "promoted anyway (--force, audited)", file=sys.stderr)
        return {**gate, "forced": True}
    service.actions.audit(at=service.clock(), actor=actor, event=m.PROMOTE, domain=domain,
                          outcome="refused", what={"version": version}, gate=gate)
    print(f"monitor: promote refused: {domain}/{version} is {verdict} against the active "
          f"version {dom.active} (eval run {run['id']}); --force overrides", file=sys.stderr)
    return None


def _run_against(state, domain: str, version: str, active: str | None) -> dict | None:
    """The latest evaluation run of domain/version compared with `active`."""
    for run in reversed(state.eval_runs(domain)):
        if run["version"] != version:
            continue
        if run["status"] != "done":
            return run if run["doc"].get("reason") not in (None, "error") else None
        if any(c["baseline"] == active for c in run["doc"].get("comparisons", ())):
            return run
    return None


def cmd_actions(args, config) -> int:
    actor = cli_actor()
    with opened(config, getattr(args, "registry", None)) as (service, publisher):
        if args.actions_command == "list":
            statuses = None if args.all else (m.PENDING_APPROVAL,)
            rows = service.actions.list(status=statuses, domain=args.domain, limit=args.limit)
            if args.json:
                sys.stdout.buffer.write(orjson.dumps([public(a) for a in rows],
                                                     option=orjson.OPT_INDENT_2) + b"\n")
            else:
                print(format_actions(rows, pending_only=not args.all))
            return 0
        try:
            if args.actions_command == "approve":
                action = service.approve(args.id, actor)
                publisher.publish_due(action["id"])
            else:
                action = service.reject(args.id, actor)
        except ActionError as exc:
            print(f"monitor: actions {args.actions_command}: {exc}", file=sys.stderr)
            return 2 if exc.reason == "not_found" else 1
        print(describe(action))
        return 0 if action["status"] in (m.EXECUTED, m.REJECTED, m.DRY_RUN) else 1


def cmd_audit(args, config) -> int:
    from monitor.actions.store import ActionStore
    from monitor.state import StateStore

    state = StateStore(config.state.url)
    try:
        entries = ActionStore(state).audit_log(args.domain, args.limit)
    finally:
        state.close()
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(entries, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    if not entries:
        print("no audit entries" + (f" for {args.domain}" if args.domain else ""))
        return 0
    for e in entries:
        what = e["doc"].get("what") or {}
        change = ""
        if "active" in what:
            change = f" {what['active']['from']} -> {what['active']['to']}"
        elif "would_change" in what:
            change = f" (would be {what['would_change']['from']} -> {what['would_change']['to']})"
        why = _why(e["doc"].get("why"))
        error = f"  error: {e['doc']['error']}" if e["doc"].get("error") else ""
        print(f"{rfc3339(e['at'])}  {e['domain']:<12} {e['event']:<10} {e['outcome']:<17} "
              f"by {e['actor']}{change}{why}{error}")
    return 0


def public(action: dict) -> dict:
    """An action as the API and `--json` show it (times in RFC 3339)."""
    doc = action["doc"]
    out = {"id": action["id"], "domain": action["domain"], "action": action["action"],
           "status": action["status"], "created_at": rfc3339(action["created_at"]),
           "updated_at": rfc3339(action["updated_at"]), "actor": action["actor"],
           "reason": doc.get("reason"), "params": doc.get("params")}
    for key in ("plan", "result", "error", "skipped", "approved_by", "rejected_by"):
        if doc.get(key) is not None:
            out[key] = doc[key]
    if "request" in doc:
        request = doc["request"]
        out["request"] = {k: request.get(k) for k in ("id", "lineage", "snapshot")}
    return out


def describe(action: dict) -> str:
    doc = action["doc"]
    head = f"{action['action']} of {action['domain']}: {action['status']} (action {action['id']})"
    plan = doc.get("result") or doc.get("plan")
    if plan and "from" in plan:
        head += f"\n  active version: {plan['from']} -> {plan['to']}"
    if doc.get("error"):
        head += f"\n  error: {doc['error']}"
    if doc.get("skipped"):
        head += f"\n  skipped: {doc['skipped']}"
    return head


def format_actions(rows: list[dict], pending_only: bool) -> str:
    if not rows:
        return "no pending actions" if pending_only else "no actions"
    lines = [f"{'ID':<32}  {'DOMAIN':<12} {'ACTION':<10} {'STATUS':<17} {'CREATED':<24} WHY"]
    for a in rows:
        lines.append(f"{a['id']:<32}  {a['domain']:<12} {a['action']:<10} {a['status']:<17} "
                     f"{rfc3339(a['created_at']):<24} {_why(a['doc'].get('reason')).strip()}")
    return "\n".join(lines)


def _why(reason) -> str:
    if not reason:
        return ""
    alert = reason.get("alert")
    if alert:
        return f"  alert {alert['alertname']} (value {alert['value']:g})"
    if reason.get("requested_by"):
        return f"  asked by {reason['requested_by']}"
    return ""
