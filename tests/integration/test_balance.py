"""Balance-aware routing: the app on a real Redis, RunAPI's simulated account balance behind it
(``balance_cents`` knob; each accepted create is charged, a create it cannot cover is a 402)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import SecretStr
from redis.asyncio import Redis

from gateway.balance import Balances, Watched
from gateway.config import BalanceSettings
from gateway.metrics import Metrics
from providers.base import ProviderSettings
from providers.runapi import RunAPIProvider
from providers.sandbox import runapi as sandbox_runapi
from providers.sandbox.engine import Knobs, SandboxState
from tests.integration.conftest import ENV, IMAGE, Harness, asgi, base_config
from tests.integration.test_budgets import SLOW

REFRESH_S = 1.0


def body(**fields: Any) -> dict[str, Any]:
    return {"prompt": "a red fox in snow", "image": IMAGE, **fields}


def watched(refresh_s: float = REFRESH_S, min_usd: float = 0) -> dict[str, Any]:
    return {"runapi": {"balance": {"refresh_s": refresh_s, "min_usd": min_usd}}}


async def make(
    factory: Callable[..., Any],
    *,
    share: Harness | None = None,
    knobs: Knobs = SLOW,
    **balance: float,
) -> Harness:
    """A harness whose ``runapi`` has ``balance`` configured; ``share``: a second instance on
    the same simulated resellers."""
    providers = base_config("redis://unused")["providers"]
    providers["runapi"]["balance"] = {"refresh_s": REFRESH_S, "min_usd": 0, **balance}
    sandboxes = (share.runapi, share.apiinone) if share else None
    h: Harness = await factory(knobs=knobs, sandboxes=sandboxes, providers=providers)
    return h


async def balance_usd(h: Harness, provider: str = "runapi") -> float | None:
    listing = (await h.client.get("/v1/providers", headers=h.headers())).json()["data"]
    value: float | None = next(p["balance_usd"] for p in listing if p["name"] == provider)
    return value


async def within(seconds: float, check: Callable[[], Awaitable[bool]]) -> float:
    """How long ``check`` took to hold; fails after ``seconds``."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < seconds, "not within the time allowed"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_a_balance_below_the_price_moves_traffic_on_and_a_top_up_brings_it_back(
    harness_factory: Callable[..., Any],
) -> None:
    first = await make(harness_factory)
    second = await make(harness_factory, share=first)
    started = time.monotonic()
    await within(3, lambda: _equals(balance_usd(second), 1_000_000.0))
    assert (await balance_usd(first, "apiinone")) is None  # no balance API

    first.runapi.update_knobs({"balance_cents": 20})  # under the 0.30 price
    for h in (first, second):
        await within(REFRESH_S + 1.5, lambda h=h: _equals(balance_usd(h), 0.20))  # type: ignore[misc]
    creates_before = first.runapi.counters.create_calls
    for h in (first, second):
        assert (await h.create(body())).json()["provider"] == "apiinone"
    assert first.runapi.counters.create_calls == creates_before  # no 402 met: not even tried
    scrape = await second.scrape()
    assert scrape.value("gateway_provider_balance_usd", provider="runapi") == 0.20

    first.runapi.update_knobs({"balance_cents": 10_000})
    for h in (first, second):
        await within(REFRESH_S + 1.5, lambda h=h: _equals(balance_usd(h), 100.0))  # type: ignore[misc]
        assert (await h.create(body())).json()["provider"] == "runapi"
    elapsed = time.monotonic() - started
    # One reader for both instances: at most one balance call per refresh interval.
    assert first.runapi.counters.balance_calls <= elapsed / REFRESH_S + 2


async def test_accepted_prices_lower_the_known_balance_until_the_next_read(
    harness_factory: Callable[..., Any],
) -> None:
    one_dollar = SLOW.model_copy(update={"balance_cents": 100})
    h = await make(harness_factory, knobs=one_dollar, refresh_s=600, min_usd=0.5)
    await within(3, lambda: _equals(balance_usd(h), 1.0))
    providers = [(await h.create(body())).json()["provider"] for _ in range(3)]
    # 1.00 and then 0.70 cover both the price and min_usd; 0.40 is under min_usd.
    assert providers == ["runapi", "runapi", "apiinone"]
    assert await balance_usd(h) == 0.40
    assert h.runapi.counters.balance_calls == 1  # lowered locally, not read again
    only_runapi = await h.create(body(routing={"providers": ["runapi"]}))
    assert only_runapi.status_code == 503
    assert only_runapi.json()["code"] == "providers_unavailable"
    assert int(only_runapi.headers["Retry-After"]) >= 1


async def _equals(value: Awaitable[float | None], expected: float) -> bool:
    return (await value) == expected


async def test_the_minimum_balance_in_force_is_the_one_read_now(redis: Redis) -> None:
    sandbox = SandboxState("runapi", ENV["RUNAPI_API_KEY"], SLOW.model_copy(
        update={"balance_cents": 1000}))  # fmt: skip
    reader = RunAPIProvider(
        ProviderSettings(name="runapi", base_url="http://runapi.sandbox",
                         api_key=SecretStr(ENV["RUNAPI_API_KEY"])),
        transport=asgi(sandbox_runapi.create_app(sandbox)),
    )  # fmt: skip
    minimum = {"usd": 5.0}
    balances = Balances(
        redis, {"runapi": Watched(reader, BalanceSettings(refresh_s=60, min_usd=5))},
        metrics=Metrics(["runapi"]),
        current=lambda _: BalanceSettings(refresh_s=60, min_usd=minimum["usd"]),
    )  # fmt: skip
    assert balances.allows("runapi", 0.30)  # nothing known yet: nobody is excluded
    await balances.refresh()
    assert balances.balance_usd("runapi") == 10.0
    assert balances.allows("runapi", 0.30)
    minimum["usd"] = 10.01  # a reload raised it
    assert not balances.allows("runapi", 0.30)
    await reader.aclose()
