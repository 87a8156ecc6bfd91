"""The HTTP endpoint (DESIGN.md §9): /metrics, /-/healthy, /-/ready.

One port, 127.0.0.1:9464 by default. Served from a background thread; the
handlers only read the published snapshot and the readiness flag.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger(__name__)


class MonitorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, registry: CollectorRegistry,
                 ready: Callable[[], tuple[bool, str]]):
        self.registry = registry
        self.ready = ready
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: MonitorHTTPServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds an idle keep-alive connection may hold a thread

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/-/healthy":
            self._reply(200, b"Healthy.\n")
        elif path == "/-/ready":
            ok, why = self.server.ready()
            self._reply(200 if ok else 503, (why + "\n").encode())
        else:
            self._reply(404, b"Not found. Try /metrics, /-/healthy or /-/ready.\n")

    def do_HEAD(self):
        self.do_GET()

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, fmt, *args):
        log.debug("http %s " + fmt, self.address_string(), *args)
