"""Where the gateway may send its own requests (webhooks, video downloads): the SSRF rules."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.netguard import (
    AddressPolicy,
    GuardedTransport,
    UnsafeDestination,
    check_url,
    forbidden_reason,
)

FORBIDDEN = [
    "127.0.0.1",
    "127.1.2.3",
    "0.0.0.0",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # CGNAT
    "224.0.0.1",  # multicast
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "198.18.0.1",  # benchmarking range
    "::1",
    "::",
    "fe80::1",
    "fd00:ec2::254",  # AWS metadata over IPv6 (unique local)
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:169.254.169.254",
    "2002:7f00:1::1",  # 6to4 wrapping 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 wrapping 10.0.0.1
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "2001:4860:4860::8888"]


@pytest.mark.parametrize("address", FORBIDDEN)
def test_forbidden_reason_refuses_internal_addresses(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", PUBLIC)
def test_forbidden_reason_allows_public_addresses(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:6379/",
        "http://10.0.0.1/hook",
        "http://localhost/hook",
        "http://[::1]:8080/",
        "http://[::ffff:7f00:1]/",
        "ftp://8.8.8.8/",
        "file:///etc/passwd",
    ],
)
async def test_check_url_refuses_ssrf_targets(url: str) -> None:
    with pytest.raises(UnsafeDestination):
        await check_url(url, AddressPolicy())


async def test_check_url_accepts_a_public_literal() -> None:
    await check_url("https://8.8.8.8/hook", AddressPolicy())


async def test_allow_private_lets_loopback_through() -> None:
    await check_url("http://127.0.0.1:9000/", AddressPolicy(allow_private=True))


async def test_allow_hosts_names_one_host_only() -> None:
    policy = AddressPolicy(allow_hosts=frozenset({"localhost"}))
    await check_url("http://LOCALHOST:9000/", policy)
    with pytest.raises(UnsafeDestination):
        await check_url("http://127.0.0.1:9000/", policy)


async def test_an_unresolvable_host_is_refused() -> None:
    with pytest.raises(UnsafeDestination, match="does not resolve"):
        await check_url("http://no-such-host.invalid/", AddressPolicy())


@pytest.fixture
async def echo_server() -> AsyncIterator[int]:
    """A tiny HTTP server on loopback answering with the Host header it saw."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        host = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("host:")
        )
        body = host.encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_guarded_transport_refuses_a_name_resolving_to_loopback(echo_server: int) -> None:
    async with httpx.AsyncClient(transport=GuardedTransport(AddressPolicy())) as client:
        with pytest.raises(UnsafeDestination, match="loopback"):
            await client.get(f"http://localhost:{echo_server}/")


async def test_guarded_transport_connects_to_the_checked_address_with_the_host_header(
    echo_server: int,
) -> None:
    policy = AddressPolicy(allow_hosts=frozenset({"localhost"}))
    async with httpx.AsyncClient(transport=GuardedTransport(policy)) as client:
        response = await client.get(f"http://localhost:{echo_server}/")
    assert response.status_code == 200
    assert response.text == f"localhost:{echo_server}"
