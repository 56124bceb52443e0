"""Where the gateway may send a request of its own (webhooks, video downloads): SSRF rules.

A URL taken from a client (``webhook_url``) or from a reseller (a finished video's link) must
not make the gateway call its own network: loopback, private ranges, link-local (the cloud
metadata address ``169.254.169.254`` among them), CGNAT, multicast and reserved addresses, in
IPv4 and IPv6 (IPv4 embedded in IPv6 included) are refused, unless the operator allows private
destinations (simulated resellers on loopback) or names the host in an allow-list.

Checking a name when a request is accepted is not enough: DNS may answer differently when the
request is sent (rebinding). :class:`GuardedTransport` therefore resolves the name itself,
checks every address, and connects to the address it checked, with the original ``Host``
header and TLS server name, so what was checked is what is connected to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

RESOLVE_TIMEOUT_S = 5.0

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeDestination(Exception):
    """The URL is not one the gateway may call; ``reason`` says why (safe to show a client)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AddressPolicy:
    """Which destinations are allowed besides public addresses."""

    allow_private: bool = False
    """Every address allowed: only for simulated upstreams on loopback or a private network."""
    allow_hosts: frozenset[str] = field(default_factory=frozenset)
    """Host names (lower case) allowed whatever they resolve to: the operator trusts them, so
    they are neither resolved nor pinned here."""

    def allows_host(self, host: str) -> bool:
        return self.allow_private or host.lower().rstrip(".") in self.allow_hosts


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why the gateway must not connect to ``ip``, or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or _teredo_client(ip) or _nat64(ip)
        if embedded is not None:
            inner = forbidden_reason(embedded)
            return f"{inner} (embedded in IPv6)" if inner else None
    checks: tuple[tuple[bool, str], ...] = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address (cloud metadata lives there)"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT, "a carrier-grade NAT address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "an address that is not globally routable"),
    )
    for hit, reason in checks:
        if hit:
            return reason
    return None


def _teredo_client(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    teredo = ip.teredo
    return teredo[1] if teredo else None


def _nat64(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal is itself)."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
        )
    except (OSError, TimeoutError) as exc:
        raise UnsafeDestination(f"host {host!r} does not resolve") from exc
    found: list[IPAddress] = []
    for info in infos:
        address = _literal(str(info[4][0]))
        if address is not None and address not in found:
            found.append(address)
    if not found:
        raise UnsafeDestination(f"host {host!r} does not resolve")
    return found


async def resolve_allowed(host: str, port: int, policy: AddressPolicy) -> list[IPAddress]:
    """The addresses of ``host``, all of them allowed by ``policy``; UnsafeDestination when
    any is not (a name that also resolves to a private address is refused whole)."""
    addresses = await resolve(host, port)
    for address in addresses:
        reason = forbidden_reason(address)
        if reason is not None:
            raise UnsafeDestination(f"host {host!r} resolves to {reason}")
    return addresses


def _parts(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeDestination("only http(s) URLs with a host are allowed")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeDestination("the URL's port is not valid") from exc
    return parts.hostname, port


async def check_url(url: str, policy: AddressPolicy) -> None:
    """Refuse (UnsafeDestination) a URL the gateway must not call."""
    host, port = _parts(url)
    if not policy.allows_host(host):
        await resolve_allowed(host, port, policy)


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that connects only to allowed addresses, pinned at resolution.

    Each request's host is resolved and checked here, and the request is sent to the checked
    address (``Host`` header and TLS server name unchanged). A refused destination raises
    :class:`UnsafeDestination` (not an httpx error: callers must not mistake it for a network
    failure worth retrying). Redirects are the caller's business: each hop is a new request
    and is checked again.
    """

    def __init__(
        self, policy: AddressPolicy, inner: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._policy = policy
        self._inner = inner if inner is not None else httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host, port = _parts(str(request.url))
        if self._policy.allows_host(host):
            return await self._inner.handle_async_request(request)
        addresses = await resolve_allowed(host, port, self._policy)
        if _literal(host) is None:
            target = addresses[0]
            # httpx set the Host header from the URL when the request was built; keep it, and
            # let TLS check the certificate against the name, not the address.
            request.url = request.url.copy_with(host=str(target))
            if request.url.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": host}
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
