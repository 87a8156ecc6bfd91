"""Outbox messages for the outside world, and how each is sent.

A message is `{"kind", "target", "payload"}` (see `ActionStore._outbox`):

- `kafka`: `payload` = {"key": domain, "value": the event}, to the topic `target`;
- `http`: `payload` = {"method", "url", "body", "auth", "ok_statuses"}; `auth`
  names the secret to send as a bearer token (`serving_hook`: the environment's
  MONITOR_SERVING_HOOK_TOKEN), never stored in the state store;
- `command`: `payload` = {"argv", "stdin"}: run with the JSON on stdin.

`serving_messages` turns a change of a domain's active version into the calls
of the configured serving hook: `generic` POSTs the control event to its URL;
`vllm` uses vLLM's dynamic LoRA endpoints (the server runs with
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True): unload the adapter named after the
domain (a 400 or 404, "not loaded", is fine), then load the new version's
folder under the same name, so clients keep asking for `model: <domain>`.
"""

from __future__ import annotations

import json
import logging
import subprocess
import urllib.error
import urllib.request

from monitor.config import ActionsConfig

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_SECONDS = 120.0


class DeliveryError(RuntimeError):
    """A message was not delivered; the message is safe to log (no secrets)."""


def kafka_message(topic: str, key: str, event: dict) -> dict:
    return {"kind": "kafka", "target": topic, "payload": {"key": key, "value": event}}


def http_message(url: str, body: dict, auth: str | None = None,
                 ok_statuses: tuple[int, ...] = ()) -> dict:
    return {"kind": "http", "target": url,
            "payload": {"method": "POST", "url": url, "body": body, "auth": auth,
                        "ok_statuses": list(ok_statuses)}}


def command_message(argv: list[str], body: dict) -> dict:
    return {"kind": "command", "target": " ".join(argv)[:1024],
            "payload": {"argv": list(argv), "stdin": body}}


def describe_target(message: dict) -> str:
    """Where a message goes, safe to show (no credentials, no arguments)."""
    if message["kind"] == "http":
        return _safe(message["target"])
    if message["kind"] == "command":
        return f"command {message['payload']['argv'][0]}"
    return f"topic {message['target']}"


def serving_messages(config: ActionsConfig, event: dict) -> list[dict]:
    """The serving hook's calls for a control event (none without a hook)."""
    hook = config.serving_hook
    if not hook.url:
        return []
    if hook.preset == "generic":
        return [http_message(hook.url, event, auth="serving_hook")]
    if event.get("kind") != "lora":
        log.warning("domain %s: the vllm serving hook loads LoRA adapters only; %s is a full "
                    "model (%s), restart the server with it", event["domain"], event["to"],
                    event.get("path"))
        return []
    base = hook.url.rstrip("/")
    name = event["domain"]
    return [
        http_message(f"{base}/v1/unload_lora_adapter", {"lora_name": name},
                     auth="serving_hook", ok_statuses=(400, 404)),
        http_message(f"{base}/v1/load_lora_adapter",
                     {"lora_name": name, "lora_path": event["path"]}, auth="serving_hook"),
    ]


def send_http(payload: dict, token: str | None, timeout: float) -> int:
    """POST the JSON body; the status, or DeliveryError (a status outside 2xx
    and `ok_statuses`, or no answer)."""
    data = json.dumps(payload["body"]).encode()
    request = urllib.request.Request(payload["url"], data=data, method=payload["method"],
                                     headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        if exc.code in payload.get("ok_statuses", ()):
            return exc.code
        detail = exc.read(300).decode(errors="replace").strip()
        raise DeliveryError(f"{_safe(payload['url'])}: HTTP {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"{_safe(payload['url'])}: {reason}") from None


def run_command(payload: dict, timeout: float = COMMAND_TIMEOUT_SECONDS) -> None:
    """Run the command with the JSON on stdin; DeliveryError unless it exits 0."""
    argv = payload["argv"]
    try:
        done = subprocess.run(argv, input=json.dumps(payload["stdin"]).encode(),
                              capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeliveryError(f"command {argv[0]}: {exc}") from None
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip()[-300:]
        raise DeliveryError(f"command {argv[0]} exited {done.returncode}: {tail}")


def _safe(url: str) -> str:
    """The URL without credentials or query (may carry tokens)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
