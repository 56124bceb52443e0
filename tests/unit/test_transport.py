"""The aiohttp transport against real sockets on 127.0.0.1: what it sends, what it returns, and
which failures may fail over (nothing sent) and which leave the outcome unknown."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from providers.errors import OutcomeUnknown, Unreachable
from providers.http import send
from providers.transport import AiohttpTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Upstream:
    """A raw HTTP/1.1 server whose behaviour per connection is one ``handler``; it records the
    requests it read."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[bytes] = []

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


def reply(status: int, body: bytes, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *headers, "", ""]
    return "\r\n".join(lines).encode() + body


@asynccontextmanager
async def serving(behaviour: Callable[[Upstream], Handler]) -> AsyncIterator[tuple[str, Upstream]]:
    upstream = Upstream(lambda r, w: asyncio.sleep(0))
    upstream.handler = behaviour(upstream)
    server = await asyncio.start_server(upstream.handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", upstream
    finally:
        server.close()


def client(base_url: str, *, read_s: float = 2.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        transport=AiohttpTransport(),
        timeout=httpx.Timeout(read_s, connect=1.0, pool=1.0),
        headers={"Authorization": "Bearer test-key-not-secret"},
    )


def answers_json(upstream: Upstream) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await upstream.read_request(reader)
            except asyncio.IncompleteReadError:
                break
            body = gzip.compress(json.dumps({"task_id": "t-1"}).encode())
            writer.write(reply(200, body, "Content-Type: application/json",
                               "Content-Encoding: gzip", "X-Trace: a", "X-Trace: b"))  # fmt: skip
            await writer.drain()
        writer.close()

    return handle


def drops_after_reading(upstream: Upstream) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream.read_request(reader)
        writer.close()

    return handle


def resets_after_reading(upstream: Upstream) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream.read_request(reader)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    return handle


def hangs_after_reading(upstream: Upstream) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream.read_request(reader)
        await asyncio.sleep(5)
        writer.close()

    return handle


def answers_garbage(upstream: Upstream) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream.read_request(reader)
        writer.write(b"this is not HTTP\r\n\r\n")
        await writer.drain()
        writer.close()

    return handle


async def test_request_and_answer_pass_through_unchanged_and_decoded() -> None:
    async with serving(answers_json) as (url, upstream), client(url) as http:
        response = await send(http, "runapi", "POST", "/v1/create", json={"prompt": "a cat"})
        again = await send(http, "runapi", "GET", "/v1/status?id=t-1")
    assert response.status_code == 200
    assert response.json() == {"task_id": "t-1"}  # gzip decoded by httpx, once
    assert response.headers.get_list("X-Trace") == ["a", "b"]
    assert again.status_code == 200
    sent = upstream.requests[0].decode()
    head, _, body = sent.partition("\r\n\r\n")
    assert head.startswith("POST /v1/create HTTP/1.1")
    assert "Authorization: Bearer test-key-not-secret" in head.split("\r\n")
    assert json.loads(body) == {"prompt": "a cat"}
    assert head.lower().count("content-length:") == 1
    assert "aiohttp" not in head.lower()  # httpx's User-Agent, not aiohttp's
    assert upstream.requests[1].startswith(b"GET /v1/status?id=t-1 HTTP/1.1")


async def test_connection_refused_is_unreachable_so_a_failover_is_safe() -> None:
    with socket.socket() as placeholder:  # a port nobody listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    async with client(f"http://127.0.0.1:{port}") as http:
        with pytest.raises(Unreachable):
            await send(http, "runapi", "POST", "/v1/create", json={})


@pytest.mark.parametrize(
    "behaviour",
    [drops_after_reading, resets_after_reading, hangs_after_reading, answers_garbage],
    ids=["dropped", "reset", "read-timeout", "not-http"],
)
async def test_failure_after_the_request_was_read_leaves_the_outcome_unknown(
    behaviour: Callable[[Upstream], Handler],
) -> None:
    async with serving(behaviour) as (url, upstream), client(url, read_s=0.5) as http:
        with pytest.raises(OutcomeUnknown):
            await send(http, "runapi", "POST", "/v1/create", json={"prompt": "a cat"})
    assert len(upstream.requests) == 1  # written once: aiohttp never resends a POST


def trickles_an_answer(upstream: Upstream) -> Handler:
    """Answers one byte every 0.1 s: each read waits far less than the read timeout."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream.read_request(reader)
        body = b"x" * 100
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        for byte in body:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.close()

    return handle


async def test_an_answer_trickling_in_is_cut_at_the_total_timeout() -> None:
    """``sock_read`` restarts with every chunk; the whole call is bounded all the same (read +
    connect + pool timeouts), and what was sent is outcome unknown."""
    async with serving(trickles_an_answer) as (url, upstream), client(url, read_s=0.5) as http:
        started = asyncio.get_running_loop().time()
        with pytest.raises(OutcomeUnknown):
            await send(http, "runapi", "POST", "/v1/create", json={"prompt": "a cat"})
        assert asyncio.get_running_loop().time() - started < 4.0
    assert len(upstream.requests) == 1


async def test_closed_transport_opens_a_new_session_on_next_use() -> None:
    async with serving(answers_json) as (url, upstream):
        transport = AiohttpTransport()
        async with httpx.AsyncClient(base_url=url, transport=transport) as http:
            assert (await http.get("/a")).status_code == 200
        await transport.aclose()
        async with httpx.AsyncClient(base_url=url, transport=transport) as http:
            assert (await http.get("/b")).status_code == 200
    assert len(upstream.requests) == 2
