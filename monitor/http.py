"""The HTTP endpoint (DESIGN.md §9).

One port, 127.0.0.1:9464 by default, served from a background thread:

- `GET /` (or `/index.html`): the operator page (monitor/static/operator.html):
  domains, alerts, pending approvals with Approve / Reject, recent actions;
- `GET /metrics`, `GET /-/healthy`, `GET /-/ready`, `POST /-/reload`;
- `GET /api/v1/alerts` (Prometheus' shape);
- `GET /api/v1/query?query=Q[&time=T]` and
  `GET /api/v1/query_range?query=Q&start=S&end=E&step=STEP` (Prometheus' shape,
  also POSTed as a form): PromQL over the daemon's own series (monitor.query_api);
- `GET /api/v1/domains`: the registry's domains, active versions, latest verdicts;
- `GET /api/v1/actions` (pending ones; `?status=all` or a status, `&domain=D`)
  and `POST /api/v1/actions/{id}/approve` or `/reject` (docs/actions.md).

Mutating endpoints need `Authorization: Bearer $MONITOR_API_TOKEN`; without a
token configured they answer 403 (disabled), with a wrong or missing one 401.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger(__name__)

# The operator page: inline script and style only, no other origin, no framing.
PAGE_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline'; "
     "style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
     "form-action 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
_page: bytes | None = None


def operator_page() -> bytes:
    """monitor/static/operator.html, read once (package data)."""
    global _page
    if _page is None:
        from importlib.resources import files

        _page = files("monitor").joinpath("static", "operator.html").read_bytes()
    return _page


class MonitorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, registry: CollectorRegistry,
                 ready: Callable[[], tuple[bool, str]], *,
                 reload: Callable[[], tuple[bool, list[str]]] | None = None,
                 alerts: Callable[[], list[dict]] | None = None, token: str | None = None,
                 actions: Callable[[], object] | None = None,
                 domains: Callable[[], list[dict]] | None = None, query=None):
        """`actions()` gives the daemon's ActionService (None until state is loaded);
        `domains()` the rows of /api/v1/domains (monitor.query_api.domains_view);
        `query` a monitor.query_api.QueryAPI over the rule engine's series."""
        self.registry = registry
        self.actions = actions
        self.domains = domains
        self.query = query
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
        if path in ("/", "/index.html"):
            self._reply(200, operator_page(), "text/html; charset=utf-8", PAGE_HEADERS)
        elif path == "/metrics":
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
        elif path == "/api/v1/domains":
            self._list_domains()
        elif path in ("/api/v1/query", "/api/v1/query_range") and self.server.query is not None:
            self._query(path, self._params(self.path.partition("?")[2]))
        else:
            self._reply(404, b"Not found. The operator page is at /; try also /metrics, "
                             b"/-/healthy, /-/ready, /api/v1/alerts, /api/v1/actions, "
                             b"/api/v1/domains or /api/v1/query_range.\n")

    def do_HEAD(self):
        self.do_GET()

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._reply(400, b"Bad Content-Length.\n")
            return
        if length > 1 << 20:
            self.close_connection = True  # the rest is not read: never parse it as a request
        body = self.rfile.read(min(length, 1 << 20)) if length else b""
        if path in ("/api/v1/query", "/api/v1/query_range") and self.server.query is not None:
            # As Prometheus: a form body (what Grafana sends), the URL's parameters too.
            params = self._params(body.decode("utf-8", "replace"))
            for key, value in self._params(self.path.partition("?")[2]).items():
                params.setdefault(key, value)
            self._query(path, params)
        elif path == "/-/reload" and self.server.reload is not None:
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

    @staticmethod
    def _params(query_string: str) -> dict[str, str]:
        """Each parameter's first value."""
        return {k: v[0] for k, v in parse_qs(query_string, keep_blank_values=True).items()}

    def _query(self, path: str, params: dict[str, str]) -> None:
        api = self.server.query
        status, doc = (api.query_range if path.endswith("_range") else api.query)(params)
        self._json(status, doc)

    def _list_domains(self) -> None:
        try:
            rows = self.server.domains() if self.server.domains is not None else []
        except Exception as exc:  # the state store is busy or closing
            log.warning("/api/v1/domains: %s", exc)
            self._json(503, {"status": "error", "error": f"{exc.__class__.__name__}: {exc}"})
            return
        self._json(200, {"status": "success", "data": {"domains": rows}})

    def _service(self):
        service = self.server.actions()
        if service is None:
            self._json(503, {"status": "error", "error": "not ready: loading state"})
        return service

    def _list_actions(self) -> None:
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
        self._json(200, {"status": "success",
                         "data": {"actions": [_with_plan(service, a, public(a)) for a in rows]}})

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

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
               headers: tuple[tuple[str, str], ...] = ()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, fmt, *args):
        log.debug("http %s " + fmt, self.address_string(), *args)


def _with_plan(service, action: dict, shown: dict) -> dict:
    """A pending rollback or promotion shows what approving it would change now:
    `plan` {from, to, why} (as a dry run's), or `plan_error` when it could not run."""
    from monitor.actions import model as m
    from monitor.actions.model import ActionError

    if (action["status"] != m.PENDING_APPROVAL or action["action"] not in (m.ROLLBACK, m.PROMOTE)
            or "plan" in shown):
        return shown
    try:
        shown["plan"] = service.executor.dry_plan(action)
    except ActionError as exc:
        shown["plan_error"] = str(exc)
    except Exception as exc:  # an unreadable registry: the list is still served
        shown["plan_error"] = f"{exc.__class__.__name__}: {exc}"
    return shown
