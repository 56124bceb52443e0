"""Budgets and balance-aware routing across two ``gateway serve`` processes on one Redis, with
the simulated resellers as a process of their own."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import CLIENT_KEY, Gateway, Sandbox, gateway_config

pytestmark = pytest.mark.e2e
BODY = {"prompt": "a kite over dunes", "image": "https://example.com/first-frame.png"}
HEADERS = {"Authorization": f"Bearer {CLIENT_KEY}"}


def two_instances(
    gateways: list[Gateway], tmp_path: Path, config: dict[str, Any]
) -> tuple[Gateway, Gateway]:
    started = []
    for name in ("a", "b"):
        gateway = Gateway(config, tmp_path, name=f"budget-{name}")
        gateways.append(gateway)
        started.append(gateway.start())
    return started[0], started[1]


def with_budget(config: dict[str, Any], **budget: float) -> dict[str, Any]:
    config["auth"]["keys"][0]["budget_usd"] = budget
    return config


def usage(gateway: Gateway) -> dict[str, Any]:
    with gateway.client() as client:
        answer: dict[str, Any] = client.get("/v1/usage").json()
    return answer


async def test_two_instances_together_never_accept_more_than_the_budget(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    config = with_budget(gateway_config(sandbox, redis_url, tmp_path / "data"), day=3.0)
    first, second = two_instances(gateways, tmp_path, config)
    sandbox.knobs("runapi", latency_ms=50)  # creates overlap across the two instances
    async with httpx.AsyncClient(timeout=10, headers=HEADERS) as client:
        answers = await asyncio.gather(
            *(client.post(f"{(first, second)[i % 2].url}/v1/videos", json=BODY)
              for i in range(30))
        )  # fmt: skip
    codes = [a.status_code for a in answers]
    billed = 0.30 * len(sandbox.tasks("runapi")) + 0.32 * len(sandbox.tasks("apiinone"))
    assert billed <= 3.0 + 1e-9
    assert (codes.count(202), codes.count(402)) == (10, 20)
    deadline = time.monotonic() + 15
    while (day := usage(second))["tasks"] < 10:  # the background pollers finish them
        assert time.monotonic() < deadline, day
        await asyncio.sleep(0.25)
    assert (day["spent_usd"], day["reserved_usd"], day["budget_usd"]) == (3.0, 0, 3.0)
    assert day["by_provider"] == {"runapi": {"spent_usd": 3.0, "tasks": 10}}


def provider_of_next_create(gateway: Gateway) -> str:
    with gateway.client() as client:
        task: dict[str, Any] = client.post("/v1/videos", json=BODY).json()
    return str(task["provider"])


def known_balance(gateway: Gateway) -> float | None:
    with gateway.client() as client:
        data = client.get("/v1/providers").json()["data"]
    balance: float | None = next(p["balance_usd"] for p in data if p["name"] == "runapi")
    return balance


def wait_for_balance(gateways: tuple[Gateway, Gateway], expected: float) -> None:
    deadline = time.monotonic() + 2.5  # refresh_s (1 s), one tick to pick it up, and slack
    while any(known_balance(g) != expected for g in gateways):
        assert time.monotonic() < deadline, [known_balance(g) for g in gateways]
        time.sleep(0.1)


def test_a_dry_reseller_account_moves_traffic_on_and_back_once_topped_up(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    config = gateway_config(sandbox, redis_url, tmp_path / "data")
    config["providers"]["runapi"]["balance"] = {"refresh_s": 1, "min_usd": 0}
    started = time.monotonic()  # the first balance read comes with the first instance
    instances = two_instances(gateways, tmp_path, config)
    sandbox.knobs("runapi", balance_cents=20)  # under the 0.30 price
    wait_for_balance(instances, 0.20)
    assert [provider_of_next_create(g) for g in instances] == ["apiinone", "apiinone"]
    assert sandbox.stats("runapi")["create_calls"] == 0  # skipped, not refused with a 402
    sandbox.knobs("runapi", balance_cents=10_000)
    wait_for_balance(instances, 100.0)
    assert [provider_of_next_create(g) for g in instances] == ["runapi", "runapi"]
    reads = sandbox.stats("runapi")["balance_calls"]
    assert reads <= (time.monotonic() - started) / 1 + 2  # one reader for both instances
