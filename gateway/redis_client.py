"""The Redis client for ``redis.url``'s topology, and what a failing Redis may raise.

:func:`connect` builds a standalone, Sentinel-managed or Cluster client (:mod:`gateway.redis_urls`
parses the URL). :data:`REDIS_FAILURES` is what any call on it may raise when Redis fails; every
module that talks to Redis catches exactly that (most through :func:`gateway.store.translated`).

A Cluster client's connections are wrapped (:class:`ClusterConnection`). redis-py's asyncio
Cluster client (8.1) repairs itself by disconnecting connections other coroutines are using at
that moment: on ``SlotNotCoveredError`` or ``ClusterDownError`` it closes every node's
connections, on a connection error the failed node's idle ones, and a ``ClusterPubSub`` borrows
connections from the same pools. A command caught mid-write on such a connection failed with
``RuntimeError`` (uvloop: "the handler is closed") or ``AttributeError`` (the writer already
``None``): a 500 on a create under load in CI. Wrapped, it is the ``ConnectionError`` it is, which
the Cluster client retries on a fresh connection and which is a failing Redis if it persists.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from gateway import redis_urls

RedisClient = Redis | RedisCluster
"""What :func:`connect` returns: a standalone (or Sentinel-managed) client, or a Cluster's."""

REDIS_FAILURES = (RedisError, RedisClusterException)
"""What a Redis call may raise when Redis fails. redis-py's Cluster client raises a few errors
outside ``RedisError`` (``SlotNotCoveredError`` while it rebuilds its slot map after a timeout,
``RedisClusterException`` when no node answers): they are a failing Redis too, never a 500."""

_CLOSED_UNDER_US = (RuntimeError, AttributeError)
"""What writing to a connection another coroutine has just closed raises (see the module)."""


class ClusterConnection(Connection):
    """A Cluster node's connection: a write that finds its connection closed under it raises
    ``ConnectionError``. Only the write is wrapped; redis-py's reads already raise
    ``ConnectionError`` for a closed stream."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except _CLOSED_UNDER_US as exc:
            raise RedisConnectionError(
                f"connection to {self.host}:{self.port} closed while writing: {exc!r}"
            ) from exc


class ClusterSSLConnection(ClusterConnection, SSLConnection):
    """:class:`ClusterConnection` over TLS (``rediss+cluster://``)."""


def _wrap_connections(client: RedisCluster, *, ssl: bool) -> RedisCluster:
    """Make every node ``client`` knows or will learn use :class:`ClusterConnection`.

    redis-py's ``RedisCluster`` takes no ``connection_class``: it builds each node from
    ``connection_kwargs`` (one dict, shared with its nodes manager) when it learns the node, and
    has built the startup nodes already, before any connection. A test pins this (a client whose
    connections are closed under concurrent commands raises nothing but Redis errors)."""
    cls = ClusterSSLConnection if ssl else ClusterConnection
    client.connection_kwargs["connection_class"] = cls
    for node in client.startup_nodes:
        node.connection_class = cls
    return client


async def learn_topology(client: RedisClient) -> None:
    """Have a Cluster client learn the slot map now, before the gateway's loops and first
    requests send their commands together. Sent concurrently by a client that knows no slot map
    yet, each first command starts a discovery of its own, and a later one replaces the nodes
    (and closes the connections) the earlier ones are writing to: about one command in sixty
    failed with ``ConnectionError`` after its retries, none once the map was learnt. Raises
    what a failing Redis raises (:data:`REDIS_FAILURES`); other topologies need nothing."""
    if isinstance(client, RedisCluster):
        await client.initialize()


def connect(url: str) -> RedisClient:
    """The client for ``redis.url``'s topology (:mod:`gateway.redis_urls`): pooled, with short
    timeouts and a retry policy for transient errors (connection and timeout errors: a restart
    or a failover takes about a second). A Sentinel-managed client asks the sentinels for the
    primary on every new connection, so it follows a failover by itself.

    The retry is redis-py's asyncio one: the synchronous ``redis.retry.Retry`` given to the
    asyncio client never retried anything. Every write the gateway sends may thus run twice
    (a lost reply); each is written to be idempotent: ``SET NX`` claims recognise their own
    value, saves set the same value again, and a finalize sent twice answers 0 the second time
    (the caller then reads the stored task, its own: nothing is queued or counted twice).
    """
    target = redis_urls.parse(url)
    options: dict[str, Any] = {
        "socket_connect_timeout": 1.0,
        "socket_timeout": 2.0,
        "retry": Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), retries=3),
        "health_check_interval": 30,
        "max_connections": 256,  # per node on a Cluster
    }
    if target.topology == "standalone":
        return Redis.from_url(url, **options)
    options |= {"username": target.username, "password": target.password, "ssl": target.ssl}
    if target.topology == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.nodes]
        return _wrap_connections(RedisCluster(startup_nodes=nodes, **options), ssl=target.ssl)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        list(target.nodes),
        sentinel_kwargs={"socket_connect_timeout": 1.0, "socket_timeout": 1.0},
    )
    client: Redis = sentinel.master_for(
        target.service or "", redis_class=Redis, db=target.db, **options
    )
    return client
