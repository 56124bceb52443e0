"""Every HTTP request, observed once: a request id, the HTTP metrics and one JSON log line.

:class:`RequestObserver` wraps the whole Litestar ASGI handler rather than sitting in the app's
middleware stack, because Litestar runs app middleware only after a route matched: a ``404`` or
``405`` would escape it. The route label is the matched template (``/v1/videos/{task_id}``),
read from the scope after routing; a request that matched nothing is ``unmatched``.

The log line holds the request id, route template, method, status, latency and, once the key
was accepted, the client's name: never a header value, the raw path, the body or the prompt.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from gateway.logs import request_id
from gateway.metrics import HTTP_METHODS, OTHER, UNMATCHED, Metrics

logger = logging.getLogger("gateway.access")

HEADER = "X-Request-Id"
_HEADER_KEY = HEADER.lower().encode()
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and scrapes: logged at DEBUG when they succeed, so they do not drown the log."""


def scope_header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case, as ASGI servers give names), without
    building Litestar's header mapping."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def incoming_request_id(scope: Scope) -> str | None:
    """The caller's ``X-Request-Id`` when it is sane (1–128 of ``A-Za-z0-9._:-``), else None."""
    text = scope_header(scope, _HEADER_KEY)
    return text if text is not None and _SANE_ID.fullmatch(text) else None


class RequestObserver:
    """ASGI middleware around the Litestar handler (see the module docstring)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        rid = incoming_request_id(scope) or uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before starting a response

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers", ()) if h[0].lower() != _HEADER_KEY]
                message = {**message, "headers": [*headers, (_HEADER_KEY, rid.encode())]}
            await send(message)

        try:
            await self._app(scope, receive, send_with_id)
        finally:
            self._observe(scope, rid, status, time.perf_counter() - started)
            request_id.reset(token)

    def _observe(self, scope: Scope, rid: str, status: int, seconds: float) -> None:
        route = str(scope.get("path_template") or UNMATCHED)
        method = str(scope.get("method", ""))
        self._metrics.http_request(route, method, status, seconds)
        state: dict[str, Any] = scope.get("state") or {}
        client = state.get("client")
        quiet = route in QUIET_ROUTES and status < 400
        logger.log(
            logging.DEBUG if quiet else logging.INFO,
            "request",
            extra={
                "request_id": rid,
                "route": route,
                "method": method if method in HTTP_METHODS else OTHER,
                "status": status,
                "latency_ms": round(seconds * 1000, 1),
                **({"client": client} if isinstance(client, str) else {}),
            },
        )
