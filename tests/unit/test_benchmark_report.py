"""Pieces of ``python -m benchmarks`` that can be checked without running the load."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks.load import LoadResult
from benchmarks.processes import tree_memory
from benchmarks.report import HISTORY_HEADING, with_history
from benchmarks.scenarios import Measurement, Polling
from benchmarks.topologies import HEADING, CreateCost, TopologyRun, markdown, with_section


def test_a_new_run_keeps_the_tuning_history_of_the_previous_results() -> None:
    previous = f"# Benchmark results\n\nold table\n\n{HISTORY_HEADING}\n\nbefore | after\n"
    written = with_history("# Benchmark results\n\nnew table\n", previous)
    assert "new table" in written
    assert "old table" not in written
    assert written.endswith(f"{HISTORY_HEADING}\n\nbefore | after\n")


def test_a_first_run_writes_only_its_results() -> None:
    assert with_history("fresh\n", None) == "fresh\n"
    assert with_history("fresh\n", "no history here") == "fresh\n"


def test_tree_memory_counts_the_children_of_a_process() -> None:
    alone = tree_memory(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with_child = tree_memory(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert alone.processes >= 1
    assert with_child.processes == alone.processes + 1
    assert 0 < alone.pss_kib <= alone.rss_kib
    assert with_child.rss_kib > alone.rss_kib
    assert with_child.largest_peak_kib >= alone.largest_peak_kib


def load(throughput: float, p50_ms: float, p99_ms: float) -> LoadResult:
    return LoadResult(
        tool="python", requests=int(throughput * 10), errors=0, statuses={"202": 1},
        throughput=throughput, p50_ms=p50_ms, p99_ms=p99_ms, active_s=10.0, late=0,
        loader_cpu_s=1.0,
    )  # fmt: skip


def measurement(key: str, result: LoadResult) -> Measurement:
    return Measurement(key=key, label=key, load=result, cores={"gateway": 1.5}, wall_s=11.0)


def topology_run(name: str, creates_per_s: float, cost: CreateCost) -> TopologyRun:
    polling = Polling(measurement("rendering_poll", load(4_684, 14.5, 56.9)), tasks=100,
                      upstream_calls=1_200, intervals=12)  # fmt: skip
    return TopologyRun(
        name=name, creates=measurement("gateway_create", load(creates_per_s, 75.9, 148.0)),
        final_lookups=measurement("final_lookup", load(17_969, 3.7, 7.4)),
        rendering_lookups=polling, redis_cores=0.13, create_cost=cost,
    )  # fmt: skip


def test_create_cost_divides_the_commands_and_the_cpu_by_the_creates_accepted() -> None:
    before = {"evalsha": 10, "set": 5, "info": 3}
    after = {"evalsha": 4_010, "set": 2_005, "zadd": 3_000, "info": 9}
    cost = CreateCost.of(1_000, before, after, gateway_cpu_s=1.6)
    assert cost.creates == 1_000
    assert cost.gateway_cpu_ms == pytest.approx(1.6)
    assert cost.redis_commands == pytest.approx(9.0)  # INFO is the benchmark's own reading
    assert cost.scripts == pytest.approx(4.0)


def test_create_cost_of_a_run_without_creates_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no create"):
        CreateCost.of(0, {}, {"evalsha": 4}, gateway_cpu_s=1.0)


def test_topology_table_shows_what_a_create_costs_on_each_topology() -> None:
    runs = [
        topology_run("one redis-server", 825, CreateCost(8_000, 1.31, 20.4, 4.1)),
        topology_run("Cluster, 3 primaries", 700, CreateCost(7_000, 1.62, 20.3, 4.05)),
    ]
    table = markdown(runs, "settings", "2026-12-01 09:00 UTC").splitlines()
    header = [cell.strip() for cell in table[4].strip("|").split("|")]
    assert header[3:5] == ["gateway CPU ms per create", "Redis commands per create (scripts)"]
    assert table[5] == "|---" * len(header) + "|"
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[6:8]]
    assert [r[:5] for r in rows] == [
        ["one redis-server", "825", "75.9 / 148.0", "1.31", "20.4 (4.1)"],
        ["Cluster, 3 primaries", "700", "75.9 / 148.0", "1.62", "20.3 (4.0)"],
    ]
    assert all(len(r) == len(header) for r in rows)
    assert table[8] == ""  # then what the figures say
    said = table[9]
    assert said.startswith("Cluster, 3 primaries: a create cost the gateway 1.62 ms of CPU "
                           "against 1.31 ms on one redis-server (+24 %), and Redis 20.3 "
                           "commands against 20.4 (4.0 and 4.1 of them scripts).")  # fmt: skip
    assert "`MULTI`" in said  # and what made creates halve on a Cluster before


def test_a_topology_table_of_one_run_compares_nothing() -> None:
    run = topology_run("one redis-server", 825, CreateCost(8_000, 1.31, 20.4, 4.1))
    assert markdown([run], "settings", "date").endswith(" |\n")


def test_a_topology_section_replaces_the_previous_one_and_keeps_the_rest() -> None:
    previous = f"# Benchmark results\n\nmain table\n\n{HEADING}\n\nold topology table\n"
    written = with_section(f"{HEADING}\n\nnew topology table\n", previous)
    assert written == f"# Benchmark results\n\nmain table\n\n{HEADING}\n\nnew topology table\n"
    assert with_section("only\n", None) == "only\n"
