"""Fetching a reseller's video link: addresses, redirects, signatures and size limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from gateway.content import byte_range
from gateway.errors import RangeNotSatisfiable
from gateway.netguard import AddressPolicy
from gateway.video_source import VideoRejected, VideoSource, VideoUnavailable, sniff

MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
TRUSTED = AddressPolicy(allow_hosts=frozenset({"cdn.example"}))


def serving(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


async def drain(source: VideoSource, url: str) -> bytes:
    async with source.open(url) as download:
        return b"".join([chunk async for chunk in download.chunks()])


async def test_loopback_private_and_metadata_links_are_refused_without_a_request() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=MP4_HEAD)

    source = VideoSource(AddressPolicy(), 10_000, serving(handler))
    for url in ("http://127.0.0.1/v.mp4", "http://10.0.0.8/v.mp4",
                "http://169.254.169.254/latest/meta-data", "http://[::1]/v.mp4",
                "ftp://cdn.example/v.mp4", "file:///etc/passwd"):  # fmt: skip
        with pytest.raises(VideoRejected):
            await drain(source, url)
    assert seen == []


async def test_a_redirect_to_the_metadata_address_is_refused_at_the_second_hop() -> None:
    hops: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hops.append(str(request.url))
        return httpx.Response(302, headers={"location": "http://169.254.169.254/latest"})

    source = VideoSource(TRUSTED, 10_000, serving(handler))
    with pytest.raises(VideoRejected, match="unsafe"):
        await drain(source, "http://cdn.example/v.mp4")
    assert hops == ["http://cdn.example/v.mp4"]


async def test_redirects_are_followed_and_no_credential_is_sent_to_the_video_host() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/signed":
            return httpx.Response(302, headers={"location": "/real.mp4"})
        return httpx.Response(200, content=MP4_HEAD + b"x" * 100)

    source = VideoSource(TRUSTED, 10_000, serving(handler))
    assert await drain(source, "http://cdn.example/signed") == MP4_HEAD + b"x" * 100
    assert [r.url.path for r in seen] == ["/signed", "/real.mp4"]
    assert all("authorization" not in r.headers and "cookie" not in r.headers for r in seen)


async def test_size_is_enforced_while_streaming_when_no_length_is_announced() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield MP4_HEAD
        for _ in range(100):
            yield b"y" * 1000

    source = VideoSource(TRUSTED, 50_000, serving(lambda _: httpx.Response(200, content=body())))
    with pytest.raises(VideoRejected, match="max_bytes"):
        await drain(source, "http://cdn.example/v.mp4")


async def test_an_announced_length_over_the_limit_is_refused_before_reading() -> None:
    source = VideoSource(TRUSTED, 1000, serving(
        lambda _: httpx.Response(200, content=MP4_HEAD + b"z" * 2000)))  # fmt: skip
    with pytest.raises(VideoRejected, match="max_bytes"):
        await drain(source, "http://cdn.example/v.mp4")


async def test_html_is_rejected_and_a_5xx_is_worth_a_retry() -> None:
    html = VideoSource(TRUSTED, 10_000, serving(
        lambda _: httpx.Response(200, content=b"<!doctype html><html></html>")))  # fmt: skip
    with pytest.raises(VideoRejected, match="signature"):
        await drain(html, "http://cdn.example/v.mp4")
    down = VideoSource(TRUSTED, 10_000, serving(lambda _: httpx.Response(503)))
    with pytest.raises(VideoUnavailable):
        await drain(down, "http://cdn.example/v.mp4")
    gone = VideoSource(TRUSTED, 10_000, serving(lambda _: httpx.Response(403)))
    with pytest.raises(VideoRejected):
        await drain(gone, "http://cdn.example/v.mp4")


def test_signatures_of_mp4_and_webm_are_recognised() -> None:
    assert sniff(MP4_HEAD) == "video/mp4"
    assert sniff(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81") == "video/webm"
    assert sniff(b"<html><body>") is None


def test_byte_ranges_follow_rfc_9110() -> None:
    assert byte_range(None, 1000) is None
    assert byte_range("bytes=0-99", 1000) == (0, 100)
    assert byte_range("bytes=900-", 1000) == (900, 1000)
    assert byte_range("bytes=-100", 1000) == (900, 1000)
    assert byte_range("bytes=990-5000", 1000) == (990, 1000)
    assert byte_range("bytes=0-1,5-6", 1000) is None  # several ranges: the whole video
    with pytest.raises(RangeNotSatisfiable):
        byte_range("bytes=1000-", 1000)
