"""``python -m benchmarks.httpload SPEC RESULT``: one load-generating process, pure Python.

Built not to be the bottleneck: uvloop, one :class:`asyncio.Protocol` per keep-alive
connection, requests pre-encoded as bytes, responses parsed by httptools (the C parser uvicorn
uses), nothing allocated per request beyond a future and a float. Closed loop (each connection
sends its next request when the last is answered) or a fixed rate (an open loop: request ``i``
is due at ``start + i / rate``, whatever the answers do).

Latencies go to ``WorkerSpec.latencies_path`` as raw doubles (seconds); the summary, a
:class:`~benchmarks.load.WorkerResult`, to ``RESULT`` as JSON.
"""

from __future__ import annotations

import asyncio
import sys
import time
from array import array
from collections.abc import Coroutine
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import httptools
import uvloop

from benchmarks.load import LoadSpec, WorkerResult, WorkerSpec

LATE_S = 0.005
DRAIN_S = 5.0


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad response: {exc}"))

    def on_message_complete(self) -> None:  # httptools callback
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self._parser.get_status_code())
        if not self._parser.should_keep_alive():
            self._fail(ConnectionError("the server closed the connection"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection lost: {exc}"))

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self._transport is not None:
            self._transport.close()

    async def send(self, raw: bytes) -> int:
        """Write one request; the response's status code."""
        if self.closed or self._transport is None:
            raise ConnectionError("connection closed")
        self._waiter = self._loop.create_future()
        self._transport.write(raw)
        return await self._waiter


class _Run:
    """The shared state of one process's run: requests to cycle through, and what came back."""

    def __init__(self, spec: WorkerSpec) -> None:
        load = spec.load
        url = urlsplit(load.base_url)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.raw = [_encode(load, f"{self.host}:{self.port}", path) for path in load.requests.paths]
        self.expect = load.requests.expect_status
        self.cursor = spec.first_path
        self.slot = 0
        self.latencies = array("d")
        self.statuses: dict[str, int] = {}
        self.errors = 0
        self.late = 0
        self.start = time.perf_counter()
        self.measure_from = self.start + load.warmup_s
        self.end = self.measure_from + load.duration_s
        self.last_done = self.start

    def next_request(self) -> bytes:
        raw = self.raw[self.cursor % len(self.raw)]
        self.cursor += 1
        return raw

    def record(self, started: float, status: int) -> None:
        done = time.perf_counter()
        self.last_done = done
        if status != self.expect:
            self.errors += 1
        if started >= self.measure_from and done <= self.end:
            self.latencies.append(done - started)
            key = str(status)
            self.statuses[key] = self.statuses.get(key, 0) + 1

    async def connect(self) -> _Connection | None:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(
                lambda: _Connection(loop), self.host, self.port
            )
        except OSError:
            self.errors += 1
            await asyncio.sleep(0.01)
            return None
        return protocol

    async def exchange(self, conn: _Connection, started: float | None = None) -> bool:
        """Send the next request on ``conn``; False when the connection has to be replaced.

        Its latency counts from ``started`` (default: now)."""
        raw = self.next_request()
        if started is None:
            started = time.perf_counter()
        try:
            status = await conn.send(raw)
        except ConnectionError:
            self.errors += 1
            return False
        self.record(started, status)
        return True


async def _closed_loop(run: _Run) -> None:
    conn: _Connection | None = None
    while time.perf_counter() < run.end:
        if conn is None or conn.closed:
            conn = await run.connect()
            continue
        if not await run.exchange(conn):
            conn = None


async def _paced(run: _Run, rate: float) -> None:
    conn: _Connection | None = None
    while True:
        due = run.start + run.slot / rate
        run.slot += 1
        if due >= run.end:
            return
        delay = due - time.perf_counter()
        if delay > 0:
            # On time: the clock starts at the actual send, so timer jitter is not latency.
            await asyncio.sleep(delay)
            started = None
        else:
            # Behind (this connection was still busy): the clock starts when the request was
            # due, so a server that falls behind shows its queueing (no coordinated omission).
            started = due
            if -delay > LATE_S:
                run.late += 1
        while conn is None or conn.closed:
            conn = await run.connect()
        if not await run.exchange(conn, started):
            conn = None


def _one_connection(run: _Run, rate: float | None) -> Coroutine[None, None, None]:
    return _paced(run, rate) if rate else _closed_loop(run)


async def run_worker(spec: WorkerSpec) -> tuple[WorkerResult, array[float]]:
    run = _Run(spec)
    tasks = [
        asyncio.ensure_future(_one_connection(run, spec.rate)) for _ in range(spec.connections)
    ]
    _, pending = await asyncio.wait(tasks, timeout=run.end - time.perf_counter() + DRAIN_S)
    for task in pending:  # a request stuck past the drain time: counted as an error
        task.cancel()
        run.errors += 1
    await asyncio.gather(*pending, return_exceptions=True)
    window = run.end - run.measure_from
    result = WorkerResult(
        requests=len(run.latencies),
        errors=run.errors,
        statuses=run.statuses,
        window_s=window,
        active_s=run.last_done - run.start,
        late=run.late,
    )
    return result, run.latencies


def _encode(load: LoadSpec, host: str, path: str) -> bytes:
    body = load.requests.body.encode()
    lines = [f"{load.requests.method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in load.requests.headers.items()]
    if load.requests.method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def main(argv: list[str]) -> int:
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    spec = WorkerSpec.model_validate_json(spec_path.read_text())
    result, latencies = uvloop.run(run_worker(spec))
    with Path(spec.latencies_path).open("wb") as f:
        latencies.tofile(f)
    result_path.write_text(result.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
