"""Real processes: ``python -m providers.sandbox``, ``python -m gateway serve`` and the
suite's redis-server, talking over loopback sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from tests.sandbox_process import (
    APIINONE_KEY,
    FAL_KEY,
    MINIMAX_KEY,
    RUNAPI_KEY,
    Running,
    start_sandbox,
    stop_sandbox,
)

CLIENT_KEY = "e2e-client-key-for-tests"
OTHER_KEY = "e2e-other-client-key"
WEBHOOK_SECRET = "whsec_ZTJlLXdlYmhvb2stc2VjcmV0LWZvci10ZXN0cw=="
ENV = {
    "GATEWAY_KEY_DEMO": CLIENT_KEY,
    "GATEWAY_KEY_OTHER": OTHER_KEY,
    "RUNAPI_API_KEY": RUNAPI_KEY,
    "APIINONE_API_KEY": APIINONE_KEY,
    "MINIMAX_API_KEY": MINIMAX_KEY,
    "FAL_KEY": FAL_KEY,
    "GATEWAY_WEBHOOK_SECRET": WEBHOOK_SECRET,
}
SECRETS = (CLIENT_KEY, OTHER_KEY, RUNAPI_KEY, APIINONE_KEY, MINIMAX_KEY, FAL_KEY, WEBHOOK_SECRET)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _base_env() -> dict[str, str]:
    # The child sees no GATEWAY_* from the developer's shell, only what the test gives it.
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}


@dataclass
class Sandbox:
    running: Running

    @property
    def runapi(self) -> str:
        return self.running.runapi_url

    @property
    def apiinone(self) -> str:
        return self.running.apiinone_url

    @property
    def minimax(self) -> str:
        return self.running.minimax_url

    @property
    def fal(self) -> str:
        return self.running.fal_url

    def url(self, which: str) -> str:
        return {
            "runapi": self.runapi,
            "apiinone": self.apiinone,
            "minimax": self.minimax,
            "fal": self.fal,
        }[which]

    def stats(self, which: str) -> dict[str, Any]:
        counters: dict[str, Any] = httpx.get(f"{self.url(which)}/_sandbox/stats").json()["counters"]
        return counters

    def authorizations(self, which: str) -> list[str]:
        """Every distinct Authorization header the reseller's API received since the reset."""
        seen: list[str] = httpx.get(f"{self.url(which)}/_sandbox/stats").json()["authorizations"]
        return seen

    def tasks(self, which: str) -> list[str]:
        """Every task id the reseller accepted (and would bill) since the last reset."""
        ids: list[str] = httpx.get(f"{self.url(which)}/_sandbox/tasks").json()["tasks"]
        return ids

    def knobs(self, which: str, **knobs: Any) -> None:
        httpx.put(f"{self.url(which)}/_sandbox/knobs", json=knobs).raise_for_status()

    def reset(self) -> None:
        for url in (self.runapi, self.apiinone, self.minimax, self.fal):
            httpx.post(f"{url}/_sandbox/reset").raise_for_status()


def minimax_provider(sandbox: Sandbox, **overrides: Any) -> dict[str, Any]:
    """A MiniMax account on the simulated MiniMax, priced as the shipped config."""
    config = {
        "kind": "minimax",
        "base_url": sandbox.minimax,
        "api_key_env": "MINIMAX_API_KEY",
        "timeout_s": 1.5,
        "prices_usd": {
            "hailuo-2.3": {"standard": {"6s_768P": 0.28, "10s_768P": 0.56, "6s_1080P": 0.49}},
            "hailuo-2.3-fast": {"standard": {"6s_768P": 0.19, "10s_768P": 0.32, "6s_1080P": 0.33}},
        },
    }
    return {**config, **overrides}


@pytest.fixture(scope="session")
def sandbox_process() -> Iterator[Sandbox]:
    running = start_sandbox("--queue-s=0.2", "--complete-after-s=1.0")
    yield Sandbox(running)
    stop_sandbox(running)


@pytest.fixture
def sandbox(sandbox_process: Sandbox) -> Sandbox:
    sandbox_process.reset()
    return sandbox_process


def gateway_config(
    sandbox: Sandbox, redis_url: str | None, data_dir: Path, **overrides: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {
        # No drain on SIGTERM: tests stop many gateways (test_drain_e2e.py sets one).
        "server": {"host": "127.0.0.1", "drain_s": 0},
        "redis": {"url": redis_url, "data_dir": str(data_dir)},
        "auth": {
            "keys": [
                {"name": "demo", "key_env": "GATEWAY_KEY_DEMO"},
                {"name": "other", "key_env": "GATEWAY_KEY_OTHER"},
            ]
        },
        "status": {"poll_interval_s": 1},
        # Finished videos are copied (the default) from the sandbox, which listens on loopback.
        "storage": {"allow_private_sources": True},
        "log": {"level": "DEBUG"},
        "providers": {
            "runapi": {
                "kind": "runapi",
                "base_url": sandbox.runapi,
                "api_key_env": "RUNAPI_API_KEY",
                "timeout_s": 1.5,
                "prices_usd": {
                    "standard": {"6s_768P": 0.30, "10s_768P": 0.50, "6s_1080P": 0.50},
                    "pro": {"6s_768P": 0.45, "10s_768P": 0.90, "6s_1080P": 0.80},
                },
            },
            "apiinone": {
                "kind": "apiinone",
                "base_url": sandbox.apiinone,
                "api_key_env": "APIINONE_API_KEY",
                "timeout_s": 1.5,
                "prices_usd": {
                    "standard": {"6s_768P": 0.32, "10s_768P": 0.45, "6s_1080P": 0.45},
                    "pro": {"6s_768P": 0.45, "10s_768P": 0.85, "6s_1080P": 0.85},
                },
            },
        },
    }
    for section, values in overrides.items():
        config[section] = {**config.get(section, {}), **values}
    return config


class Gateway:
    """One ``python -m gateway serve`` process; its stderr (the logs) goes to ``log_path``."""

    def __init__(
        self,
        config: dict[str, Any],
        workdir: Path,
        name: str = "gw",
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``args``: more ``serve`` flags (``--workers 2``); ``env``: more environment."""
        self.workdir = workdir
        self.args = list(args)
        self.env = dict(env or {})
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"{name}.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> Gateway:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(self.config_path),
             "--port", str(self.port), *self.args],
            stdout=log,
            stderr=log,
            env={**_base_env(), **ENV, **self.env},
            cwd=self.workdir,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gateway exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"gateway did not start: {self.log_path.read_text()[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def client(self, key: str = CLIENT_KEY) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test item (``gateways`` reads the call's outcome)."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
LOG_TAIL = 6000
"""Characters of each gateway's log shown with a failed test."""


@pytest.fixture
def gateways(request: pytest.FixtureRequest) -> Iterator[list[Gateway]]:
    """Every gateway a test starts is registered here and stopped at its end. When the test
    failed, the end of each gateway's log goes into the report (an error a 500 hides, say)."""
    started: list[Gateway] = []
    yield started
    for gateway in started:
        gateway.stop()
    call = request.node.stash.get(REPORTS, {}).get("call")
    if call is not None and call.failed:
        for gateway in started:
            tail = gateway.log_path.read_text(errors="replace")[-LOG_TAIL:]
            call.sections.append((f"gateway log {gateway.log_path.name}", tail))


def wait_final(client: httpx.Client, task_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        task: dict[str, Any] = client.get(f"/v1/videos/{task_id}").json()
        if task["status"] in ("completed", "failed"):
            return task
        assert time.monotonic() < deadline, f"task still {task['status']}"
        time.sleep(0.25)


@pytest.fixture(autouse=True)
def clean_redis(redis_url: str) -> None:
    """Each test starts with no tasks, circuits or idempotency records from another."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
