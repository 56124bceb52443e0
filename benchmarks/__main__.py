"""``python -m benchmarks`` (``make bench``): run every scenario, print the table, write
``benchmarks/RESULTS.md``.

``--quick`` runs each scenario for about two seconds (a smoke test; nothing is written unless
``--output`` is given). Every process started is stopped at the end, on an error, on Ctrl-C
and on SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from benchmarks import report, scenarios, topologies
from benchmarks.load import ToolName, choose_tool
from benchmarks.memory import measure_memory
from benchmarks.processes import (
    ROOT,
    ProcessStack,
    gateway_config,
    start_gateway,
    start_redis,
    start_sandbox,
    tree_memory,
)

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
QUICK = {
    "duration": 2.0, "warmup": 0.5, "tasks": 10_000, "final_tasks": 200, "poll_tasks": 20,
}  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    add = parser.add_argument
    add("--duration", type=float, default=10.0, help="seconds measured per run (default 10)")
    add("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    add("--concurrency", type=int, default=64, help="connections for throughput runs")
    add("--rate", type=float, default=200.0, help="requests/s of the fixed-rate create runs")
    add("--tasks", type=int, default=100_000, help="tasks stored per Redis memory run")
    add("--final-tasks", type=int, default=1000, help="final tasks the lookups cycle over")
    add("--poll-tasks", type=int, default=100, help="rendering tasks the clients poll")
    add("--poll-interval", type=float, default=1.0, help="the gateway's status.poll_interval_s")
    add("--workers", type=int, default=default_workers(),
        help="gateway worker processes (default: the CPU count, at most 4)")  # fmt: skip
    add("--tool", choices=["auto", "wrk", "python"], default="auto",
        help="load tool: wrk if on PATH (auto), or the built-in Python one")  # fmt: skip
    add("--load-processes", type=int, default=1, help="processes of the Python load tool")
    add("--quick", action="store_true", help="~2 s per run, 10,000 tasks: a smoke test")
    add("--output", type=Path, help="where to write the results (default benchmarks/RESULTS.md; "
        "nothing in --quick mode)")  # fmt: skip
    add("--keep-workdir", action="store_true", help="keep configs and logs of the processes")
    add("--redis-topologies", action="store_true",
        help="only (b), (c) and (d), on one redis-server and on a 3-primary Redis Cluster; "
        "writes the 'Redis topologies' section of the results")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    if args.output is None and not args.quick:
        args.output = RESULTS
    return args


def default_workers() -> int:
    """One gateway worker per core, up to 4: past that the load generator, the sandbox and
    Redis on the same host are the limit."""
    return max(1, min(os.cpu_count() or 1, 4))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def options_of(args: argparse.Namespace, tool: ToolName) -> scenarios.Options:
    return scenarios.Options(
        duration_s=args.duration,
        warmup_s=args.warmup,
        concurrency=args.concurrency,
        rate=args.rate,
        final_tasks=args.final_tasks,
        poll_tasks=args.poll_tasks,
        tool=tool,
        load_processes=args.load_processes,
    )


def run(args: argparse.Namespace, stack: ProcessStack, workdir: Path) -> report.Results:
    tool = choose_tool(args.tool)
    print(f"load tool: {tool_label(tool, args)}; work dir {workdir}", flush=True)
    redis = start_redis(stack, workdir / "redis")
    sandbox, urls = start_sandbox(stack, workdir)
    config = gateway_config(urls.runapi, redis.url, workdir / "gateway-data", args.poll_interval)
    gateway, gateway_url = start_gateway(stack, workdir, config, args.workers)
    system = scenarios.System(
        gateway_url=gateway_url,
        runapi_url=urls.runapi,
        pids={"gateway": gateway.pid, "sandbox": sandbox.pid, "redis-server": redis.pid},
        poll_interval_s=args.poll_interval,
    )
    options = options_of(args, tool)
    direct_create = scenarios.direct_create(system, options)
    gateway_create = scenarios.gateway_create(system, options)
    direct_rate, gateway_rate = scenarios.fixed_rate_creates(system, options)
    direct_lookup = scenarios.direct_lookup(system, options)
    final_lookup = scenarios.final_lookups(system, options)
    # Last: its tasks never finish, so the gateway's poller keeps reading them.
    polling = scenarios.rendering_polls(system, options)
    if not gateway.alive():
        raise RuntimeError(f"the gateway died under load: {gateway.log_tail()}")
    held = tree_memory(gateway.pid)  # the parent and its workers together
    stack.stop_all()  # the memory runs need neither the gateway nor the load
    print(f"  (e) storing {args.tasks:,} tasks per record kind in a fresh Redis…", flush=True)
    memory = [measure_memory(stack, workdir, args.tasks, kind) for kind in ("rendering", "final")]
    return report.Results(
        direct_create=direct_create,
        gateway_create=gateway_create,
        direct_lookup=direct_lookup,
        final_lookup=final_lookup,
        polling=polling,
        direct_rate=direct_rate,
        gateway_rate=gateway_rate,
        memory=memory,
        gateway_memory=held,
        gateway_workers=args.workers,
    )


def tool_label(tool: str, args: argparse.Namespace) -> str:
    python = f"benchmarks.httpload (Python, uvloop + httptools, {args.load_processes} process(es))"
    if tool == "wrk":
        return f"wrk (2 threads) for closed-loop runs; {python} for the fixed-rate runs"
    return python


def settings_line(args: argparse.Namespace) -> str:
    return (
        f"{args.duration:g} s measured per run after {args.warmup:g} s warm-up, "
        f"{args.concurrency} connections, fixed rate {args.rate:g} RPS, "
        f"{args.final_tasks} final tasks looked up, {args.poll_tasks} rendering tasks polled, "
        f"status.poll_interval_s {args.poll_interval:g}, {args.tasks:,} tasks per memory run, "
        f"gateway log level INFO, {workers_label(args.workers)}"
    )


def workers_label(workers: int) -> str:
    if workers == 1:
        return "one gateway worker"
    return f"{workers} gateway workers (`gateway serve --workers {workers}`)"


def command_line(argv: Sequence[str]) -> str:
    python = Path(sys.executable)
    shown = str(python.relative_to(ROOT)) if python.is_relative_to(ROOT) else str(python)
    line = shlex.join([shown, "-m", "benchmarks", *argv])
    return line + ("  (= make bench)" if not argv else "")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    host = report.machine()
    stack = ProcessStack()
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        if args.redis_topologies:
            return run_topologies(args, stack, workdir, host)
        results = run(args, stack, workdir)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C waits
        for problem in stack.stop_all():
            print(f"could not stop {problem}", file=sys.stderr)
        signal.signal(signal.SIGINT, previous)
        if args.keep_workdir:
            print(f"logs and configs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    tool = tool_label(choose_tool(args.tool), args)
    print()
    print(report.console(results))
    if args.output is not None:
        text = report.results_markdown(results, tool, command_line(argv), settings_line(args), host)
        previous = args.output.read_text() if args.output.exists() else None
        args.output.write_text(report.with_history(text, previous))
        print(f"written to {args.output}")
    return 0


def run_topologies(
    args: argparse.Namespace, stack: ProcessStack, workdir: Path, host: dict[str, str]
) -> int:
    tool = choose_tool(args.tool)
    print(f"load tool: {tool_label(tool, args)}; work dir {workdir}", flush=True)
    runs = topologies.run(args, stack, workdir, options_of(args, tool))
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    machine = ", ".join(f"{k} {v}" for k, v in host.items())
    settings = (
        f"{tool_label(tool, args)}; {args.duration:g} s measured per run after "
        f"{args.warmup:g} s warm-up, {args.concurrency} connections, {args.final_tasks} final "
        f"tasks looked up, {args.poll_tasks} rendering tasks polled, status.poll_interval_s "
        f"{args.poll_interval:g}, {workers_label(args.workers)}; {machine}"
    )
    section = topologies.markdown(runs, settings, date)
    print()
    print(section)
    if args.output is not None:
        previous = args.output.read_text() if args.output.exists() else None
        args.output.write_text(topologies.with_section(section, previous))
        print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
