"""Driving wrk: a generated Lua script sets the method, headers, body and paths, and reports
wrk's own exact percentiles as one JSON line from its ``done`` hook.

wrk holds a closed loop only (no fixed rate; wrk2 would). It has no warm-up switch, so a
short unmeasured run goes first.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
from pathlib import Path

from benchmarks.load import LoadResult, LoadSpec
from benchmarks.processes import die_with_parent

MARKER = "BENCHJSON "
THREADS = 2

_SCRIPT = """
local paths = {%(paths)s}
local method = "%(method)s"
local body = %(body)s
local headers = {%(headers)s}
local reqs = {}
local i = 0

function init(args)
  for n, path in ipairs(paths) do
    reqs[n] = wrk.format(method, path, headers, body)
  end
  i = math.random(#reqs)
end

function request()
  i = i %% #reqs + 1
  return reqs[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(marker)s{"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d, "p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_string(text: str) -> str:
    """A Lua long-bracket string literal holding ``text`` verbatim."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def script(spec: LoadSpec) -> str:
    req = spec.requests
    return _SCRIPT % {
        "paths": ", ".join(_lua_string(p) for p in req.paths),
        "method": req.method,
        "body": _lua_string(req.body) if req.body else "nil",
        "headers": ", ".join(
            f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in req.headers.items()
        ),
        "marker": MARKER,
    }


def _wrk(spec: LoadSpec, script_path: Path, seconds: int) -> dict[str, int]:
    argv = [
        "wrk", f"-t{min(THREADS, spec.connections)}", f"-c{spec.connections}", f"-d{seconds}s",
        "--timeout", "5s", "-s", str(script_path), spec.base_url,
    ]  # fmt: skip
    done = subprocess.run(  # noqa: S603 - fixed argv, no shell
        argv,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
        preexec_fn=die_with_parent,  # the benchmark is single-threaded
    )
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            parsed: dict[str, int] = json.loads(line[len(MARKER) :])
            return parsed
    raise RuntimeError(f"wrk failed (exit {done.returncode}): {done.stderr or done.stdout}")


def run_wrk(spec: LoadSpec) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script_path = Path(tmp) / "bench.lua"
        script_path.write_text(script(spec))
        warmup_us = 0
        if spec.warmup_s > 0:
            warmup_us = _wrk(spec, script_path, max(1, math.ceil(spec.warmup_s)))["duration_us"]
        seconds = max(1, round(spec.duration_s))
        out = _wrk(spec, script_path, seconds)
    # wrk counts statuses >= 400 as errors; the expected 200/202 are both below.
    errors = out["connect"] + out["read"] + out["write"] + out["status"] + out["timeout"]
    duration_s = out["duration_us"] / 1e6
    return LoadResult(
        tool="wrk",
        requests=out["requests"],
        errors=errors,
        statuses={"<400": out["requests"] - out["status"], ">=400": out["status"]},
        throughput=out["requests"] / duration_s if duration_s > 0 else 0.0,
        p50_ms=out["p50_us"] / 1000,
        p99_ms=out["p99_us"] / 1000,
        active_s=duration_s + warmup_us / 1e6,
        late=0,
        loader_cpu_s=0.0,
    )
