"""Command line (`monitor`, also `python -m monitor`), DESIGN.md §8.

Exit status: 0 success, 1 a failed check or verdict, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

import orjson

from monitor import __version__
from monitor.config import load_config
from monitor.errors import ConfigError, MonitorError, StateError
from monitor.logs import configure_logging

log = logging.getLogger("monitor")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monitor", description="Monitoring daemon for fine-tuned "
                                     "LLMs: drift, quality, golden sets, safe rollback.")
    parser.add_argument("--version", action="version", version=f"monitor {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH",
                        help="config file (default ./monitor.yaml when present, else embedded defaults)")
    common.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run the daemon")
    run.add_argument("--rules", metavar="PATH", action="append",
                     help="rule file or folder (repeatable; default: rules.paths, rules/)")
    run.add_argument("--registry", metavar="PATH",
                     help="adapter registry (default: registry.path, adapters/registry.yaml)")
    run.add_argument("--dry-run", action="store_true",
                     help="record what actions would do, change nothing (actions.dry_run)")

    rp = sub.add_parser("replay", parents=[common],
                        help="run the pipeline over a JSONL file in event time")
    rp.add_argument("file", metavar="FILE.jsonl")
    rp.add_argument("--json-out", metavar="F", help="write the result document to F ('-' = stdout)")
    rp.add_argument("--rules", metavar="PATH", help="rule file or folder (default rules/)")
    rp.add_argument("--apply", action="store_true",
                    help="execute the actions the alerts ask for (default: report them as dry_run)")
    rp.add_argument("--registry", metavar="PATH",
                    help="adapter registry (default: registry.path, adapters/registry.yaml)")

    rules = sub.add_parser("rules", help="check rule files, run their unit tests (promtool's formats)")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    rc = rules_sub.add_parser("check", parents=[common],
                              help="validate rule files (exit 1 on any error, like promtool)")
    rc.add_argument("files", nargs="+", metavar="FILE")
    rt = rules_sub.add_parser("test", parents=[common],
                              help="run promtool-format unit-test files (exit 1 on any failure)")
    rt.add_argument("files", nargs="+", metavar="FILE")

    ev = sub.add_parser("eval", parents=[common],
                        help="golden-set evaluation of a domain's version (exit 1 if regressed)")
    ev.add_argument("--domain", required=True, metavar="D")
    ev.add_argument("--version", metavar="V", help="default: the active version")
    ev.add_argument("--json", action="store_true", help="print the result document")
    ev.add_argument("--registry", metavar="PATH",
                    help="registry file (default: registry.path, adapters/registry.yaml)")

    ad = sub.add_parser("adapters", help="the adapter registry (list, show)")
    ad_sub = ad.add_subparsers(dest="adapters_command", required=True, metavar="ACTION")
    registry_arg = argparse.ArgumentParser(add_help=False)
    registry_arg.add_argument("--registry", metavar="PATH",
                              help="registry file (default: registry.path, adapters/registry.yaml)")
    ad_sub.add_parser("list", parents=[common, registry_arg],
                      help="every domain and version, with the active one marked")
    ads = ad_sub.add_parser("show", parents=[common, registry_arg], help="one domain in detail")
    ads.add_argument("domain", metavar="D")
    dry = argparse.ArgumentParser(add_help=False)
    dry.add_argument("--dry-run", action="store_true", help="record what would change, change nothing")
    adr = ad_sub.add_parser("rollback", parents=[common, registry_arg, dry],
                            help="make the last good version active (audited, announced)")
    adr.add_argument("domain", metavar="D")
    adr.add_argument("--to", metavar="V", help="roll back to this version")
    adr.add_argument("--force", action="store_true",
                     help="even to a version marked bad or regressed (audited)")
    adp = ad_sub.add_parser("promote", parents=[common, registry_arg, dry],
                            help="make V active if its golden-set verdict against the active "
                                 "version is pass (evaluated now when missing)")
    adp.add_argument("domain", metavar="D")
    adp.add_argument("version", metavar="V")
    adp.add_argument("--force", action="store_true",
                     help="promote even when regressed (audited)")

    act = sub.add_parser("actions", help="actions: list, approve, reject")
    act_sub = act.add_subparsers(dest="actions_command", required=True, metavar="ACTION")
    acl = act_sub.add_parser("list", parents=[common], help="pending actions (--all: every one)")
    acl.add_argument("--all", action="store_true", help="every action, newest first")
    acl.add_argument("--domain", metavar="D")
    acl.add_argument("--limit", type=int, default=50, metavar="N")
    acl.add_argument("--json", action="store_true")
    for name, text in (("approve", "approve a pending action: it executes now"),
                       ("reject", "reject a pending action")):
        one = act_sub.add_parser(name, parents=[common, registry_arg], help=text)
        one.add_argument("id", metavar="ID")

    aud = sub.add_parser("audit", parents=[common], help="the audit log of actions and approvals")
    aud.add_argument("--domain", metavar="D")
    aud.add_argument("--limit", type=int, default=None, metavar="N", help="the newest N entries")
    aud.add_argument("--json", action="store_true")

    ref = sub.add_parser("reference", help="drift reference profiles (build, show)")
    ref_sub = ref.add_subparsers(dest="reference_command", required=True, metavar="ACTION")
    rb = ref_sub.add_parser("build", parents=[common],
                            help="build a domain's reference from a JSONL file and make it active")
    rb.add_argument("--domain", required=True, metavar="D")
    rb.add_argument("file", metavar="FILE.jsonl")
    rb.add_argument("--version", default="", metavar="V",
                    help="the model version this traffic was served by (a label)")
    rb.add_argument("--limit", type=int, default=200_000, metavar="N",
                    help="use at most the first N records of the domain (default 200000)")
    rs = ref_sub.add_parser("show", parents=[common], help="print a domain's reference profiles")
    rs.add_argument("domain", metavar="D")
    rs.add_argument("--json", action="store_true", help="print JSON")

    rep = sub.add_parser("report", parents=[common],
                         help="Evidently HTML drift report: current window vs reference")
    rep.add_argument("--domain", required=True, metavar="D")
    rep.add_argument("--out", metavar="F.html", help="default: drift-report-<domain>.html")

    bp = sub.add_parser("broker", parents=[common],
                        help="start a local Kafka-compatible broker (Tansu) for development")
    bp.add_argument("--port", type=int, default=9092)
    bp.add_argument("--topic", action="append", default=[], metavar="NAME[:PARTITIONS]",
                    help="create this topic at start (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if not exc.code else 2
    configure_logging(args.log_level)
    try:
        config = load_config(args.config)
        return _COMMANDS[args.command](args, config)
    except ConfigError as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return 2
    except StateError as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return 2
    except MonitorError as exc:  # a registry that cannot be written, a lock not acquired...
        print(f"monitor: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def cmd_run(args, config) -> int:
    from monitor.daemon import Daemon

    if args.dry_run:
        config = config.model_copy(update={
            "actions": config.actions.model_copy(update={"dry_run": True})})
    daemon = Daemon(config, rule_paths=args.rules, registry_path=args.registry)
    try:
        daemon.start_http()
    except OSError as exc:
        raise ConfigError([f"http.address {config.http.address}: cannot listen: {exc.strerror}"],
                          args.config or "configuration") from None
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop())
    signal.signal(signal.SIGHUP, lambda *_: daemon.request_reload())
    return daemon.run()


def _verdicts(config) -> dict:
    """Latest verdict per (domain, version) from the state store, if there is one."""
    from monitor.state.store import stored_verdicts

    return stored_verdicts(config.state.url)


def cmd_adapters(args, config) -> int:
    from monitor.registry import describe_domain, format_table, load_registry

    if args.adapters_command in ("rollback", "promote"):
        from monitor.actions.commands import cmd_change

        return cmd_change(args, config)

    registry = load_registry(args.registry or config.registry.path)  # RegistryError: exit 2
    verdicts = _verdicts(config)
    if args.adapters_command == "list":
        print(format_table(registry, verdicts))
        return 0
    if args.domain not in registry.domains:
        print(f"monitor: adapters show: no domain {args.domain!r} in {registry.path} "
              f"(domains: {', '.join(sorted(registry.domains)) or 'none'})", file=sys.stderr)
        return 2
    print(describe_domain(registry, args.domain, verdicts))
    return 0


def cmd_eval(args, config) -> int:
    """Evaluate, store the run, print it; 0 pass, 1 regressed or refused, 2 bad usage."""
    from monitor.eval.run import evaluate_version
    from monitor.registry import load_registry
    from monitor.state import StateStore

    registry = load_registry(args.registry or config.registry.path)
    progress = None
    if sys.stderr.isatty():
        def progress(what: str, done: int, total: int) -> None:
            bar = "#" * (20 * done // max(total, 1))
            print(f"\r  [{bar:<20}] {done}/{total} {what:<30}", end="" if done < total else "\n",
                  file=sys.stderr, flush=True)
    try:
        run = evaluate_version(registry, args.domain, args.version, config=config.eval,
                               progress=progress)
    except KeyError as exc:
        print(f"monitor: eval: {exc.args[0]}", file=sys.stderr)
        return 2
    store = StateStore(config.state.url)
    try:
        store.save_eval_run(run.row(), run.items)
    finally:
        store.close()
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(run.doc, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(format_eval(run.doc, run.verdict))
    if run.status != "done":
        print(f"monitor: eval: {run.doc['error']}", file=sys.stderr)
        return 1
    return 0 if run.verdict == "pass" else 1


def format_eval(doc: dict, verdict: str | None) -> str:
    """A human summary of one evaluation."""
    if "error" in doc:
        return f"{doc['domain']} {doc['version']}: REFUSED ({doc['reason']})"
    scores = doc["scores"]
    lines = [f"{doc['domain']} {doc['version']}: {str(verdict).upper()}  (n={doc['n']}, "
             f"nll {scores['nll']:.4f}, exact match {scores['exact_match']:.3f})"]
    for c in doc["comparisons"]:
        flag = "REGRESSED" if c["regressed"] else "ok"
        lines.append(f"  vs {c['baseline']:<10} {c['metric']:<12} delta {c['delta']:+.4f}  "
                     f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]  {flag}")
    return "\n".join(lines)


def cmd_rules(args, config) -> int:
    if args.rules_command == "check":
        return rules_check(args.files, int(config.rules.retention_seconds * 1000))
    return rules_test(args.files)


def rules_check(files: list[str], retention_ms: int | None = None) -> int:
    """promtool check rules: every error of every file on stderr; 1 if any."""
    from monitor.rules.files import expand_paths, load_file

    failed = False
    for name in files:
        print(f"Checking {name}")
        try:
            paths = expand_paths([name])
        except Exception as exc:  # RuleLoadError: the path does not exist
            print(f"  FAILED:\n{exc}", file=sys.stderr)
            failed = True
            continue
        for path in paths:
            groups, errors = load_file(path, retention_ms=retention_ms)
            if errors:
                failed = True
                print("  FAILED:", file=sys.stderr)
                for error in errors:
                    print(error, file=sys.stderr)
            else:
                rules = sum(len(g.rules) for g in groups)
                print(f"  SUCCESS: {rules} rules found")
                for warning in (w for g in groups for w in g.warnings):
                    print(warning, file=sys.stderr)
        print()
    return 1 if failed else 0


def rules_test(files: list[str]) -> int:
    """promtool test rules: 1 if any test of any file fails."""
    from monitor.rules.promtest import run_file

    failed = False
    for name in files:
        print(f"Unit Testing:  {name}")
        result = run_file(name)
        if result.ok:
            print("  SUCCESS")
        else:
            failed = True
            print("  FAILED:", file=sys.stderr)
            for error in result.errors:
                print(error, file=sys.stderr)
                print()
        print()
    return 1 if failed else 0


def cmd_replay(args, config) -> int:
    from monitor.replay import replay

    if not Path(args.file).is_file():
        print(f"monitor: replay: {args.file}: no such file", file=sys.stderr)
        return 2
    started = time.monotonic()
    embedder = None
    if config.drift.enabled and config.drift.embeddings.enabled:
        from monitor.features.embeddings import load_embedder

        embedder = load_embedder(batch_size=config.drift.embeddings.batch_size)
    result = replay(args.file, config, embedder=embedder,
                    rule_paths=[args.rules] if args.rules else None, apply=args.apply,
                    registry_path=args.registry)
    doc = result.to_json()
    if args.json_out == "-":
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        if args.json_out:
            Path(args.json_out).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        print(format_summary(doc, time.monotonic() - started, result.rejected_examples))
    return 0


def format_summary(doc: dict, seconds: float | None = None, examples: list | None = None) -> str:
    """A human summary of a replay (or demo) result document."""
    records = doc["records"]
    took = f" in {seconds:.1f}s" if seconds is not None else ""
    lines = [f"records: {records['accepted']} accepted, {records['rejected']} rejected{took}"]
    for reason, count in records.get("rejected_by_reason", {}).items():
        lines.append(f"  rejected {reason}: {count}")
    for domain, d in doc.get("domains", {}).items():
        q = d["quality"]
        lat = d["latency_seconds"]
        lines.append(
            f"  {domain:<12} records {d['records']:>8}  window {d['window_samples']:>7}  "
            + "  ".join(f"{k} {v:.3f}" for k, v in q.items())
            + ("  p50 {:.3f}s p99 {:.3f}s".format(lat.get("0.5", float("nan")),
                                                  lat.get("0.99", float("nan"))) if lat else ""))
    for example in (examples or [])[:5]:
        lines.append(f"  line {example['line']}: {example['reason']}: {example['message']}")
    drift = doc.get("drift")
    if drift:
        lines.append(f"drift: {drift['evaluations']} evaluation(s), semantic drift "
                     f"{'on' if drift['semantic'] else 'off'}")
        for event in drift["events"]:
            state = "DETECTED" if event["detected"] else "cleared "
            score = "" if event["score"] is None else f" ({event['method']} {event['score']:.3f})"
            lines.append(f"  {event['at']}  {state} {event['domain']}/{event['feature']}{score}")
        for domain, d in doc.get("domains", {}).items():
            now = [f for f, v in d.get("drift", {}).items() if v["detected"]]
            if now:
                lines.append(f"  at the end: {domain} drifts in {', '.join(now)}")
    alerts = doc.get("alerts")
    if alerts is not None:
        lines.append(f"alerts: {len(alerts)} fired")
        for alert in alerts:
            labels = ", ".join(f"{k}={v}" for k, v in sorted(alert["labels"].items()))
            resolved = f" -> resolved {alert['resolved_at']}" if alert["resolved_at"] else ""
            lines.append(f"  {alert['fired_at']}  FIRING {alert['alertname']} {{{labels}}}{resolved}")
    actions = doc.get("actions")
    if actions:
        lines.append(f"actions: {len(actions)}")
        for action in actions:
            change = action.get("result") or action.get("plan") or {}
            what = f" {change['from']} -> {change['to']}" if "from" in change else ""
            lines.append(f"  {action['at']}  {action['status'].upper()} {action['action']} "
                         f"{action['domain']}{what} (alert {action['alert']})")
    return "\n".join(lines)


def cmd_reference(args, config) -> int:
    from monitor.state import StateStore

    if args.reference_command == "build":
        from monitor.drift.build import build_from_file

        if not Path(args.file).is_file():
            print(f"monitor: reference build: {args.file}: no such file", file=sys.stderr)
            return 2
        result = build_from_file(args.file, args.domain, config, args.version, args.limit)
        if result.reference is None:
            seen = ", ".join(f"{d} ({n})" for d, n in result.other_domains.most_common(5)) or "none"
            print(f"monitor: reference build: {args.file}: fewer than 2 accepted records of domain "
                  f"{args.domain!r} ({result.lines} lines, {sum(result.rejected.values())} "
                  f"rejected; other domains: {seen})", file=sys.stderr)
            return 1
        store = StateStore(config.state.url)
        try:
            store.save_reference(result.reference)
        finally:
            store.close()
        ref = result.reference
        print(f"reference {ref.id} for domain {ref.domain} (version {ref.version or '-'}) built "
              f"from {ref.count} records of {args.file}; now active")
        if result.rejected:
            print(f"  skipped {sum(result.rejected.values())} rejected line(s): "
                  + ", ".join(f"{r} {n}" for r, n in result.rejected.most_common()))
        if result.skipped_over_limit:
            print(f"  ignored {result.skipped_over_limit} record(s) past --limit {args.limit}")
        print(format_reference(ref.summary()))
        return 0
    store = StateStore(config.state.url)
    try:
        stored = store.references(args.domain)
        active = store.active_reference_ids().get(args.domain)
    finally:
        store.close()
    if not stored:
        print(f"monitor: no reference for domain {args.domain!r} in the state store; the daemon "
              f"builds one from the domain's first {config.drift.reference_records} records, or "
              f"run `monitor reference build --domain {args.domain} FILE.jsonl`", file=sys.stderr)
        return 1
    docs = [dict(ref.summary(), active=ref.id == active) for ref in stored.values()]
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(docs if len(docs) > 1 else docs[0],
                                             option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print("\n\n".join(format_reference(doc) for doc in docs))
    return 0


def format_reference(doc: dict) -> str:
    """A human description of a reference profile (`Reference.summary()`)."""
    active = " (active)" if doc.get("active") else ""
    lines = [f"domain {doc['domain']}  version {doc['version'] or '-'}  reference {doc['id']}{active}",
             f"  {doc['records']} records from {doc['time_range'][0]} to {doc['time_range'][1]}; "
             f"source {doc['source']}; built {doc['built_at']}"]
    for name, f in doc["numeric"].items():
        lines.append(f"  {name:<16} numeric      n={f['count']:<7} mean={f['mean']:<10.4g} "
                     f"std={f['std']:<10.4g} range=[{f['min']:.4g}, {f['max']:.4g}]  "
                     f"{f['bins']} bins")
    for name, f in doc["categorical"].items():
        shares = ", ".join(f"{c} {s:.1%}" for c, s in list(f["shares"].items())[:6])
        more = f" (+{len(f['shares']) - 6} more)" if len(f["shares"]) > 6 else ""
        lines.append(f"  {name:<16} categorical  n={f['count']:<7} {shares}{more}")
    lines.append(f"  embedding        {doc['texts']} sampled prompt texts")
    return "\n".join(lines)


def cmd_report(args, config) -> int:
    from monitor.drift.report import ReportError, write_report
    from monitor.state import StateStore

    out = args.out or f"drift-report-{args.domain}.html"
    store = StateStore(config.state.url)
    try:
        summary = write_report(store, config, args.domain, out)
    except ReportError as exc:
        print(f"monitor: report: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    drifted = [c for c, v in summary["columns"].items() if v["drift"]]
    print(f"wrote {out}: domain {args.domain}, {summary['current_rows']} sampled window records vs "
          f"{summary['reference_rows']} reference rows (reference {summary['reference']})")
    print(f"  Evidently finds drift in {len(drifted)} of {len(summary['columns'])} column(s)"
          + (f": {', '.join(drifted)}" if drifted else ""))
    return 0


def cmd_broker(args, config) -> int:
    from monitor.broker import LocalBroker

    broker = LocalBroker(port=args.port).start()
    for spec in args.topic:
        name, _, partitions = spec.partition(":")
        broker.create_topic(name, int(partitions or 1))
    print(f"broker listening on {broker.bootstrap_servers} (Ctrl-C to stop)", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop and broker.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


def cmd_actions(args, config) -> int:
    from monitor.actions.commands import cmd_actions as run

    return run(args, config)


def cmd_audit(args, config) -> int:
    from monitor.actions.commands import cmd_audit as run

    return run(args, config)


_COMMANDS = {"run": cmd_run, "replay": cmd_replay, "rules": cmd_rules, "adapters": cmd_adapters,
             "eval": cmd_eval, "actions": cmd_actions, "audit": cmd_audit,
             "reference": cmd_reference,
             "report": cmd_report, "broker": cmd_broker}
