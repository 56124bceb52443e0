"""An httpx transport that sends requests with aiohttp's client.

Why: the adapters keep httpx's API (``httpx.Request``, ``httpx.Response``; respx mocks httpx's
own transport in the unit tests), but httpcore's connection pool cost about a third of a
create's CPU in the benchmark (anyio locks and cancel scopes per request, a ``select()`` per
pooled connection on every checkout). aiohttp's pool watches connections through the event
loop and parses with C, so the same request costs a fraction. ``providers.http.UpstreamClient``
uses this transport unless a test passes its own.

The error mapping is the part that matters for money (``providers.http.send`` turns httpx
errors into the ProviderError tree): only failures that happen *before the request is sent*
may become ``httpx.ConnectError``/``httpx.ConnectTimeout``, which allow a failover. A dropped,
reset or timed-out connection after a request was written becomes a read error: the outcome is
unknown. aiohttp itself never resends a POST (it retries a broken kept-alive connection only for
idempotent methods, RFC 9112 §9.3.1), so a create is written at most once per attempt.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import httpx

DROPPED_HEADERS = frozenset({"content-length", "transfer-encoding"})
"""aiohttp frames the body itself; the other headers httpx built are sent as they are."""


@contextmanager
def mapped_errors(request: httpx.Request) -> Iterator[None]:
    """aiohttp's exceptions as httpx's, split by whether the request could have been sent."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:  # no pooled connection, or connect too slow
        raise httpx.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
    except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS handshake: nothing sent
        raise httpx.ConnectError(str(exc) or "connect error", request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
    except aiohttp.SocketTimeoutError as exc:
        raise httpx.ReadTimeout(str(exc) or "read timeout", request=request) from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError(str(exc) or "server disconnected", request=request) from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        # Reset, payload cut short, malformed answer, any other timeout: possibly received.
        raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from exc


def _total(connect: float | None, pool: float | None, read: float | None) -> float | None:
    """A bound on the whole call. ``sock_read`` restarts with every chunk, so an answer that
    trickles in would otherwise hold a create (and its caller) for ever."""
    if read is None:
        return None
    return read + (connect or 0.0) + (pool or 0.0)


def _version(version: aiohttp.HttpVersion | None) -> bytes:
    return b"HTTP/1.1" if version is None else f"HTTP/{version.major}.{version.minor}".encode()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (created on first use, inside the running loop) per transport.

    ``limits.max_connections`` caps the pool and ``limits.keepalive_expiry`` closes idle
    connections; the per-request timeouts come from httpx's ``timeout`` extension: ``connect``
    and ``pool`` bound getting a connection, ``read`` bounds each wait for bytes, and their sum
    bounds the whole call (a timeout there, once sent, is a read error: outcome unknown).
    """

    def __init__(
        self, *, limits: httpx.Limits | None = None, verify: ssl.SSLContext | bool = True
    ) -> None:
        self._limits = limits or httpx.Limits(max_connections=100, keepalive_expiry=5.0)
        self._ssl: ssl.SSLContext | bool = httpx.create_ssl_context() if verify is True else verify
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                keepalive_timeout=self._limits.keepalive_expiry or 15.0,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,  # httpx decodes Content-Encoding itself
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        connect, pool, read = timeouts.get("connect"), timeouts.get("pool"), timeouts.get("read")
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower().decode("latin-1") not in DROPPED_HEADERS
        ]
        body = await request.aread()
        with mapped_errors(request):
            async with self._get_session().request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                compress=False,
                timeout=aiohttp.ClientTimeout(
                    total=_total(connect, pool, read),
                    connect=None if connect is None or pool is None else connect + pool,
                    sock_connect=connect,
                    sock_read=read,
                ),
            ) as answer:
                content = await answer.read()
        return httpx.Response(
            status_code=answer.status,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.raw_headers],
            stream=httpx.ByteStream(content),
            extensions={"http_version": _version(answer.version)},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
