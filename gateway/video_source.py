"""Fetching a finished video from a reseller's link, safely and in bounded memory.

The link comes from a reseller, so it is treated like any URL the gateway did not choose:
only ``http(s)``, every hop's address checked by :class:`gateway.netguard.GuardedTransport`
(loopback, private, link-local and metadata addresses refused unless
``storage.allow_private_sources``), redirects followed here one by one (each hop checked again,
at most :data:`MAX_REDIRECTS`), and no credential of ours or of a client is ever sent: the
client has no default headers besides a user agent.

The body is streamed: its size is counted against ``storage.max_bytes`` as it arrives (a
``Content-Length`` over the limit is refused early, but a lying or absent one changes
nothing), its first bytes must be an MP4 (``ftyp`` box) or WebM (EBML) signature, and its
SHA-256 is computed on the way through.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urljoin

import httpx

from gateway.netguard import AddressPolicy, GuardedTransport, UnsafeDestination

MAX_REDIRECTS = 5
SNIFF_BYTES = 12
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
"""Longest wait for the next bytes of a download (a slow reseller is fine, a stalled one is
not)."""
GONE = frozenset({401, 403, 404, 410})
"""Answers meaning the link is dead or expired: trying again will not help."""


class VideoRejected(Exception):
    """The link does not give a video we may keep: not retried (the task keeps the link)."""


class VideoUnavailable(Exception):
    """The download failed in a way that may pass (5xx, network, truncated): retried."""


def sniff(head: bytes) -> str | None:
    """The video type whose signature ``head`` starts with, or None."""
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return "video/mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "video/webm"
    return None


class VideoDownload:
    """One open download. :meth:`chunks` yields the body once, enforcing the size limit;
    ``size`` and ``sha256`` are final once it is exhausted."""

    def __init__(
        self, response: httpx.Response, head: bytes, rest: AsyncIterator[bytes], max_bytes: int
    ) -> None:
        self.content_type = sniff(head) or "application/octet-stream"
        self.size = 0
        self._hash = hashlib.sha256()
        self._head = head
        self._rest = rest
        self._max_bytes = max_bytes
        self._expected = _content_length(response)
        self.failure: Exception | None = None
        """What stopped :meth:`chunks`, kept in case the consumer wraps the exception."""

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            yield self._count(self._head)
            async for chunk in self._rest:
                yield self._count(chunk)
        except httpx.HTTPError as exc:
            self.failure = VideoUnavailable(f"download interrupted: {type(exc).__name__}")
            raise self.failure from exc
        except VideoRejected as exc:
            self.failure = exc
            raise
        if self._expected is not None and self.size != self._expected:
            self.failure = VideoUnavailable(
                f"download truncated: {self.size} of {self._expected} bytes"
            )
            raise self.failure

    def _count(self, chunk: bytes) -> bytes:
        self.size += len(chunk)
        if self.size > self._max_bytes:
            raise VideoRejected(f"the video is over storage.max_bytes ({self._max_bytes})")
        self._hash.update(chunk)
        return chunk


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


class VideoSource:
    """Opens resellers' video links through the address guard."""

    def __init__(
        self,
        policy: AddressPolicy,
        max_bytes: int,
        inner: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._max_bytes = max_bytes
        self._client = httpx.AsyncClient(
            transport=GuardedTransport(policy, inner),
            follow_redirects=False,
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            headers={"user-agent": "hailuo-gateway (video copy)"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    @asynccontextmanager
    async def open(self, url: str) -> AsyncIterator[VideoDownload]:
        """The video at ``url``, checked (answer, size announced, signature) and ready to
        stream. Raises :class:`VideoRejected` or :class:`VideoUnavailable`."""
        response = await self._follow(url)
        try:
            announced = _content_length(response)
            if announced is not None and announced > self._max_bytes:
                raise VideoRejected(f"the video is over storage.max_bytes ({announced} bytes)")
            rest = response.aiter_bytes()
            head = b""
            try:
                async for chunk in rest:
                    head += chunk
                    if len(head) >= SNIFF_BYTES:
                        break
            except httpx.HTTPError as exc:
                raise VideoUnavailable(f"download interrupted: {type(exc).__name__}") from exc
            if sniff(head) is None:
                raise VideoRejected(
                    "the link does not serve a video (no MP4 or WebM signature; "
                    f"content-type {response.headers.get('content-type', 'none')!r})"
                )
            yield VideoDownload(response, head, rest, self._max_bytes)
        finally:
            await response.aclose()

    async def _follow(self, url: str) -> httpx.Response:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                request = self._client.build_request("GET", url)
                response = await self._client.send(request, stream=True)
            except UnsafeDestination as exc:
                raise VideoRejected(f"unsafe video link: {exc.reason}") from exc
            except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
                raise VideoRejected("the video link is not a valid URL") from exc
            except httpx.HTTPError as exc:
                raise VideoUnavailable(f"video host unreachable: {type(exc).__name__}") from exc
            location = response.headers.get("location")
            if response.is_redirect and location:
                await response.aclose()
                url = urljoin(url, location)
                continue
            if response.status_code == 200:
                return response
            await response.aclose()
            if response.status_code in GONE:
                raise VideoRejected(f"the video link answered {response.status_code}")
            if response.status_code >= 500 or response.status_code == 429:
                raise VideoUnavailable(f"the video host answered {response.status_code}")
            raise VideoRejected(f"the video link answered {response.status_code}")
        raise VideoRejected(f"more than {MAX_REDIRECTS} redirects")
