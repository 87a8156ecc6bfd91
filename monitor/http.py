"""The HTTP endpoint (DESIGN.md §9).

One port, 127.0.0.1:9464 by default, served from a background thread:
`GET /metrics`, `GET /-/healthy`, `GET /-/ready`, `GET /api/v1/alerts`
(Prometheus' shape), `POST /-/reload`, `GET /api/v1/actions` (pending ones;
`?status=all` or a status, `&domain=D`) and `POST /api/v1/actions/{id}/approve`
or `/reject` (docs/actions.md). Mutating endpoints need
`Authorization: Bearer $MONITOR_API_TOKEN`; without a token configured they
answer 403 (disabled), with a wrong or missing one 401.
"""

from __future__ import annotations

import hmac
import json
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
                 ready: Callable[[], tuple[bool, str]], *,
                 reload: Callable[[], tuple[bool, list[str]]] | None = None,
                 alerts: Callable[[], list[dict]] | None = None, token: str | None = None,
                 actions: Callable[[], object] | None = None):
        """`actions()` gives the daemon's ActionService (None until state is loaded)."""
        self.registry = registry
        self.actions = actions
        self.ready = ready
        self.reload = reload
        self.alerts = alerts
        self.token = token
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
        elif path == "/api/v1/alerts" and self.server.alerts is not None:
            self._json(200, {"status": "success", "data": {"alerts": self.server.alerts()}})
        elif path == "/api/v1/actions" and self.server.actions is not None:
            self._list_actions()
        else:
            self._reply(404, b"Not found. Try /metrics, /-/healthy, /-/ready or /api/v1/alerts.\n")

    def do_HEAD(self):
        self.do_GET()

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 1 << 20))
        if path == "/-/reload" and self.server.reload is not None:
            if not self._authorized():
                return
            ok, errors = self.server.reload()
            if ok:
                self._reply(200, b"Rules reloaded.\n")
            else:
                body = "Rules not reloaded; the previous rules keep running.\n" + "\n".join(errors)
                self._reply(500, (body + "\n").encode())
        elif (path.startswith("/api/v1/actions/") and path.endswith(("/approve", "/reject"))
              and self.server.actions is not None):
            if not self._authorized():
                return
            action_id, _, verb = path.removeprefix("/api/v1/actions/").rpartition("/")
            self._decide(action_id, verb)
        else:
            self._reply(404, b"Not found. POST /-/reload or /api/v1/actions/{id}/approve.\n")

    def _service(self):
        service = self.server.actions()
        if service is None:
            self._json(503, {"status": "error", "error": "not ready: loading state"})
        return service

    def _list_actions(self) -> None:
        from urllib.parse import parse_qs

        from monitor.actions import model as m
        from monitor.actions.commands import public

        service = self._service()
        if service is None:
            return
        query = parse_qs(self.path.partition("?")[2])
        status = query.get("status", [m.PENDING_APPROVAL])[0]
        if status != "all" and status not in m.STATUSES:
            self._json(400, {"status": "error", "error": f"unknown status {status!r} (all, "
                                                         f"{', '.join(m.STATUSES)})"})
            return
        rows = service.actions.list(status=None if status == "all" else status,
                                    domain=query.get("domain", [None])[0], limit=500)
        self._json(200, {"status": "success", "data": {"actions": [public(a) for a in rows]}})

    def _decide(self, action_id: str, verb: str) -> None:
        from monitor.actions.commands import public
        from monitor.actions.model import ActionError
        from monitor.errors import MonitorError

        service = self._service()
        if service is None:
            return
        actor = "token:api"
        try:
            action = (service.approve if verb == "approve" else service.reject)(action_id, actor)
        except ActionError as exc:
            status = {"not_found": 404, "not_pending": 409, "conflict": 409}.get(exc.reason, 422)
            doc = {"status": "error", "error": str(exc)}
            found = service.actions.get(action_id) if exc.reason not in ("not_found",) else None
            if found is not None:
                doc["data"] = public(found)
            self._json(status, doc)
            return
        except MonitorError as exc:  # the state store is busy or down, the registry unwritable
            log.error("%s of action %s failed: %s", verb, action_id, exc)
            self._json(503, {"status": "error", "error": str(exc)})
            return
        except Exception as exc:
            log.exception("%s of action %s failed", verb, action_id)
            self._json(500, {"status": "error", "error": f"{exc.__class__.__name__}: {exc}"})
            return
        self._json(200, {"status": "success", "data": public(action)})

    def _authorized(self) -> bool:
        token = self.server.token
        if not token:
            self._reply(403, b"Disabled: set MONITOR_API_TOKEN to enable mutating endpoints.\n")
            return False
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(),
                                                                 token.encode()):
            self.send_response(401)
            body = b"Unauthorized: send Authorization: Bearer <MONITOR_API_TOKEN>.\n"
            self.send_header("WWW-Authenticate", 'Bearer realm="monitor"')
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return False
        return True

    def _json(self, status: int, doc) -> None:
        self._reply(status, json.dumps(doc).encode(), "application/json")

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, fmt, *args):
        log.debug("http %s " + fmt, self.address_string(), *args)
