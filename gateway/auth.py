"""Bearer-key authentication of clients against ``auth.keys``."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from pydantic import SecretStr

from gateway.errors import Unauthorized
from gateway.ratelimit import RateLimiter


class ClientKeys:
    """Maps a presented key to its client's name.

    Keys are looked up by their SHA-256 digest, so no comparison leaks a key's prefix through
    timing and the plain keys are not kept in a dict.
    """

    def __init__(self, keys: Mapping[str, SecretStr]) -> None:
        self._by_digest = {_digest(key.get_secret_value()): name for name, key in keys.items()}

    def identify(self, authorization: str | None) -> str | None:
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self._by_digest.get(_digest(token.strip()))


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def require_client(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Litestar guard: identifies the client and takes a rate-limit token, before the body is
    read, so an anonymous or over-limit caller costs nothing."""
    keys: ClientKeys = connection.app.state.client_keys
    client = keys.identify(connection.headers.get("authorization"))
    if client is None:
        raise Unauthorized(
            "send Authorization: Bearer <client key>", headers={"WWW-Authenticate": "Bearer"}
        )
    connection.state.client = client
    limiter: RateLimiter = connection.app.state.resources.rate_limiter
    await limiter.check(client)


def current_client(request: Request[Any, Any, Any]) -> str:
    """Dependency: the client name the guard identified."""
    client: str = request.state.client
    return client
