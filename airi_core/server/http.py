"""Plain HTTP on the hub's own port: ``GET /healthz``, ``/readyz`` and ``/metrics``.

There is no second server: the transport hands every handshake request whose path is not the
WebSocket path to :meth:`HttpEndpoints.answer` (from websockets' ``process_request``), and an
answer goes back as a plain HTTP response before the connection is closed. Every other path is
404 as before. Settings: ``[http]`` (:class:`~airi_core.server.config.HttpConfig`).

- ``/healthz``: 200 ``{"status": "ok"}`` whenever the event loop runs (answering is the proof).
- ``/readyz``: 200 ``{"status": "ready"}`` when the hub accepts connections and every readiness
  check passes (a clustering plugin adds one: "connected to the broker", see
  :meth:`Readiness.add_check`); otherwise 503 with ``{"status": "not ready", "reason": ...}``
  (``starting``, ``draining``, or the failing check's reason).
- ``/metrics``: the Prometheus text format produced by ``prometheus_client`` from the hub's own
  registry (:mod:`airi_core.server.metrics`); with ``[http] metrics_token`` set, only for
  ``Authorization: Bearer <token>`` (401 otherwise, compared in constant time, never logged).

This module knows nothing of websockets: an answer is an :class:`HttpAnswer` the transport turns
into a response.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .kernel import Hub

__all__ = ["HttpAnswer", "HttpEndpoints", "Readiness", "HEALTH_PATH", "READY_PATH", "METRICS_PATH"]

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"
PATHS = (HEALTH_PATH, READY_PATH, METRICS_PATH)

JSON_TYPE = "application/json"

log = logging.getLogger("airi.http")


@dataclass
class HttpAnswer:
    """One plain HTTP response: status, content type, body and extra headers."""

    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: dict[str, object], **headers: str) -> HttpAnswer:
        return cls(status, JSON_TYPE, json.dumps(payload).encode() + b"\n", dict(headers))


#: a readiness check: None when ready, else a short reason
ReadinessCheck = Callable[[], "str | None"]


class Readiness:
    """Whether the hub should be sent traffic: its phase (``starting`` -> ``ready`` ->
    ``draining``) and the checks plugins add."""

    def __init__(self) -> None:
        self.phase = "starting"
        self._checks: dict[str, ReadinessCheck] = {}

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        """Make ``/readyz`` answer 503 with ``check()``'s reason while it returns one (a
        clustering plugin: ``"broker disconnected"``). ``name`` replaces an earlier check."""
        self._checks[name] = check

    def remove_check(self, name: str) -> None:
        self._checks.pop(name, None)

    def reason(self) -> str | None:
        """None when ready, else why not."""
        if self.phase != "ready":
            return self.phase
        for name, check in list(self._checks.items()):
            try:
                why = check()
            except Exception as exc:  # a broken check means "not ready", and says so
                why = f"readiness check '{name}' failed: {type(exc).__name__}"
            if why:
                return str(why)[:200]
        return None


class HttpEndpoints:
    """Answers the plain HTTP paths of one hub."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.metrics_token_digest: bytes | None = None
        self.configure()

    def configure(self) -> None:
        """(Re)read ``[http]`` (at start and on reload)."""
        token = self.hub.settings.http.metrics_token
        self.metrics_token_digest = hashlib.sha256(token.get_secret_value().encode()).digest() if token is not None else None

    def answer(self, path: str, authorization: str | None) -> HttpAnswer | None:
        """The answer for ``GET path``, or None when the path is not one of ours."""
        if path == HEALTH_PATH:
            return HttpAnswer.json(200, {"status": "ok"})
        if path == READY_PATH:
            why = self.hub.readiness.reason()
            if why is None:
                return HttpAnswer.json(200, {"status": "ready"})
            return HttpAnswer.json(503, {"status": "not ready", "reason": why})
        if path == METRICS_PATH and self.hub.settings.http.metrics:
            if not self._authorized(authorization):
                return HttpAnswer(401, "text/plain; charset=utf-8", b"metrics need Authorization: Bearer <[http] metrics_token>\n",
                                  {"WWW-Authenticate": 'Bearer realm="airi metrics"'})
            metrics = self.hub.metrics
            if metrics is None:  # pragma: no cover - created with the endpoints
                return None
            body, content_type = metrics.render()
            return HttpAnswer(200, content_type, body)
        return None

    def _authorized(self, authorization: str | None) -> bool:
        expected = self.metrics_token_digest
        if expected is None:
            return True
        scheme, _, given = (authorization or "").partition(" ")
        ok = scheme.lower() == "bearer"
        digest = hashlib.sha256(given.strip().encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(digest, expected) and ok
