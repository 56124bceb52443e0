"""A scripted run of the real gateway, for a Prometheus to scrape.

Starts ``python -m providers.sandbox`` and ``python -m gateway serve`` (with its embedded
Redis) on loopback ports, the gateway on the port it is given (where Prometheus scrapes it),
and sends a mixed workload through phases that exercise what the dashboard shows (a reseller
answering 503, a rate limit, a reseller that hangs, slower renders).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from providers.sandbox.ready import parse_ready_line

ROOT = Path(__file__).resolve().parents[1]
CLIENT_KEY = "render-client-key"
RUNAPI_KEY = "render-runapi-key"
APIINONE_KEY = "render-apiinone-key"
IMAGE = "https://example.com/first-frame.png"
PRICES = {
    "runapi": {
        "standard": {"6s_768P": 0.30, "10s_768P": 0.50, "6s_1080P": 0.50},
        "pro": {"6s_768P": 0.45, "10s_768P": 0.90, "6s_1080P": 0.80},
    },
    "apiinone": {
        "standard": {"6s_768P": 0.32, "10s_768P": 0.45, "6s_1080P": 0.45},
        "pro": {"6s_768P": 0.48, "10s_768P": 0.85, "6s_1080P": 0.85},
    },
}
"""Each reseller cheapest for some combinations, so both take traffic under ``cheapest``."""


@dataclass(frozen=True)
class Phase:
    at: float
    """When it starts, as a fraction of the run."""
    name: str
    runapi: dict[str, Any] = field(default_factory=dict)
    apiinone: dict[str, Any] = field(default_factory=dict)


PHASES = (
    Phase(
        0.0,
        "healthy",
        {"create_fault": "none", "latency_ms": 120, "queue_s": 2, "complete_after_s": 14},
        {"create_fault": "none", "latency_ms": 260, "queue_s": 3, "complete_after_s": 20},
    ),
    Phase(0.22, "runapi answers 503", {"create_fault": "http_503", "latency_ms": 30}),
    Phase(
        0.42,
        "apiinone rate-limited",
        {"create_fault": "none", "latency_ms": 120},
        {"create_fault": "http_429", "retry_after": "8"},
    ),
    Phase(
        0.56,
        "runapi hangs past the timeout",
        {"create_fault": "hang", "hang_s": 4},
        {"create_fault": "none"},
    ),
    Phase(
        0.64,
        "slower renders",
        {"create_fault": "none", "latency_ms": 350, "complete_after_s": 40},
        {"latency_ms": 600, "complete_after_s": 30},
    ),
)


@dataclass(frozen=True)
class Recorded:
    """When the run's traffic started and ended (Unix time)."""

    start: float
    end: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        GATEWAY_KEY_RENDER=CLIENT_KEY, RUNAPI_API_KEY=RUNAPI_KEY, APIINONE_API_KEY=APIINONE_KEY
    )
    return env


def _gateway_config(port: int, runapi: str, apiinone: str, data_dir: Path) -> dict[str, Any]:
    providers = {
        name: {
            "kind": name,
            "base_url": url,
            "api_key_env": f"{name.upper()}_API_KEY",
            "timeout_s": 1.5,
            "prices_usd": PRICES[name],
        }
        for name, url in (("runapi", runapi), ("apiinone", apiinone))
    }
    return {
        "server": {"host": "127.0.0.1", "port": port, "drain_s": 0},
        "redis": {"url": None, "data_dir": str(data_dir)},
        "auth": {"keys": [{"name": "render", "key_env": "GATEWAY_KEY_RENDER"}]},
        "routing": {"circuit": {"failures_to_open": 5, "cooldown_s": 10}},
        "status": {"poll_interval_s": 1},
        "log": {"level": "WARNING"},
        # The simulated resellers' video links are on loopback: let the copier fetch them.
        "storage": {"allow_private_sources": True},
        "providers": providers,
    }


@contextlib.contextmanager
def _processes(workdir: Path, port: int) -> Iterator[tuple[str, str, str]]:
    """The sandbox and the gateway, running; yields (gateway, runapi, apiinone) URLs."""
    sandbox = subprocess.Popen(  # noqa: S603 - this interpreter, our module
        [
            sys.executable,
            "-m",
            "providers.sandbox",
            "--runapi-port=0",
            "--apiinone-port=0",
            "--minimax-port=0",
            "--fal-port=0",
            f"--runapi-key={RUNAPI_KEY}",
            f"--apiinone-key={APIINONE_KEY}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    gateway: subprocess.Popen[bytes] | None = None
    try:
        assert sandbox.stdout is not None
        ready, _, _ = select.select([sandbox.stdout], [], [], 20)
        line = sandbox.stdout.readline() if ready else ""
        urls = parse_ready_line(line)
        if urls is None:
            raise RuntimeError(f"the sandbox did not start: {line!r}")
        runapi_url, apiinone_url = urls
        config = workdir / "gateway.yaml"
        config.write_text(
            yaml.safe_dump(_gateway_config(port, runapi_url, apiinone_url, workdir / "data"))
        )
        with (workdir / "gateway.log").open("wb") as log:
            gateway = subprocess.Popen(  # noqa: S603 - this interpreter, our module
                [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
                cwd=ROOT,
                env=_env(),
                stdout=log,
                stderr=log,
            )
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, gateway)
        yield url, runapi_url, apiinone_url
    finally:
        for process in (gateway, sandbox):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(15)
        if sandbox.stdout is not None:
            sandbox.stdout.close()


def _wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the gateway exited; see gateway.log")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/healthz", timeout=0.5).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("the gateway did not become healthy")


class Traffic:
    """Clients creating and polling tasks, with a share of bad requests."""

    def __init__(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        self._client = client
        self._rng = rng
        self._open: set[str] = set()
        self._running: set[asyncio.Task[None]] = set()

    def spawn(self) -> None:
        task = asyncio.create_task(self._one())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _one(self) -> None:
        r = self._rng.random()
        if r < 0.03:
            await self._client.get("/v1/videos/vid_unknown", headers={"Authorization": ""})
        elif r < 0.06:
            await self._client.post(
                "/v1/videos",
                json={"prompt": "x", "image": IMAGE, "duration": 10, "resolution": "1080P"},
            )
        elif r < 0.08:
            await self._client.get("/v1/videos/vid_aaaaaaaaaaaaaaaaaaaaaaaaaa")
        else:
            marker = "[sandbox:content] " if r < 0.11 else ""
            marker += "[sandbox:fail] " if self._rng.random() < 0.08 else ""
            combo = self._rng.choices(
                [(6, "768P"), (10, "768P"), (6, "1080P")], weights=[60, 25, 15]
            )[0]
            body = {
                "prompt": f"{marker}a paper boat on a rainy street",
                "image": IMAGE,
                "tier": "pro" if self._rng.random() < 0.2 else "standard",
                "duration": combo[0],
                "resolution": combo[1],
            }
            response = await self._client.post("/v1/videos", json=body)
            if response.status_code == 202:
                self._open.add(response.json()["id"])

    def poll(self) -> None:
        """Look every open task up once, concurrently, in the background."""
        for task_id in list(self._open):
            task = asyncio.create_task(self._read(task_id))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _read(self, task_id: str) -> None:
        response = await self._client.get(f"/v1/videos/{task_id}")
        if response.status_code != 200 or response.json()["status"] in ("completed", "failed"):
            self._open.discard(task_id)

    async def drain(self) -> None:
        await asyncio.gather(*self._running, return_exceptions=True)


async def _drive(
    url: str, sandboxes: dict[str, str], seconds: float, rate: float, seed: int
) -> Recorded:
    rng = random.Random(seed)  # noqa: S311 - a workload, not security
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client,
        httpx.AsyncClient(timeout=5) as control,
    ):
        traffic = Traffic(client, rng)
        start = time.time()
        next_poll = start
        phases = list(PHASES)
        while (now := time.time()) < start + seconds:
            while phases and now >= start + phases[0].at * seconds:
                phase = phases.pop(0)
                print(f"{now - start:6.1f}s  {phase.name}", file=sys.stderr)
                for name, knobs in (("runapi", phase.runapi), ("apiinone", phase.apiinone)):
                    if knobs:
                        await control.put(f"{sandboxes[name]}/_sandbox/knobs", json=knobs)
            if now >= next_poll:
                traffic.poll()
                next_poll += 2.0
            traffic.spawn()
            await asyncio.sleep(rng.expovariate(rate))
        await traffic.drain()
    return Recorded(start, time.time())


def record(
    port: int,
    seconds: float = 240,
    rate: float = 2.0,
    seed: int = 7,
    linger_s: float = 0.0,
    ready: Callable[[], None] | None = None,
) -> Recorded:
    """Run the scripted workload against real processes, the gateway on ``port``; ``ready``
    is called once the gateway answers, before any traffic (to wait for a first scrape); the
    processes stay up ``linger_s`` more seconds after the traffic (for a last scrape)."""
    with (
        tempfile.TemporaryDirectory(prefix="gateway-render-") as tmp,
        _processes(Path(tmp), port) as (
            url,
            runapi,
            apiinone,
        ),
    ):
        if ready is not None:
            ready()
        recorded = asyncio.run(
            _drive(url, {"runapi": runapi, "apiinone": apiinone}, seconds, rate, seed)
        )
        time.sleep(linger_s)
        return recorded
