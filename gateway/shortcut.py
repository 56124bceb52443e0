"""Lookups of final tasks this process has answered before, served ahead of the framework.

Clients poll ``GET /v1/videos/{id}`` until the video is there and fetch it again to show it:
most lookups are of final tasks, and :class:`~gateway.cache.FinalTasks` already holds their
answer. For those, Litestar's routing, guard, signature parsing and response building were
most of the CPU of a lookup (benchmarks/RESULTS.md). :class:`FinalTaskShortcut` answers them
with the same checks in the same order, and hands every other request, and every lookup that
is not a plain success, to the app unchanged:

1. ``GET`` of ``/v1/videos/<task id>``, and the id is in this process's cache;
2. :meth:`~gateway.auth.Authorizer.authorize` admits the request (the bearer key names a
   client, and the client's rate limit gives a token): the same call the app's guard makes,
   whose verdict is kept in the scope, so a request handed on is not charged twice;
3. that client owns the task;

then it sends the cached JSON with the headers the app would send. A refusal, another client's
task, or anything else goes to the app, whose guard repeats the verdict already reached. It sits
inside :class:`~gateway.access.RequestObserver`, so the request id, the metrics and the log line
are the same either way; it sets the route template and the client the observer reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.app import Resources

PREFIX = "/v1/videos/"
ROUTE = "/v1/videos/{task_id}"


class FinalTaskShortcut:
    """ASGI wrapper; ``resources`` returns the running app's resources (None before start)."""

    def __init__(self, app: ASGIApp, resources: Callable[[], Resources | None]) -> None:
        self._app = app
        self._resources = resources

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await self._answered(scope, send):
            await self._app(scope, receive, send)

    async def _answered(self, scope: Scope, send: Send) -> bool:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "GET":
            return False
        path: str = scope["path"]
        resources = self._resources()
        if resources is None or not path.startswith(PREFIX):
            return False
        entry = resources.service.cached_final(path[len(PREFIX) :])
        if entry is None:
            return False
        try:
            client = await resources.authorizer.authorize(scope)
        except GatewayError:
            return False  # the app's guard repeats the refusal and answers it
        if client != entry.client:
            return False
        scope["path_template"] = ROUTE
        scope.setdefault("state", {})["client"] = client
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(entry.body)).encode()),
            ],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": entry.body, "more_body": False})
        return True
