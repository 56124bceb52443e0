"""Targets (issue 6), the results table, and ``RESULTS.md``."""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from benchmarks.memory import MemoryResult
from benchmarks.processes import Memory
from benchmarks.scenarios import Measurement, Polling

KIB = 1024
MIB = 1024 * 1024
TARGET_CREATES_S = 1500
TARGET_LOOKUPS_S = 8000
TARGET_LOOKUP_P99_MS = 20
TARGET_OVERHEAD_P50_MS = 1
TARGET_OVERHEAD_P99_MS = 5
TARGET_CALLS_PER_INTERVAL = 1
TARGET_BYTES_PER_TASK = 2 * KIB
TARGET_RSS_BYTES = 150 * MIB
MAX_ERROR_RATE = 0.001


@dataclass(frozen=True)
class Row:
    scenario: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    throughput: float | None = None
    ratio: str = ""
    measured: str = ""
    target: str = "reference"
    passed: bool | None = None


@dataclass(frozen=True)
class Results:
    direct_create: Measurement
    gateway_create: Measurement
    direct_lookup: Measurement
    final_lookup: Measurement
    polling: Polling
    direct_rate: Measurement
    gateway_rate: Measurement
    memory: list[MemoryResult]
    gateway_memory: Memory
    """After the load, over the gateway's processes: with workers, the parent, every worker
    and multiprocessing's resource tracker."""
    gateway_workers: int = 1


def _load_row(
    m: Measurement,
    ratio: str = "1.00",
    *,
    measured: str = "",
    target: str = "reference",
    passed: bool | None = None,
) -> Row:
    load = m.load
    return Row(m.label, load.p50_ms, load.p99_ms, load.throughput, ratio, measured, target, passed)


def _valid(*measurements: Measurement) -> bool:
    """False when a run had errors: its figures do not count."""
    return all(m.load.errors <= MAX_ERROR_RATE * max(1, m.load.requests) for m in measurements)


def rows(r: Results) -> list[Row]:
    creates = r.gateway_create.load
    lookups = r.final_lookup.load
    polls = r.polling
    over50 = r.gateway_rate.load.p50_ms - r.direct_rate.load.p50_ms
    over99 = r.gateway_rate.load.p99_ms - r.direct_rate.load.p99_ms
    lat_ratio = r.gateway_rate.load.p50_ms / max(r.direct_rate.load.p50_ms, 1e-9)
    table = [
        _load_row(r.direct_create),
        _load_row(
            r.gateway_create,
            f"{creates.throughput / r.direct_create.load.throughput:.2f}",
            measured=f"{creates.throughput:,.0f} creates/s",
            target=f"≥ {TARGET_CREATES_S:,} creates/s",
            passed=creates.throughput >= TARGET_CREATES_S and _valid(r.gateway_create),
        ),
        _load_row(r.direct_lookup),
        _load_row(
            r.final_lookup,
            f"{lookups.throughput / r.direct_lookup.load.throughput:.2f}",
            measured=f"{lookups.throughput:,.0f}/s, p99 {lookups.p99_ms:.1f} ms",
            target=f"≥ {TARGET_LOOKUPS_S:,}/s, p99 ≤ {TARGET_LOOKUP_P99_MS} ms",
            passed=lookups.throughput >= TARGET_LOOKUPS_S
            and lookups.p99_ms <= TARGET_LOOKUP_P99_MS
            and _valid(r.final_lookup),
        ),
        _load_row(
            polls.measurement,
            f"{polls.measurement.load.throughput / r.direct_lookup.load.throughput:.2f}",
            measured=(
                f"{polls.calls_per_task_interval:.2f} upstream calls/task/interval "
                f"({polls.upstream_calls} calls, {polls.tasks} tasks, {polls.intervals} intervals; "
                f"clients poll each task {polls.measurement.load.throughput / polls.tasks:,.0f}/s)"
            ),
            target=f"≤ {TARGET_CALLS_PER_INTERVAL} upstream call/task/interval",
            passed=polls.calls_per_task_interval <= TARGET_CALLS_PER_INTERVAL
            and _valid(polls.measurement),
        ),
        _load_row(r.direct_rate),
        _load_row(
            r.gateway_rate,
            f"{lat_ratio:.2f} (p50 latency)",
            measured=f"overhead p50 {over50:+.2f} ms" + _behind(r.gateway_rate),
            target=f"≤ {TARGET_OVERHEAD_P50_MS} ms p50 overhead",
            passed=over50 <= TARGET_OVERHEAD_P50_MS and _valid(r.direct_rate, r.gateway_rate),
        ),
        Row(
            f"{r.gateway_rate.label}: p99 overhead",
            measured=f"overhead p99 {over99:+.2f} ms",
            target=f"≤ {TARGET_OVERHEAD_P99_MS} ms p99 overhead",
            passed=over99 <= TARGET_OVERHEAD_P99_MS and _valid(r.direct_rate, r.gateway_rate),
        ),
    ]
    for mem in r.memory:
        table.append(
            Row(
                f"(e) Redis memory per task, {mem.kind} record ({mem.tasks:,} tasks)",
                measured=f"{mem.bytes_per_task:,.0f} B (JSON {mem.json_bytes} B)",
                target=f"≤ {TARGET_BYTES_PER_TASK:,} B",
                passed=mem.bytes_per_task <= TARGET_BYTES_PER_TASK,
            )
        )
    held = r.gateway_memory
    total = held.pss_kib * 1024
    largest = held.largest_peak_kib * 1024
    table += [
        Row(
            f"gateway memory after load, all {held.processes} process(es) of {r.gateway_workers} "
            "worker(s): PSS (shared pages counted once)",
            measured=f"{total / MIB:.0f} MiB (summed RSS {held.rss_kib * 1024 / MIB:.0f} MiB)",
            target=f"≤ {TARGET_RSS_BYTES // MIB} MiB",
            passed=total <= TARGET_RSS_BYTES,
        ),
        Row(
            "gateway RSS of the largest process, peak",
            measured=f"{largest / MIB:.0f} MiB",
            target=f"≤ {TARGET_RSS_BYTES // MIB} MiB",
            passed=largest <= TARGET_RSS_BYTES,
        ),
    ]
    return table


def _behind(m: Measurement) -> str:
    """A note when a fixed-rate run could not keep its rate (its latencies include queueing)."""
    if m.load.late <= 0.01 * max(1, m.load.requests):
        return ""
    return f" (fell behind the rate: {m.load.late:,} requests sent > 5 ms late)"


def _num(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _verdict(passed: bool | None) -> str:
    return "—" if passed is None else ("pass" if passed else "FAIL")


def markdown_table(table: list[Row]) -> str:
    head = ["scenario", "p50 ms", "p99 ms", "req/s", "ratio to direct", "measured", "target",
            "result"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        cells = [
            row.scenario, _num(row.p50_ms, 2), _num(row.p99_ms, 2), _num(row.throughput, 0),
            row.ratio or "—", row.measured or "—", row.target, _verdict(row.passed),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_table(measurements: list[Measurement]) -> str:
    """Cores each process used during each run (warm-up included), and the run's errors."""
    names = list(measurements[0].cores)
    lines = [
        "| run | " + " | ".join(names) + " | requests | errors |",
        "|" + "---|" * (len(names) + 3),
    ]
    for m in measurements:
        cores = " | ".join(f"{m.cores.get(n, 0):.2f}" for n in names)
        lines.append(f"| {m.label} | {cores} | {m.load.requests:,} | {m.load.errors:,} |")
    return "\n".join(lines)


def tool_check(r: Results) -> str:
    direct, gateway = r.direct_create.load.throughput, r.gateway_create.load.throughput
    loader = r.gateway_create.cores["load generator"]
    verdict = (
        "the direct path is faster, so the load tool is not what limits the gateway figures"
        if direct > gateway
        else "WARNING: the gateway path is not slower than the direct one, so the tool may be "
        "the limit"
    )
    return (
        f"Tool check: direct creates {direct:,.0f}/s vs gateway creates {gateway:,.0f}/s — "
        f"{verdict} (load generator used {loader:.2f} cores during the gateway run)."
    )


def machine() -> dict[str, str]:
    """What the run ran on. Call it before the run: the load average tells whether something
    else was using the cores."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {
        "CPU": cpu,
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kib / MIB:.1f} GiB",
        "Python": platform.python_version(),
        "kernel": platform.release(),
    }


def _measurements(r: Results) -> list[Measurement]:
    return [
        r.direct_create, r.gateway_create, r.direct_lookup, r.final_lookup,
        r.polling.measurement, r.direct_rate, r.gateway_rate,
    ]  # fmt: skip


def console(r: Results) -> str:
    return "\n\n".join(
        [
            markdown_table(rows(r)),
            tool_check(r),
            "CPU cores used per run:",
            cpu_table(_measurements(r)),
        ]
    )


def results_markdown(
    r: Results, tool: str, command: str, settings: str, host: dict[str, str]
) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = ", ".join(f"{k} {v}" for k, v in host.items())
    return "\n".join(
        [
            "# Benchmark results",
            "",
            f"- Date: {now}",
            f"- Machine: {info}",
            f"- Load tool: {tool}",
            f"- Command: `{command}`",
            f"- Settings: {settings}",
            "",
            "Gateway, simulated resellers (no added latency), redis-server and load generator are",
            "separate processes on this one machine, all over 127.0.0.1; they share its cores.",
            "",
            markdown_table(rows(r)),
            "",
            tool_check(r),
            "",
            "## CPU used during each run (cores; 1.00 = one core busy)",
            "",
            cpu_table(_measurements(r)),
            "",
        ]
    )


HISTORY_HEADING = "## Before and after tuning"
"""Where the hand-written part of RESULTS.md starts: a new run rewrites everything above it
and keeps this section (figures of earlier commits cannot be measured again)."""


def with_history(fresh: str, previous: str | None) -> str:
    """``fresh`` results followed by the tuning history kept from ``previous``, if any."""
    if not previous or HISTORY_HEADING not in previous:
        return fresh
    history = previous[previous.index(HISTORY_HEADING) :]
    return fresh.rstrip("\n") + "\n\n" + history
