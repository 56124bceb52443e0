"""Reload without restart: a real ``gateway serve`` process re-reads its config file on
``SIGHUP`` (or ``gateway reload``): prices, enabled flags, rate limits and client keys change at
once; a bad file keeps the running config; keys that cannot change live are named in the log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import (
    CLIENT_KEY,
    ENV,
    OTHER_KEY,
    Gateway,
    Sandbox,
    _base_env,
    gateway_config,
    wait_final,
)
from tests.scrape import Scrape

pytestmark = pytest.mark.e2e
BODY = {"prompt": "a lighthouse at dusk", "image": "https://example.com/first-frame.png"}
FRESH = {"Authorization": f"Bearer {CLIENT_KEY}", "Connection": "close"}
LATE_KEY = "e2e-late-client-key"  # made up: in the started environment, not in the first file


def _prices(gateway: Gateway) -> dict[str, Any]:
    with gateway.client() as client:
        listed = client.get("/v1/providers").json()["data"]
    return {p["name"]: (p["enabled"], p["prices_usd"]["standard"]["6s_768P"]) for p in listed}


def _wait_log(gateway: Gateway, needle: str, count: int = 1, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while gateway.logs().count(needle) < count:
        assert time.monotonic() < deadline, f"no {needle!r} in the log: {gateway.logs()[-2000:]}"
        time.sleep(0.05)
    return gateway.logs()


def _workers_catching_sighup(gateway: Gateway) -> int:
    """How many of the parent's worker processes have their ``SIGHUP`` handler installed (the
    lifespan does it): ``SigCgt`` in /proc, bit 0. A worker still starting would be killed by
    the signal's default action, and its replacement start on the new file without a reload."""
    assert gateway.process is not None
    pid = gateway.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    catching = 0
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            status = Path(f"/proc/{child}/status").read_text()
        except FileNotFoundError:  # gone meanwhile
            continue
        if b"spawn_main" not in cmdline:  # multiprocessing's resource tracker, not a worker
            continue
        caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
        catching += (int(caught.split()[1], 16) & (1 << (signal.SIGHUP - 1))) != 0
    return catching


def _until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _reload_cli(gateway: Gateway) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "reload", "--config", str(gateway.config_path)],
        capture_output=True, text=True, timeout=30, cwd=gateway.workdir,
        env={**_base_env(), **ENV, **gateway.env},
    )  # fmt: skip


def _edited(config: dict[str, Any]) -> dict[str, Any]:
    changed: dict[str, Any] = yaml.safe_load(yaml.safe_dump(config))
    changed["providers"]["runapi"]["prices_usd"]["standard"]["6s_768P"] = 0.2
    changed["providers"]["apiinone"]["enabled"] = False
    changed["auth"]["keys"][0]["rate_per_minute"] = 3
    changed["server"]["max_body_bytes"] = 65536  # cannot change live: named in the log
    return changed


def test_gateway_reload_applies_prices_enabled_flags_and_rate_limits_live(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    config = gateway_config(sandbox, redis_url, tmp_path / "data")
    gateway = Gateway(config, tmp_path)
    gateways.append(gateway.start())
    pid_before = gateway.process.pid if gateway.process else None
    assert (tmp_path / "data" / "gateway.pid").read_text().strip() == str(pid_before)
    assert _prices(gateway) == {"runapi": (True, 0.30), "apiinone": (True, 0.32)}
    with gateway.client() as client:
        assert all(client.get("/v1/providers").status_code == 200 for _ in range(6))

    gateway.config_path.write_text(yaml.safe_dump(_edited(config)))
    result = _reload_cli(gateway)
    assert result.returncode == 0, result.stderr
    logs = _wait_log(gateway, "config reloaded")

    assert "server.max_body_bytes" in logs.split("config reloaded", 1)[1]
    assert _prices(gateway) == {"runapi": (True, 0.2), "apiinone": (False, 0.32)}
    with gateway.client() as client:
        created = client.post("/v1/videos", json=BODY)
        assert (created.json()["provider"], created.json()["price_usd"]) == ("runapi", 0.2)
        refused = client.post("/v1/videos", json={**BODY, "routing": {"providers": ["apiinone"]}})
        assert refused.json()["code"] == "unsupported", refused.text  # apiinone is disabled
        statuses = [client.get("/v1/providers").status_code for _ in range(3)]
    assert 429 in statuses  # 3 a minute now; before the reload, unlimited
    assert gateway.process is not None
    assert gateway.process.pid == pid_before  # the same process: no restart
    assert (
        Scrape(httpx.get(f"{gateway.url}/metrics").text).value(
            "gateway_config_reloads_total", outcome="applied"
        )
        == 1
    )


def test_a_bad_file_keeps_the_running_config_and_says_why(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    config = gateway_config(sandbox, redis_url, tmp_path / "data")
    gateway = Gateway(config, tmp_path)
    gateways.append(gateway.start())
    bad = _edited(config)
    bad["providers"]["runapi"]["prices_usd"]["standard"]["6s_768P"] = -1
    gateway.config_path.write_text(yaml.safe_dump(bad))
    assert gateway.process is not None
    os.kill(gateway.process.pid, signal.SIGHUP)

    logs = _wait_log(gateway, "config reload refused")
    assert "a price must be positive" in logs
    assert _prices(gateway) == {"runapi": (True, 0.30), "apiinone": (True, 0.32)}
    assert (
        Scrape(httpx.get(f"{gateway.url}/metrics").text).value(
            "gateway_config_reloads_total", outcome="refused"
        )
        == 1
    )
    cli = _reload_cli(gateway)  # the CLI checks the file first and does not signal
    assert cli.returncode == 2
    assert "a price must be positive" in cli.stderr
    time.sleep(0.3)
    assert gateway.logs().count("config reload refused") == 1


def test_workers_each_reload_when_the_parent_gets_sighup(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    config = gateway_config(sandbox, redis_url, tmp_path / "data")
    gateway = Gateway(config, tmp_path, args=["--workers", "2"])
    gateways.append(gateway.start(timeout_s=40))  # once one worker answers
    _until(lambda: _workers_catching_sighup(gateway) == 2, "the workers did not both start")
    gateway.config_path.write_text(yaml.safe_dump(_edited(config)))
    assert _reload_cli(gateway).returncode == 0
    _wait_log(gateway, "config reloaded", count=2, timeout_s=30)  # one line per worker

    # A new connection per request, so both workers answer some of them.
    for _ in range(8):
        listed = httpx.get(f"{gateway.url}/v1/providers", headers=FRESH, timeout=5)
        if listed.status_code == 429:
            continue
        prices = {p["name"]: p["prices_usd"]["standard"]["6s_768P"] for p in listed.json()["data"]}
        assert prices["runapi"] == 0.2


def test_a_sighup_while_the_gateway_starts_is_applied_once_it_serves(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    """`gateway reload` may signal the process as soon as its pid file names it, before the
    app's handler is in place: the signal's default action would kill it. It is held, and the
    reload applied once the gateway serves."""
    config = gateway_config(sandbox, redis_url, tmp_path / "data")
    gateway = Gateway(config, tmp_path)
    gateways.append(gateway)
    started: list[BaseException | Gateway] = []

    def start() -> None:
        try:
            started.append(gateway.start())
        except AssertionError as exc:  # reported below, from the test's own thread
            started.append(exc)

    starting = threading.Thread(target=start)
    starting.start()
    pid_path = tmp_path / "data" / "gateway.pid"
    _until(lambda: pid_path.exists() and pid_path.read_text().strip() != "", "no pid file", 20)
    gateway.config_path.write_text(yaml.safe_dump(_edited(config)))
    os.kill(int(pid_path.read_text()), signal.SIGHUP)
    starting.join(30)
    assert started == [gateway], started  # alive, and serving
    _wait_log(gateway, "config reloaded")
    assert _prices(gateway)["runapi"] == (True, 0.2)


def _statuses(gateway: Gateway, key: str, path: str = "/v1/providers", times: int = 6) -> set[int]:
    """The statuses of ``times`` requests with ``key``, each on a new connection (so with
    several workers, more than one answers)."""
    headers = {"Authorization": f"Bearer {key}", "Connection": "close"}
    return {httpx.get(f"{gateway.url}{path}", headers=headers, timeout=5).status_code
            for _ in range(times)}  # fmt: skip


@pytest.mark.parametrize("workers", [1, 2])
def test_a_client_removed_from_the_file_is_refused_at_once_after_sighup(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway], workers: int
) -> None:
    """Revocation: a compromised client taken out of ``auth.keys`` gets 401 after the reload,
    on every worker, and its tasks are nobody's to read; the other client goes on, and a
    client added with a variable set in the gateway's environment gets in."""
    config = gateway_config(sandbox, redis_url, tmp_path / "data")  # clients demo and other
    args = ["--workers", str(workers)] if workers > 1 else []
    gateway = Gateway(config, tmp_path, args=args, env={"GATEWAY_KEY_LATE": LATE_KEY})
    gateways.append(gateway.start(timeout_s=40))
    if workers > 1:
        _until(lambda: _workers_catching_sighup(gateway) == workers, "the workers did not start")
    with gateway.client(OTHER_KEY) as other:
        created = other.post("/v1/videos", json=BODY)
        assert created.status_code == 202, created.text
        task_id = created.json()["id"]
        wait_final(other, task_id)  # final: later reads may come through the shortcut
        assert other.get(f"/v1/videos/{task_id}").status_code == 200
    assert _statuses(gateway, LATE_KEY) == {401}

    revoked: dict[str, Any] = yaml.safe_load(yaml.safe_dump(config))
    revoked["auth"]["keys"] = [
        *(k for k in config["auth"]["keys"] if k["name"] != "other"),
        {"name": "late", "key_env": "GATEWAY_KEY_LATE"},
    ]
    gateway.config_path.write_text(yaml.safe_dump(revoked))
    assert gateway.process is not None
    os.kill(gateway.process.pid, signal.SIGHUP)
    _wait_log(gateway, "config reloaded", count=workers, timeout_s=30)  # one line per worker

    assert _statuses(gateway, OTHER_KEY) == {401}
    assert _statuses(gateway, OTHER_KEY, f"/v1/videos/{task_id}") == {401}
    assert _statuses(gateway, CLIENT_KEY) == {200}
    assert _statuses(gateway, CLIENT_KEY, f"/v1/videos/{task_id}") == {404}  # not demo's
    assert _statuses(gateway, LATE_KEY) == {200}
    assert _statuses(gateway, LATE_KEY, f"/v1/videos/{task_id}") == {404}
    assert _statuses(gateway, CLIENT_KEY, "/v1/usage", times=2) == {200}
    scrape = Scrape(httpx.get(f"{gateway.url}/metrics", timeout=5).text)
    assert scrape.value("gateway_config_reloads_total", outcome="applied") == workers
    assert "until a restart" not in gateway.logs()  # the client list needed none
