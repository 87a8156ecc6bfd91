"""Kafka fetching in a child process, so that kafka-python's per-record work
(batch decoding, CRC checks, record objects) runs on another core than the
pipeline. `FetcherSource` is the daemon-side half; it has the same interface
as `KafkaSource` (poll / commit / pause / resume / lag / close).

Protocol over one duplex pipe, in order:

    child -> daemon: ("run", Run)            records of one partition
                     ("assigned", [tp...])   daemon answers ("offsets", {tp: next})
                     ("revoked", [tp...])    daemon flushes state, answers ("ack",)
                     ("lag", {tp: lag})
                     ("failed", text)        the child is exiting on an error
    daemon -> child: ("commit", {tp: next}), ("pause",), ("resume",), ("stop",)

Order is what keeps exactly-once: every run sent before "revoked" reaches the
daemon (and is processed) before the daemon flushes for that revocation.
The child keeps at most OUTBOX_RUNS runs queued for the daemon: a daemon that
falls behind stops the child's polling, so memory stays bounded. If either side
dies, the other sees the pipe close: the child leaves the group and exits;
the daemon stops with an error and its restart reloads consistent state.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import signal
import threading
import time
from typing import Callable

from monitor.config import KafkaConfig
from monitor.logs import configure_logging
from monitor.ingest.source import Run

log = logging.getLogger(__name__)

LAG_INTERVAL_SECONDS = 5.0
OUTBOX_RUNS = 16


class FetcherDied(RuntimeError):
    """The fetcher process exited or failed; the daemon must stop."""


class FetcherSource:
    """Daemon-side proxy for the fetcher process."""

    def __init__(self, config: KafkaConfig, stored_offsets: Callable[[list], dict],
                 on_revoked: Callable[[list], None], log_level: int = logging.INFO):
        self.stored_offsets = stored_offsets
        self.on_revoked = on_revoked
        self.assigned = False
        self.paused = False
        self._lag: dict = {}
        self._held: list = []  # control messages waiting until returned runs are processed
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe(duplex=True)
        self.process = context.Process(target=_child_main, args=(config, child_conn, log_level),
                                       name="monitor-fetcher", daemon=True)
        self.process.start()
        child_conn.close()

    # -- the source interface ------------------------------------------------
    def poll(self, timeout_ms: int) -> list[Run]:
        for message in self._held:
            self._control(message)
        self._held = []
        runs: list[Run] = []
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            wait = 0.0 if runs else max(0.0, deadline - time.monotonic())
            if not self._conn.poll(wait):
                return runs
            message = self._recv()
            if message[0] == "run":
                runs.append(message[1])
                if len(runs) >= 8:
                    return runs
            elif runs:
                # Control messages act only after the runs before them are processed.
                self._held.append(message)
                return runs
            else:
                self._control(message)

    def commit(self, offsets: dict) -> None:
        try:
            self._send(("commit", dict(offsets)))
        except FetcherDied as exc:  # Kafka's copy of the offsets is informational only
            log.warning("offsets not committed to Kafka: %s", exc)

    def pause(self) -> None:
        self.paused = True
        self._send(("pause",))

    def resume(self) -> None:
        self.paused = False
        self._send(("resume",))

    def lag(self) -> dict:
        return dict(self._lag)

    def close(self, timeout: float = 30.0) -> None:
        """Ask the child to leave the group; answer its revocation; wait for it."""
        try:
            # A held rebalance message means the child is blocked waiting for our answer.
            held, self._held = self._held, []
            for message in held:
                if message[0] in ("revoked", "assigned"):
                    self._control(message)
            self._send(("stop",))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._conn.poll(max(0.0, deadline - time.monotonic())):
                message = self._recv()
                if message[0] in ("revoked", "assigned"):
                    self._control(message)
                # Runs that arrive now are not processed; their offsets are not
                # committed, so they are read again after a restart.
        except FetcherDied:
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._conn.close()

    # -- internals -----------------------------------------------------------
    def _control(self, message: tuple) -> None:
        kind = message[0]
        if kind == "assigned":
            partitions = message[1]
            self._send(("offsets", self.stored_offsets(partitions)))
            self.assigned = True
        elif kind == "revoked":
            self.on_revoked(message[1])
            self._send(("ack",))
        elif kind == "lag":
            self._lag = message[1]
        elif kind == "failed":
            raise FetcherDied(f"Kafka fetcher failed: {message[1]}")

    def _recv(self):
        try:
            return self._conn.recv()
        except (EOFError, OSError) as exc:
            raise FetcherDied(f"Kafka fetcher exited (status {self.process.exitcode})") from exc

    def _send(self, message: tuple) -> None:
        try:
            self._conn.send(message)
        except (BrokenPipeError, OSError) as exc:
            raise FetcherDied("Kafka fetcher is gone") from exc


# -- the child process --------------------------------------------------------
def _child_main(config: KafkaConfig, conn, log_level: int) -> None:
    # The daemon decides when to stop (and tells us over the pipe); a Ctrl-C or
    # SIGTERM sent to the whole process group must not cut a rebalance in half.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(log_level)
    _Child(config, conn).run()


class _Child:
    def __init__(self, config: KafkaConfig, conn):
        self.config = config
        self.conn = conn
        # Everything to the daemon goes through one bounded queue, drained by one
        # thread: Kafka polling goes on while the daemon is busy with earlier runs
        # (up to OUTBOX_RUNS ahead), and control messages keep their place in line.
        self.outbox: queue.Queue = queue.Queue(maxsize=OUTBOX_RUNS)
        self.replies: queue.Queue = queue.Queue()
        self.commands: queue.Queue = queue.Queue()
        self.stop = threading.Event()

    def send(self, message: tuple) -> None:
        while not self.stop.is_set():
            try:
                self.outbox.put(message, timeout=0.5)
                return
            except queue.Full:
                continue
        raise FetcherDied("daemon is gone")

    def write_outbox(self) -> None:
        try:
            while True:
                message = self.outbox.get()
                if message is None:
                    return
                self.conn.send(message)
        except OSError:
            self.stop.set()
            self.replies.put(None)

    def read_commands(self) -> None:
        """The only reader of the pipe: replies go to the waiting callback,
        commands to the fetch loop. End of pipe = the daemon is gone."""
        try:
            while True:
                message = self.conn.recv()
                (self.replies if message[0] in ("offsets", "ack") else self.commands).put(message)
        except (EOFError, OSError):
            self.stop.set()
            self.replies.put(None)

    def ask(self, message: tuple):
        self.send(message)
        reply = self.replies.get()
        if reply is None:
            raise FetcherDied("daemon is gone")
        return reply

    def run(self) -> None:
        from monitor.ingest.kafka import KafkaSource

        threading.Thread(target=self.read_commands, name="commands", daemon=True).start()
        writer = threading.Thread(target=self.write_outbox, name="outbox", daemon=True)
        writer.start()
        source = None
        try:
            source = KafkaSource(self.config, stored_offsets=lambda tps: self.ask(("assigned", tps))[1],
                                 on_revoked=lambda tps: self.ask(("revoked", tps)))
            next_lag = time.monotonic() + 1.0
            while not self.stop.is_set():
                if self._commands(source):
                    break
                for run in source.poll(timeout_ms=100):
                    self.send(("run", run))
                if time.monotonic() >= next_lag:
                    self.send(("lag", source.lag()))
                    next_lag = time.monotonic() + LAG_INTERVAL_SECONDS
        except (BrokenPipeError, EOFError, FetcherDied):
            return  # the daemon is gone; nothing to report to
        except Exception as exc:  # report, then exit: the daemon decides what to do
            log.exception("fetcher failed")
            try:
                self.send(("failed", f"{exc.__class__.__name__}: {exc}"))
            except FetcherDied:
                pass
        finally:
            if source is not None:
                try:
                    source.close()
                except Exception as exc:
                    log.debug("closing the consumer: %s", exc)
            # Wake the writer to finish; if the daemon is gone (outbox full, pipe
            # broken), send() gives up instead of waiting for room that never comes.
            try:
                self.send(None)
            except FetcherDied:
                pass
            writer.join(timeout=10)

    def _commands(self, source) -> bool:
        """Apply queued commands; True when asked to stop."""
        while True:
            try:
                message = self.commands.get_nowait()
            except queue.Empty:
                return False
            kind = message[0]
            if kind == "commit":
                source.commit(message[1])
            elif kind == "pause":
                source.pause()
            elif kind == "resume":
                source.resume()
            elif kind == "stop":
                return True
