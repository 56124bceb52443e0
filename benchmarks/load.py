"""What a load run is (:class:`LoadSpec`), what it measured (:class:`LoadResult`), and the tool
that runs it.

Two tools: wrk (C, closed loop, used when it is on PATH) and :mod:`benchmarks.httpload`
(pure Python on uvloop with raw HTTP/1.1, in one or more processes; also the only one that
can hold a fixed request rate). Both run outside this process and report the same figures.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from benchmarks.processes import ROOT, die_with_parent

ToolName = Literal["wrk", "python"]


class RequestSet(BaseModel):
    """Requests a run cycles through: one method, headers and body, one or more paths."""

    method: Literal["GET", "POST"]
    paths: list[str] = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    body: str = ""
    expect_status: int = 200


class LoadSpec(BaseModel):
    """One load run against ``base_url`` (``http://127.0.0.1:<port>``)."""

    base_url: str
    requests: RequestSet
    connections: int = Field(ge=1)
    duration_s: float = Field(gt=0)
    warmup_s: float = Field(default=1.0, ge=0)
    rate: float | None = Field(default=None, gt=0)
    """Requests per second in all (an open loop); None: each connection sends back to back."""


class WorkerSpec(BaseModel):
    """What one :mod:`benchmarks.httpload` process runs (its share of a :class:`LoadSpec`)."""

    load: LoadSpec
    connections: int
    rate: float | None
    first_path: int
    latencies_path: str


class WorkerResult(BaseModel):
    requests: int
    """Responses received inside the measured window."""
    errors: int
    """Connection errors, and answers with another status than expected."""
    statuses: dict[str, int]
    window_s: float
    active_s: float
    """From the first request sent (warm-up included) to the last answer."""
    late: int = 0
    """Fixed rate only: requests sent more than 5 ms after their scheduled time."""


class LoadResult(BaseModel):
    """A whole run, every process merged. Latencies in milliseconds."""

    tool: str
    requests: int
    errors: int
    statuses: dict[str, int]
    throughput: float
    p50_ms: float
    p99_ms: float
    active_s: float
    late: int
    loader_cpu_s: float


def choose_tool(requested: str) -> ToolName:
    if requested == "wrk" or (requested == "auto" and shutil.which("wrk")):
        if not shutil.which("wrk"):
            raise RuntimeError("--tool wrk: wrk is not on PATH (apt-get install wrk)")
        return "wrk"
    return "python"


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


def run_load(spec: LoadSpec, tool: ToolName, processes: int) -> LoadResult:
    """Run ``spec`` with ``tool``; a fixed-rate spec always runs in :mod:`benchmarks.httpload`."""
    before = _children_cpu()
    if tool == "wrk" and spec.rate is None:
        from benchmarks.wrk import run_wrk

        result = run_wrk(spec)
    else:
        result = _run_httpload(spec, processes if spec.rate is None else 1)
    return result.model_copy(update={"loader_cpu_s": _children_cpu() - before})


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_httpload(spec: LoadSpec, processes: int) -> LoadResult:
    processes = max(1, min(processes, spec.connections))
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        workers: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
        try:
            for index in range(processes):
                workers.append(_start_worker(spec, index, processes, Path(tmp)))
            deadline = time.monotonic() + spec.warmup_s + spec.duration_s + 30
            for process, _, _ in workers:
                process.wait(max(1.0, deadline - time.monotonic()))
        finally:
            for process, _, _ in workers:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        results: list[WorkerResult] = []
        latencies = array("d")
        for process, result_path, latency_path in workers:
            if process.returncode != 0 or not result_path.exists():
                raise RuntimeError(f"a load worker failed (exit status {process.returncode})")
            results.append(WorkerResult.model_validate_json(result_path.read_text()))
            with latency_path.open("rb") as f:
                latencies.frombytes(f.read())
    return _merge(results, latencies)


def _start_worker(
    spec: LoadSpec, index: int, count: int, tmp: Path
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    connections = spec.connections // count + (1 if index < spec.connections % count else 0)
    latency_path = tmp / f"latencies-{index}.bin"
    result_path = tmp / f"result-{index}.json"
    worker = WorkerSpec(
        load=spec,
        connections=connections,
        rate=spec.rate / count if spec.rate else None,
        first_path=index * len(spec.requests.paths) // count,
        latencies_path=str(latency_path),
    )
    spec_path = tmp / f"spec-{index}.json"
    spec_path.write_text(worker.model_dump_json())
    process = subprocess.Popen(  # noqa: S603 - our own module, fixed argv
        [sys.executable, "-m", "benchmarks.httpload", str(spec_path), str(result_path)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,  # the benchmark is single-threaded
    )
    return process, result_path, latency_path


def _merge(results: list[WorkerResult], latencies: array[float]) -> LoadResult:
    statuses: dict[str, int] = {}
    for result in results:
        for status, count in result.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    ordered = sorted(latencies)
    return LoadResult(
        tool="python",
        requests=sum(r.requests for r in results),
        errors=sum(r.errors for r in results),
        statuses=statuses,
        throughput=sum(r.requests / r.window_s for r in results if r.window_s > 0),
        p50_ms=percentile(ordered, 0.50) * 1000,
        p99_ms=percentile(ordered, 0.99) * 1000,
        active_s=max(r.active_s for r in results),
        late=sum(r.late for r in results),
        loader_cpu_s=0.0,
    )


def describe(result: LoadResult) -> str:
    """One line for the console."""
    return json.dumps(
        {
            "tool": result.tool,
            "requests": result.requests,
            "errors": result.errors,
            "req_s": round(result.throughput),
            "p50_ms": round(result.p50_ms, 2),
            "p99_ms": round(result.p99_ms, 2),
        }
    )
