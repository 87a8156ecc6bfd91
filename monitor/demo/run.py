"""`make demo`: the whole loop on embedded defaults, in a few minutes.

1. build the tiny base model and its adapters (cached in .cache/tiny);
2. copy them into demo-out/adapters with a registry: legal v1 (good) and v2
   (corrupted), support v1, medical v1 (a full fine-tune);
3. start the local broker (Tansu) and `monitor run` as a real subprocess with
   the default rule pack, every `for:` and `interval:` divided by
   `DEMO_SPEEDUP` (20: five minutes become fifteen seconds) and 5-second
   buckets and drift evaluations, so that minutes of a real deployment fit in
   one or two;
4. stream traffic for three domains: `support`'s prompts drift (twice as long,
   about another topic), `legal` gets its corrupted v2 rolled out by hand,
   `medical` stays healthy; print the timeline as the daemon reacts (read from
   its own /metrics and API): drift detected -> retrain requested; golden-set
   regression -> rollback executed; medical quiet;
5. at the end: PNG charts of drift and golden scores from the daemon's own
   series, the Evidently report of the drifted domain, and where everything is.

Exit status 0 when the loop closed (rollback and retrain executed, nothing for
medical), 1 otherwise; no process is left running either way.

Environment: DEMO_OUT (demo-out), DEMO_RATE (records/s per domain, 40),
DEMO_SPEEDUP (20), DEMO_MAX_SECONDS (scenario cap, 300), DEMO_ROLLOUT_AT and
DEMO_DRIFT_AT (seconds after the traffic starts, 45 and 50),
DEMO_REFERENCE_RECORDS (1200), DEMO_WINDOW_SECONDS (60), DEMO_PORT (9464).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from monitor.broker import LocalBroker, free_port
from monitor.synthetic import MALFORMED, PromptPool, Shape, shaped_record

TOPIC = "inference-logs"
MARKER = ".lora-monitor-demo"  # in DEMO_OUT: the demo may empty this folder
REPO = Path(__file__).resolve().parents[2]
DEFAULT_RULES = REPO / "rules"

HEALTHY = {
    "legal": Shape(topic="legal", tokens_median=300.0, latency_median_ms=800.0),
    "support": Shape(topic="support", tokens_median=120.0, latency_median_ms=300.0),
    "medical": Shape(topic="medical", tokens_median=220.0, latency_median_ms=600.0),
}
# support's users start asking about their bills and investments, at length.
DRIFTED_SUPPORT = Shape(topic="finance", tokens_median=260.0, latency_median_ms=300.0)
DRIFTING, REGRESSING, HEALTHY_DOMAIN = "support", "legal", "medical"


@dataclass
class Settings:
    out: Path = Path("demo-out")
    rate: float = 40.0              # records per second per domain
    speedup: float = 20.0           # rule `for:` and `interval:` divided by this
    max_seconds: float = 300.0      # the scenario gives up after this long
    rollout_at: float = 45.0        # legal's corrupted v2 is made active
    drift_at: float = 50.0          # support's prompts start drifting
    reference_records: int = 1200
    window_seconds: int = 60
    bucket_seconds: int = 5
    quiet_seconds: float = 10.0     # kept running after the loop closed
    malformed_every: int = 400      # 0.25% bad records: they go to the dead-letter topic
    port: int = 9464
    cache: Path = REPO / ".cache" / "tiny"
    report: bool = True
    charts: bool = True
    echo: bool = True
    extra_env: dict = field(default_factory=dict)
    extra_config: str = ""          # YAML appended to demo-out/monitor.yaml (tests)

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        s = cls()
        s.out = Path(env.get("DEMO_OUT", str(s.out)))
        for name, cast in (("rate", float), ("speedup", float), ("max_seconds", float),
                           ("rollout_at", float), ("drift_at", float),
                           ("reference_records", int), ("window_seconds", int), ("port", int)):
            key = f"DEMO_{name.upper()}"
            if key in env:
                try:
                    setattr(s, name, cast(env[key]))
                except ValueError:
                    raise SystemExit(f"demo: {key}={env[key]!r} is not a number") from None
        return s


# -- preparing the folder ------------------------------------------------------------------

def scaled_rules(source: Path, target: Path, speedup: float) -> list[Path]:
    """Copy every rule file of `source` into `target` with `for:`,
    `keep_firing_for:` and `interval:` divided by `speedup` (at least 1s); the
    expressions are unchanged. Returns the written files."""
    from monitor.rules.files import format_duration, parse_duration

    pattern = re.compile(r"^(\s*(?:for|keep_firing_for|interval):\s*)(\S+)(.*)$")

    def scale(match: re.Match) -> str:
        ms = parse_duration(match.group(2))
        scaled = max(1000, int(round(ms / speedup / 1000.0)) * 1000) if ms else 0
        return f"{match.group(1)}{format_duration(scaled)}{match.group(3)}"

    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source.glob("*.y*ml")):
        lines = [pattern.sub(scale, line) for line in path.read_text().splitlines()]
        note = (f"# Copied by the demo from {path.name} with for:/interval: divided by "
                f"{speedup:g}.\n")
        out = target / path.name
        out.write_text(note + "\n".join(lines) + "\n")
        written.append(out)
    return written


REGISTRY = """\
# The demo's registry: the tiny models of monitor.eval.tiny, copied here.
base_models:
  tiny-llama: {{path: {base}}}
domains:
  legal:
    base_model: tiny-llama
    kind: lora
    active: v1
    golden_set: legal/golden.jsonl
    versions:
      v1: {{path: legal/v1, status: good}}
      v2: {{path: legal/v2}}   # corrupted: the demo rolls it out anyway
  support:
    base_model: tiny-llama
    kind: lora
    active: v1
    golden_set: support/golden.jsonl
    versions:
      v1: {{path: support/v1, status: good}}
  medical:
    base_model: tiny-llama
    kind: full
    active: v1
    golden_set: medical/golden.jsonl
    versions:
      v1: {{path: medical/v1, status: good}}
"""

CONFIG = """\
# The demo's configuration: embedded defaults except for the time scale.
kafka:
  topic: {topic}
  group: demo
  session_timeout_ms: 6000
  heartbeat_interval_ms: 1000
state:
  url: sqlite:///state.db
http:
  address: 127.0.0.1:{port}
windows:
  bucket_seconds: {bucket}
  length_seconds: {window}
  allowed_lateness_seconds: 60
drift:
  reference_records: {reference}
  evaluation_interval_seconds: {bucket}
  min_samples: 300
rules:
  paths: [rules/]
registry:
  path: adapters/registry.yaml
eval:
  threads: 1
  bootstrap_resamples: 2000
actions:
  retrain:
    snapshot_dir: snapshots
"""


def prepare(settings: Settings, log=print) -> Path:
    """Build (or reuse) the tiny models; write demo-out/ with adapters, registry,
    configuration and rules. Returns the registry path."""
    from monitor.eval.tiny import build

    out = settings.out
    models = build(settings.cache, log=lambda line: log(f"    {line}"))
    adapters = out / "adapters"
    for domain, versions in (("legal", ("v1", "v2")), ("support", ("v1",)), ("medical", ("v1",))):
        (adapters / domain).mkdir(parents=True, exist_ok=True)
        shutil.copy2(models.root / "adapters" / domain / "golden.jsonl", adapters / domain)
        for version in versions:
            shutil.copytree(models.root / "adapters" / domain / version, adapters / domain / version)
    registry = adapters / "registry.yaml"
    registry.write_text(REGISTRY.format(base=json.dumps(str(models.base))))  # quoted YAML
    (out / "monitor.yaml").write_text(CONFIG.format(
        topic=TOPIC, port=settings.port, bucket=settings.bucket_seconds,
        window=settings.window_seconds, reference=settings.reference_records)
        + settings.extra_config)
    scaled_rules(DEFAULT_RULES, out / "rules", settings.speedup)
    return registry


# -- traffic ---------------------------------------------------------------------------------

class Traffic:
    """Records of the three domains at `rate` per second each, event time = now."""

    def __init__(self, bootstrap: str, rate: float, malformed_every: int, seed: int = 5):
        from kafka import KafkaProducer

        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all",
                                      batch_size=256 * 1024)
        self.rate = rate
        self.malformed_every = malformed_every
        self.rng = random.Random(seed)
        self.pool = PromptPool(size=300, chars_median=400.0, seed=seed)
        self.shapes = dict(HEALTHY)
        self.sent = self.malformed = 0
        self.carry = 0.0

    def send(self, start: float, end: float) -> None:
        """The records of event times [start, end), evenly spread."""
        self.carry += (end - start) * self.rate
        n, self.carry = int(self.carry), self.carry - int(self.carry)
        for i in range(n):
            t = start + (end - start) * i / max(n, 1)
            for domain, shape in sorted(self.shapes.items()):
                self.sent += 1
                if self.malformed_every and self.sent % self.malformed_every == 0:
                    raw, _ = MALFORMED[(self.sent // self.malformed_every) % len(MALFORMED)]
                    self.producer.send(TOPIC, value=raw)
                    self.malformed += 1
                    continue
                text = self.rng.choice(self.pool.texts(shape.topic))
                record = shaped_record(self.rng, domain, t, shape, text, self.sent)
                self.producer.send(TOPIC, key=domain.encode(), value=orjson.dumps(record))
        self.producer.flush(timeout=30)

    def close(self) -> None:
        self.producer.close(timeout=10)


# -- the daemon ------------------------------------------------------------------------------

class Daemon:
    """`monitor run` in its own session (so that its fetcher and eval worker
    are stopped with it), working directory demo-out/."""

    def __init__(self, out: Path, bootstrap: str, port: int, extra_env: dict):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
        env.update(MONITOR_KAFKA_BOOTSTRAP_SERVERS=bootstrap, **extra_env)
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = out / "daemon.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "--config", "monitor.yaml"],
                cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 120.0) -> None:
        from monitor.demo.timeline import get

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            try:
                get(self.url + "/-/ready", timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        raise DemoError(f"the daemon was not ready within {timeout:.0f}s; see {self.log_path}")

    def check(self) -> None:
        if self.process.poll() is not None:
            raise DemoError(f"the daemon exited with status {self.process.returncode}; "
                            f"see {self.log_path}")

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then SIGKILL of the whole process group; the daemon's status."""
        status = self.process.poll()
        if status is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                status = self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                status = None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # children left behind, if any
        except (ProcessLookupError, PermissionError):
            pass
        if status is None:
            status = self.process.wait(timeout=10)
        return status


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and where to look."""


# -- the scenario ----------------------------------------------------------------------------

class Demo:
    def __init__(self, settings: Settings):
        self.s = settings
        self.broker: LocalBroker | None = None
        self.daemon: Daemon | None = None
        self.traffic: Traffic | None = None
        self.timeline = None
        self.watcher = None
        self.start = 0.0
        self.registry: Path | None = None

    def say(self, text: str) -> None:
        if self.s.echo:
            print(text, flush=True)

    # 1-3
    def setup(self) -> None:
        from monitor.demo.timeline import Timeline, Watcher

        out = self.s.out
        if out.exists() and any(out.iterdir()):
            if not (out / MARKER).is_file():
                raise DemoError(f"{out} is not empty and was not made by the demo: choose "
                                "another DEMO_OUT (the demo empties its folder first)")
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("made by `make demo` (python -m monitor.demo); emptied by "
                                  "its next run\n")
        if self.s.port == 0 or _port_taken(self.s.port):
            self.s.port = free_port()
        self.say("building the tiny models (cached in .cache/tiny after the first run) ...")
        began = time.monotonic()
        self.registry = prepare(self.s, log=self.say)
        self.say(f"  ready in {time.monotonic() - began:.0f}s: {self.registry}")
        self.say("starting the local broker (Tansu) ...")
        self.broker = LocalBroker(log_path=str(out / "broker.log")).start()
        self.broker.create_topic(TOPIC, partitions=3)
        self.say(f"starting the daemon: monitor run (broker {self.broker.bootstrap_servers}, "
                 f"rules {out / 'rules'}: the default pack, for:/interval: divided by "
                 f"{self.s.speedup:g})")
        self.daemon = Daemon(out, self.broker.bootstrap_servers, self.s.port, self.s.extra_env)
        self.daemon.wait_ready()
        self.say(f"  ready: operator page {self.daemon.url}/ , metrics {self.daemon.url}/metrics")
        self.traffic = Traffic(self.broker.bootstrap_servers, self.s.rate, self.s.malformed_every)
        self.start = time.time()
        self.timeline = Timeline(self.start, out / "timeline.jsonl", echo=self.s.echo)
        self.watcher = Watcher(self.daemon.url, self.timeline)

    # 4
    def run(self) -> bool:
        """Stream traffic and follow the daemon until the loop closed (or the cap)."""
        from monitor.registry import set_active

        s, tl = self.s, self.timeline
        self.say(f"\nstreaming {s.rate:g} records/s for each of legal, support, medical "
                 f"(1 in {s.malformed_every} malformed); the timeline:\n")
        tl.emit("scenario", "", f"traffic starts; each domain's first {s.reference_records} "
                "records become its drift reference")
        rolled_out = drifting = False
        closed_at = None
        last = self.start
        next_progress = 30.0
        while True:
            now = time.time()
            self.traffic.send(last, now)
            last = now
            elapsed = now - self.start
            if not rolled_out and elapsed >= s.rollout_at:
                set_active(self.registry, REGRESSING, "v2")
                tl.emit("scenario", REGRESSING, "v2 rolled out by hand (registry edited), "
                        "skipping the promotion gate", mark="v2 rolled out")
                rolled_out = True
            if not drifting and elapsed >= s.drift_at:
                self.traffic.shapes[DRIFTING] = DRIFTED_SUPPORT
                tl.emit("scenario", DRIFTING, "prompts start drifting: about finance, "
                        "twice as long", mark="prompts drift")
                drifting = True
            self.daemon.check()
            self.watcher.poll()
            if elapsed >= next_progress:
                next_progress += 30.0
                total = sum(v for _, v in self.watcher.values("monitor_records_total"))
                rejected = sum(v for _, v in self.watcher.values("monitor_records_rejected_total"))
                tl.emit("progress", "", f"{self.traffic.sent} records sent, the daemon accepted "
                        f"{int(total)} and sent {int(rejected)} to {TOPIC}.dlq")
            if closed_at is None and self.closed():
                closed_at = elapsed
                tl.emit("scenario", "", "the loop closed: the regression rolled back, the drift "
                        f"asked for a retrain; {s.quiet_seconds:g}s more to show {HEALTHY_DOMAIN} "
                        "stays quiet")
            if closed_at is not None and elapsed >= closed_at + s.quiet_seconds:
                return True
            if elapsed >= s.max_seconds:
                tl.emit("scenario", "", f"stopped after {s.max_seconds:g}s without the loop "
                        "closing; see daemon.log")
                return False
            time.sleep(max(0.0, 1.0 - (time.time() - now)))

    def closed(self) -> bool:
        done = {(e.domain, e.data.get("action")) for e in self.timeline.of("action")
                if e.data.get("status") == "executed"}
        return {(REGRESSING, "rollback"), (DRIFTING, "retrain")} <= done

    # 5
    def finish(self) -> list[str]:
        """Charts (while the daemon runs), stop it, the Evidently report; what was written."""
        out, written = self.s.out, []
        end = time.time()
        if self.s.charts:
            import monitor.drift  # noqa: F401  (registers the methods)
            from monitor.demo.charts import drift_chart, golden_chart, marks_of
            from monitor.drift.methods import METHODS

            try:
                written.append(str(drift_chart(
                    self.daemon.url, DRIFTING, [REGRESSING, HEALTHY_DOMAIN], self.start, end,
                    METHODS["psi"].default_threshold, marks_of(self.timeline.events, {DRIFTING}),
                    out / "drift-score.png")))
                written.append(str(golden_chart(
                    self.daemon.url, self.start, end, marks_of(self.timeline.events, {REGRESSING}),
                    out / "golden-score.png")))
            except Exception as exc:  # a chart is not worth losing the rest of the demo
                self.say(f"charts not written: {exc.__class__.__name__}: {exc}")
        if self.traffic is not None:
            self.traffic.close()
            self.traffic = None
        status = self.daemon.stop()
        self.say(f"\ndaemon stopped (exit status {status})")
        if self.s.report:
            report = out / f"drift-report-{DRIFTING}.html"
            done = subprocess.run(
                [sys.executable, "-m", "monitor", "report", "--domain", DRIFTING,
                 "--out", report.name, "--config", "monitor.yaml"],
                cwd=out, capture_output=True, text=True, timeout=300,
                env={k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")})
            self.say((done.stdout + done.stderr).rstrip())
            if done.returncode == 0:
                written.append(str(report))
        return written

    def close(self) -> None:
        if self.traffic is not None:
            try:
                self.traffic.close()
            except Exception:
                pass
        if self.daemon is not None:
            self.daemon.stop(timeout=30)
        if self.broker is not None:
            self.broker.stop()


def _port_taken(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def summary(demo: Demo, written: list[str], ok: bool) -> str:
    tl, out = demo.timeline, demo.s.out
    quiet = [e for e in tl.events if e.domain == HEALTHY_DOMAIN
             and e.kind in ("alert_pending", "alert_firing", "action", "drift_detected")]
    lines = ["", "what happened:"]
    for domain, what in ((DRIFTING, "drift detected -> retrain requested"),
                         (REGRESSING, "golden-set regression -> rollback executed"),
                         (HEALTHY_DOMAIN, "healthy -> nothing")):
        lines.append(f"  {domain:<9} {what}: "
                     + _outcome(tl, domain, "retrain" if domain == DRIFTING else
                                "rollback" if domain == REGRESSING else None, quiet))
    lines += ["", f"everything is in {out}/:",
              "  timeline.jsonl          the timeline above, one JSON event per line",
              "  drift-score.png         drift scores over time (the daemon's own series)",
              "  golden-score.png        golden-set NLL of the serving version over time",
              f"  drift-report-{DRIFTING}.html  the Evidently drift report of {DRIFTING}'s window",
              "  adapters/registry.yaml  the registry the rollback rewrote",
              "  snapshots/              the records attached to the retrain request",
              "  state.db                the daemon's state (offsets, windows, alerts, audit)",
              "  rules/ monitor.yaml     the rules and configuration the daemon ran with",
              "  daemon.log broker.log   logs",
              f"  who did what:           cd {out} && {Path(sys.executable).parent}/monitor audit"
              " (or adapters list)"]
    missing = [w for w in ("drift-score.png", "golden-score.png",
                           f"drift-report-{DRIFTING}.html") if not any(p.endswith(w) for p in written)]
    if missing:
        lines.append(f"  (not written: {', '.join(missing)})")
    lines.append("" if ok else "\nthe loop did not close in time: see daemon.log")
    return "\n".join(lines)


def _outcome(tl, domain: str, action: str | None, quiet: list) -> str:
    if action is None:
        return "quiet, as expected" if not quiet else f"NOT quiet: {quiet[0].text}"
    done = [e for e in tl.of("action", domain)
            if e.data.get("action") == action and e.data.get("status") == "executed"]
    return f"yes, at {done[0].t:.0f}s" if done else "NO"


def _terminated(signum, frame):
    raise KeyboardInterrupt  # unwinds through `finally: demo.close()`


def main() -> int:
    signal.signal(signal.SIGTERM, _terminated)
    settings = Settings.from_env()
    demo = Demo(settings)
    ok = False
    written: list[str] = []
    try:
        demo.setup()
        ok = demo.run()
        written = demo.finish()
        ok = ok and not [e for e in demo.timeline.events if e.domain == HEALTHY_DOMAIN and e.kind
                         in ("alert_pending", "alert_firing", "action", "drift_detected")]
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    finally:
        demo.close()
    if demo.timeline is not None:
        print(summary(demo, written, ok), flush=True)
    return 0 if ok else 1
