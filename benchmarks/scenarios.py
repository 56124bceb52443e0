"""The measured runs: each one load run, with the CPU every process used while it ran.

(a) creates straight at the simulated RunAPI, (b) the same creates through the gateway,
(a') status reads straight at RunAPI (the direct path for lookups), (c) lookups of final tasks,
(d) many clients polling rendering tasks (with the upstream status calls they caused), and the
fixed-rate create runs that give the gateway's overhead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel

from benchmarks import workload
from benchmarks.load import LoadResult, LoadSpec, RequestSet, ToolName, describe, run_load
from benchmarks.processes import cpu_seconds

SETTLE_WINDOW_S = 0.5
IDLE_CORES = 0.1


@dataclass(frozen=True)
class System:
    """The running processes under test."""

    gateway_url: str
    runapi_url: str
    pids: dict[str, int]
    """gateway, sandbox, redis-server"""
    poll_interval_s: float


@dataclass(frozen=True)
class Options:
    duration_s: float
    warmup_s: float
    concurrency: int
    rate: float
    final_tasks: int
    poll_tasks: int
    tool: ToolName
    load_processes: int


class Measurement(BaseModel):
    key: str
    label: str
    load: LoadResult
    cores: dict[str, float]
    """Process → CPU cores used on average during the run (warm-up included)."""
    wall_s: float
    """From just before the load tool started to just after it ended."""
    probed: int = 0
    """How much the ``probe`` counter grew over ``wall_s``."""


@dataclass
class Polling:
    """What (d) adds to its measurement: the upstream status calls the polling caused."""

    measurement: Measurement
    tasks: int
    upstream_calls: int
    intervals: int
    """Poll intervals the run touched: at most this many upstream calls per task are allowed."""
    calls_per_task_interval: float = field(init=False)

    def __post_init__(self) -> None:
        self.calls_per_task_interval = self.upstream_calls / (self.tasks * self.intervals)


def measure(
    system: System,
    options: Options,
    key: str,
    label: str,
    target: str,
    requests: RequestSet,
    *,
    rate: float | None = None,
    probe: Callable[[], int] | None = None,
) -> Measurement:
    spec = LoadSpec(
        base_url=system.runapi_url if target == "runapi" else system.gateway_url,
        requests=requests,
        connections=options.concurrency,
        duration_s=options.duration_s,
        warmup_s=options.warmup_s,
        rate=rate,
    )
    settle(system)
    before = {name: cpu_seconds(pid) for name, pid in system.pids.items()}
    probed = probe() if probe else 0
    started = time.monotonic()
    result = run_load(spec, options.tool, options.load_processes)
    wall = time.monotonic() - started
    probed = probe() - probed if probe else 0
    cores = {name: (cpu_seconds(pid) - before[name]) / wall for name, pid in system.pids.items()}
    cores["load generator"] = result.loader_cpu_s / wall
    print(f"  {label}: {describe(result)}", flush=True)
    return Measurement(key=key, label=label, load=result, cores=cores, wall_s=wall, probed=probed)


def settle(system: System, max_s: float = 60.0) -> None:
    """Wait until the gateway is idle: its background poller reads every task created by the
    previous run once, which must not land in the next run's figures."""
    gateway = system.pids["gateway"]
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        before = cpu_seconds(gateway)
        time.sleep(SETTLE_WINDOW_S)
        if (cpu_seconds(gateway) - before) / SETTLE_WINDOW_S < IDLE_CORES:
            return
    print(f"  (the gateway was still busy after {max_s:g} s; measuring anyway)", flush=True)


def direct_create(system: System, options: Options) -> Measurement:
    return measure(
        system, options, "direct_create", "(a) create, direct to RunAPI", "runapi",
        workload.direct_creates(),
    )  # fmt: skip


def gateway_create(system: System, options: Options) -> Measurement:
    return measure(
        system, options, "gateway_create", "(b) create, through the gateway", "gateway",
        workload.gateway_creates(),
    )  # fmt: skip


def direct_lookup(system: System, options: Options) -> Measurement:
    ids = workload.create_direct_tasks(system.runapi_url, min(options.final_tasks, 200))
    return measure(
        system, options, "direct_lookup", "(a') status read, direct to RunAPI", "runapi",
        workload.direct_lookups(ids),
    )  # fmt: skip


def final_lookups(system: System, options: Options) -> Measurement:
    ids = workload.create_gateway_tasks(system.gateway_url, options.final_tasks, rendering=False)
    return measure(
        system, options, "final_lookup", "(c) lookup of final tasks, gateway", "gateway",
        workload.gateway_lookups(ids),
    )  # fmt: skip


def rendering_polls(system: System, options: Options) -> Polling:
    ids = workload.create_gateway_tasks(system.gateway_url, options.poll_tasks, rendering=True)
    measurement = measure(
        system, options, "rendering_poll",
        f"(d) {options.concurrency} clients polling {len(ids)} rendering tasks, gateway",
        "gateway", workload.gateway_lookups(ids),
        probe=lambda: workload.upstream_status_calls(system.runapi_url),
    )  # fmt: skip
    # The counter is read just before and just after the load, and counts every status call:
    # the clients' lookups and the gateway's own poller alike. A gateway that keeps to one call
    # per task per interval makes at most floor(window / interval) + 1 per task in that window.
    intervals = int(measurement.wall_s // system.poll_interval_s) + 1
    return Polling(
        measurement=measurement, tasks=len(ids), upstream_calls=measurement.probed,
        intervals=intervals,
    )  # fmt: skip


def fixed_rate_creates(system: System, options: Options) -> tuple[Measurement, Measurement]:
    """Creates at ``options.rate`` per second: direct, then through the gateway."""
    direct = measure(
        system, options, "direct_create_rate", f"create at {options.rate:g} RPS, direct",
        "runapi", workload.direct_creates(), rate=options.rate,
    )  # fmt: skip
    gateway = measure(
        system, options, "gateway_create_rate", f"create at {options.rate:g} RPS, gateway",
        "gateway", workload.gateway_creates(), rate=options.rate,
    )  # fmt: skip
    return direct, gateway
