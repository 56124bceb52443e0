"""``redis.url``: which Redis topology the gateway talks to (api.md §4).

- ``redis://host:port/db``, ``rediss://…``, ``unix:///path.sock``: one server (redis-py's own
  URL rules: user, password, ``?`` options);
- ``redis+sentinel://[user:password@]h1:26379,h2:26379/mymaster[/db]``: Sentinel; the
  sentinels are asked for ``mymaster``'s primary, and asked again after every failover. The
  credentials are the data nodes'; sentinels are reached without. ``rediss+sentinel://`` uses
  TLS to the data nodes;
- ``redis+cluster://[user:password@]h1:7000,h2:7001``: Cluster; the nodes listed are where
  discovery starts (one reachable node is enough). ``rediss+cluster://`` uses TLS.

:func:`parse` checks the URL (config validation calls it, so a bad URL stops start-up naming
``redis.url``); :func:`gateway.redis_client.connect` builds the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

Topology = Literal["standalone", "sentinel", "cluster"]
DEFAULT_PORTS = {"sentinel": 26379, "cluster": 6379}


@dataclass(frozen=True)
class RedisTarget:
    topology: Topology
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    """Sentinels or Cluster start-up nodes (empty for a standalone URL)."""
    service: str | None = None
    """The Sentinel service (master) name."""
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False


def parse(url: str) -> RedisTarget:
    """The topology named by ``url``; ValueError saying what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("expected a URL such as redis://host:6379/0")
    base, _, topology = scheme.lower().partition("+")
    if not topology:
        if base not in ("redis", "rediss", "unix"):
            raise ValueError(f"unknown scheme {scheme!r}: redis, rediss, unix, redis+sentinel, "
                             "redis+cluster")  # fmt: skip
        return RedisTarget("standalone", url)
    if base not in ("redis", "rediss") or topology not in ("sentinel", "cluster"):
        raise ValueError(f"unknown scheme {scheme!r}: redis+sentinel or redis+cluster")
    parts = urlsplit(f"redis://{rest}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = tuple(_node(n, DEFAULT_PORTS[topology]) for n in hosts.split(",") if n)
    if not nodes:
        raise ValueError("no host given")
    path = [unquote(p) for p in parts.path.split("/") if p]
    service, db = None, 0
    if topology == "sentinel":
        if not path or len(path) > 2:
            raise ValueError("expected the service name: redis+sentinel://h1:26379/mymaster[/db]")
        service = path[0]
        db = _db(path[1]) if len(path) == 2 else 0
    elif path:
        raise ValueError("a Cluster URL has no path (a Cluster has only database 0)")
    kind: Topology = "sentinel" if topology == "sentinel" else "cluster"
    return RedisTarget(
        kind,
        url,
        nodes,
        service,
        db,
        unquote(username) or None,
        unquote(password) or None,
        ssl=base == "rediss",
    )


def _node(text: str, default_port: int) -> tuple[str, int]:
    host, port = text, str(default_port)
    if text.startswith("["):  # [::1]:26379
        host, _, tail = text[1:].partition("]")
        port = tail.removeprefix(":") or port
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad host:port {text!r}")
    return host, int(port)


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"bad database number {text!r}")
    return int(text)
