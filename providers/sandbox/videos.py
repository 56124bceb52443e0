"""The finished videos the simulated resellers link to: real bytes, streamed, with faults.

``GET /files/{task_id}.mp4`` serves an MP4-looking file (an ``ftyp`` box, then an ``mdat`` box
of filler) of ``video_bytes`` bytes for a task this reseller completed, streamed in 64 KiB
chunks, so a 200 MiB video costs the sandbox no memory. The ``video_fault`` knob, read when the
download starts, makes the link misbehave the way resellers' links do:

- ``http_404``: the file is gone; ``expired``: ``403`` with S3's "Request has expired" XML (a
  signed link past its time, as MiniMax's and Replicate's become);
- ``html``: ``200`` with an HTML page instead of a video (a CDN's error page);
- ``truncated``: ``Content-Length`` promises the whole file, the connection closes at half;
- ``http_500``: the file host fails (a retry may succeed).

``video_bytes_per_s`` (when set) paces every download: a slow reseller.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.enums import MediaType
from litestar.params import FromPath
from litestar.response import Stream

from providers.sandbox.connection import ABORT_EXTENSION
from providers.sandbox.engine import Phase, SandboxState

CHUNK = 64 * 1024
EXPIRED_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>Request has expired</Message></Error>"
)
HTML_PAGE = b"<!doctype html><html><body><h1>Video not available</h1></body></html>"


def video_header(size: int) -> bytes:
    """An ``ftyp`` box and the header of an ``mdat`` box filling the rest of ``size`` bytes."""
    ftyp = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    mdat_size = max(size - len(ftyp), 8)
    return ftyp + mdat_size.to_bytes(4, "big") + b"mdat"


def video_body(task_id: str, size: int) -> AsyncIterator[bytes]:
    """The whole file: :func:`video_header`, then filler derived from ``task_id``."""
    return _paced(task_id, size, None, None)


async def _paced(
    task_id: str, size: int, bytes_per_s: float | None, stop_at: int | None
) -> AsyncIterator[bytes]:
    header = video_header(size)[:size]
    pattern = (task_id.encode() + b"\x00") * (CHUNK // (len(task_id) + 1) + 1)
    block = pattern[:CHUNK]
    sent = 0
    limit = size if stop_at is None else stop_at
    chunk = header
    while sent < limit:
        chunk = chunk[: limit - sent]
        yield chunk
        sent += len(chunk)
        if bytes_per_s:
            await asyncio.sleep(len(chunk) / bytes_per_s)
        chunk = block


async def _cut_off(
    request: Request[Any, Any, Any], body: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """``body``, then the connection closed without the rest (as a dropped download)."""
    async for chunk in body:
        yield chunk
    extensions: Mapping[str, Mapping[object, object]] = request.scope.get("extensions") or {}
    abort = extensions.get(ABORT_EXTENSION, {}).get("abort")
    if callable(abort):
        abort()


@get("/files/{name:str}")
async def video_file(
    request: Request[Any, Any, Any], name: FromPath[str], sandbox: NamedDependency[SandboxState]
) -> Response[Any]:
    task = sandbox.tasks.get(name.removesuffix(".mp4")) if name.endswith(".mp4") else None
    if task is None or task.phase(sandbox.now()) is not Phase.COMPLETED:
        return Response(b"not found", status_code=404, media_type=MediaType.TEXT)
    knobs = sandbox.knobs
    sandbox.counters.video_downloads += 1
    fault = knobs.video_fault
    if fault == "http_404":
        return Response(b"not found", status_code=404, media_type=MediaType.TEXT)
    if fault == "expired":
        return Response(EXPIRED_XML, status_code=403, media_type=MediaType.XML)
    if fault == "http_500":
        return Response(b"internal error", status_code=500, media_type=MediaType.TEXT)
    if fault == "html":
        return Response(HTML_PAGE, media_type=MediaType.HTML)
    size = knobs.video_bytes
    stop_at = size // 2 if fault == "truncated" else None
    body = _paced(task.task_id, size, knobs.video_bytes_per_s, stop_at)
    return Stream(
        _cut_off(request, body) if stop_at is not None else body,
        media_type="video/mp4",
        headers={"content-length": str(size)},
    )
