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
from monitor.errors import ConfigError, StateError
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

    sub.add_parser("run", parents=[common], help="run the daemon")

    rp = sub.add_parser("replay", parents=[common],
                        help="run the pipeline over a JSONL file in event time")
    rp.add_argument("file", metavar="FILE.jsonl")
    rp.add_argument("--json-out", metavar="F", help="write the result document to F ('-' = stdout)")
    rp.add_argument("--rules", metavar="PATH", help="rule file or folder (default rules/)")

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
    except KeyboardInterrupt:
        return 130


def cmd_run(args, config) -> int:
    from monitor.daemon import Daemon

    daemon = Daemon(config)
    try:
        daemon.start_http()
    except OSError as exc:
        raise ConfigError([f"http.address {config.http.address}: cannot listen: {exc.strerror}"],
                          args.config or "configuration") from None
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop())
    return daemon.run()


def cmd_replay(args, config) -> int:
    from monitor.replay import replay

    if not Path(args.file).is_file():
        print(f"monitor: replay: {args.file}: no such file", file=sys.stderr)
        return 2
    if args.rules:
        log.warning("--rules %s: this version does not evaluate rules; `alerts` and `actions` "
                    "stay empty", args.rules)
    started = time.monotonic()
    result = replay(args.file, config)
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
    return "\n".join(lines)


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


_COMMANDS = {"run": cmd_run, "replay": cmd_replay, "broker": cmd_broker}
