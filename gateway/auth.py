"""Who is calling: the bearer key → client name, and the client's rate limit.

:meth:`Authorizer.authorize` is the one check every ``/v1`` request passes: the Litestar guard
(:func:`require_client`) and the final-task shortcut (:mod:`gateway.shortcut`, ahead of the
framework) both call it. Its verdict is kept in the request's ASGI scope, so a request the
shortcut hands on to the app is not charged a second rate-limit token and not identified twice:
the guard finds the verdict and re-raises or reuses it. The client keys it looks up are the
ones in force (:meth:`gateway.live.LiveSettings.client_keys`): a reload that removes a client
refuses its key from the next request on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Scope

from gateway.access import scope_header
from gateway.client_keys import ClientKeys
from gateway.errors import GatewayError, Unauthorized
from gateway.ratelimit import RateLimiter

_VERDICT = "gateway.auth.verdict"
"""Scope-state key of a request's verdict: the client's name, or the error it was refused with.
Only this module writes it."""
_AUTHORIZATION = b"authorization"


class Authorizer:
    """Identifies the client and takes one rate-limit token, once per request. ``keys`` gives
    the client keys in force (read on every request, so a reload changes them at once)."""

    def __init__(self, keys: Callable[[], ClientKeys], limiter: RateLimiter) -> None:
        self._keys = keys
        self._limiter = limiter

    async def authorize(self, scope: Scope) -> str:
        """The calling client's name; raises Unauthorized (no or wrong key) or RateLimited.
        The first call decides; later calls for the same request repeat that verdict."""
        state: dict[str, Any] = scope.setdefault("state", {})
        verdict = state.get(_VERDICT)
        if verdict is None:
            verdict = await self._decide(scope_header(scope, _AUTHORIZATION))
            state[_VERDICT] = verdict
        if isinstance(verdict, GatewayError):
            raise verdict
        client: str = verdict
        return client

    async def _decide(self, authorization: str | None) -> str | GatewayError:
        client = self._keys().identify(authorization)
        if client is None:
            return Unauthorized(
                "send Authorization: Bearer <client key>", headers={"WWW-Authenticate": "Bearer"}
            )
        try:
            await self._limiter.check(client)
        except GatewayError as refused:
            return refused
        return client


async def require_client(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Litestar guard, before the body is read, so an anonymous or over-limit caller costs
    nothing."""
    authorizer: Authorizer = connection.app.state.resources.authorizer
    connection.state.client = await authorizer.authorize(connection.scope)


def current_client(request: Request[Any, Any, Any]) -> str:
    """Dependency: the client name the guard identified."""
    client: str = request.state.client
    return client
