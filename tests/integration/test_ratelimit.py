from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.errors import RateLimited
from gateway.metrics import Metrics
from gateway.ratelimit import RateLimiter
from gateway.redis_client import RedisClient, connect
from gateway.store import Keys
from tests.integration.conftest import IMAGE, OTHER_KEY, Harness
from tests.scrape import Scrape


def limiter_of(redis: RedisClient, per_minute: dict[str, int | None]) -> RateLimiter:
    return RateLimiter(redis, per_minute, metrics=Metrics([]))


async def test_a_full_bucket_allows_a_minutes_worth_then_refuses_with_retry_after(
    redis: Redis,
) -> None:
    limiter = limiter_of(redis, {"demo": 5})
    for _ in range(5):
        await limiter.check("demo")
    with pytest.raises(RateLimited) as refused:
        await limiter.check("demo")
    assert refused.value.status == 429
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 12


async def test_limits_are_per_client_and_absent_means_unlimited(redis: Redis) -> None:
    limiter = limiter_of(redis, {"small": 1, "free": None})
    await limiter.check("small")
    with pytest.raises(RateLimited):
        await limiter.check("small")
    for _ in range(50):
        await limiter.check("free")


async def test_instances_share_one_bucket(redis: Redis, redis_url: str) -> None:
    other = connect(redis_url)
    first, second = limiter_of(redis, {"demo": 4}), limiter_of(other, {"demo": 4})
    for limiter in (first, second, first, second):
        await limiter.check("demo")
    with pytest.raises(RateLimited):
        await second.check("demo")
    await other.aclose()


async def test_tokens_refill_over_time(redis: Redis) -> None:
    limiter = limiter_of(redis, {"fast": 6000})  # 100 per second
    await redis.hset(Keys.rate("fast"), mapping={"tokens": "0", "ts": "0"})
    await limiter.check("fast")  # decades have passed since ts=0: the bucket is full again
    tokens = float(await redis.hget(Keys.rate("fast"), "tokens") or -1)
    assert tokens == pytest.approx(5999, abs=1)  # refilled to capacity, then one taken


async def test_a_bucket_does_not_refill_while_no_time_passes(redis: Redis) -> None:
    limiter = limiter_of(redis, {"fast": 6000})
    await redis.hset(Keys.rate("fast"), mapping={"tokens": "0", "ts": "9999999999"})
    with pytest.raises(RateLimited):
        await limiter.check("fast")  # no time has passed since ts (in the future): empty


async def test_redis_down_lets_requests_through_and_counts_the_error() -> None:
    dead = connect("redis://127.0.0.1:1/0")
    metrics = Metrics([])
    limiter = RateLimiter(dead, {"demo": 1}, metrics=metrics)
    await limiter.check("demo")
    await limiter.check("demo")  # over the rate of 1, but unchecked: let through
    await dead.aclose()
    scrape = Scrape(metrics.exposition().decode())
    assert scrape.value("gateway_redis_errors_total", operation="rate_limit") == 2


async def test_over_the_limit_is_429_with_retry_after_and_no_upstream_call(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(
        auth={"keys": [{"name": "demo", "key_env": "GATEWAY_KEY_DEMO", "rate_per_minute": 2},
                       {"name": "other", "key_env": "GATEWAY_KEY_OTHER"}]},
    )  # fmt: skip
    body = {"prompt": "a fox", "image": IMAGE}
    assert [(await h.create(body)).status_code for _ in range(2)] == [202, 202]
    refused = await h.create(body)
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert h.upstream_creates == 2
    assert (await h.read("vid_" + "a" * 26)).status_code == 429  # lookups count too
    assert (await h.create(body, key=OTHER_KEY)).status_code == 202  # per client
