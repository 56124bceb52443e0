"""Circuit breakers and recent outcomes, on a real Redis, with an injected clock."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from gateway.config import CircuitSettings
from gateway.errors import StoreUnavailable
from gateway.health import Circuit, Health, percentile
from gateway.redis_client import connect
from gateway.store import Keys
from providers import errors as perr

SETTINGS = CircuitSettings(failures_to_open=3, cooldown_s=30, account_cooldown_s=600)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def health(redis: Redis, clock: Clock) -> Health:
    # refresh_s=0: every read goes to Redis, as another instance's would.
    return Health(redis, SETTINGS, ["runapi", "apiinone"], clock=clock, refresh_s=0)


def server_error() -> perr.ProviderError:
    return perr.UpstreamServerError("runapi", "HTTP 500", http_status=500)


async def circuit(h: Health, clock: Clock, name: str = "runapi") -> Circuit:
    return (await h.snapshot())[name].circuit(clock())


async def test_circuit_opens_after_consecutive_failures(redis: Redis) -> None:
    clock = Clock()
    h = health(redis, clock)
    for _ in range(2):
        await h.record("runapi", server_error())
    assert await circuit(h, clock) is Circuit.CLOSED
    await h.record("runapi", server_error())
    assert await circuit(h, clock) is Circuit.OPEN
    assert await circuit(h, clock, "apiinone") is Circuit.CLOSED


async def test_a_success_resets_the_failure_count(redis: Redis) -> None:
    clock = Clock()
    h = health(redis, clock)
    await h.record("runapi", server_error())
    await h.record("runapi", server_error())
    await h.record("runapi", None, latency_ms=40)
    await h.record("runapi", server_error())
    assert await circuit(h, clock) is Circuit.CLOSED


async def test_content_and_validation_refusals_do_not_count(redis: Redis) -> None:
    clock = Clock()
    h = health(redis, clock)
    for _ in range(5):
        await h.record("runapi", perr.ContentRejected("runapi", "nsfw"))
        await h.record("runapi", perr.RequestRejected("runapi", "bad field"))
    assert await circuit(h, clock) is Circuit.CLOSED
    assert (await h.snapshot())["runapi"].success_rate is None


async def test_open_circuit_turns_half_open_after_the_cooldown_and_admits_one_caller(
    redis: Redis,
) -> None:
    clock = Clock()
    first, second = health(redis, clock), health(redis, clock)  # two gateway instances
    for _ in range(3):
        await first.record("runapi", server_error())
    assert not await second.acquire("runapi", lease_s=10)
    clock.now += 31
    assert await circuit(second, clock) is Circuit.HALF_OPEN
    admitted = [await h.acquire("runapi", lease_s=10) for h in (first, second, first)]
    assert admitted.count(True) == 1


async def test_half_open_success_closes_and_failure_reopens(redis: Redis) -> None:
    clock = Clock()
    h = health(redis, clock)
    for _ in range(3):
        await h.record("runapi", server_error())
    clock.now += 31
    assert await h.acquire("runapi", lease_s=10)
    await h.record("runapi", server_error())  # the trial call failed: one failure reopens
    assert await circuit(h, clock) is Circuit.OPEN
    clock.now += 31
    assert await h.acquire("runapi", lease_s=10)
    await h.record("runapi", None, latency_ms=12)
    assert await circuit(h, clock) is Circuit.CLOSED
    assert await h.acquire("runapi", lease_s=10)


async def test_rate_limit_with_retry_after_opens_for_that_long(redis: Redis) -> None:
    clock = Clock()
    h = health(redis, clock)
    await h.record("runapi", perr.RateLimited("runapi", "slow down", retry_after_s=7))
    state = (await h.snapshot())["runapi"]
    assert state.open_until == clock.now + 7
    clock.now += 8
    assert await circuit(h, clock) is Circuit.HALF_OPEN


async def test_account_errors_open_for_the_account_cooldown(redis: Redis) -> None:
    clock = Clock()
    h = health(redis, clock)
    await h.record("runapi", perr.AccountError("runapi", "Insufficient credits", http_status=402))
    assert (await h.snapshot())["runapi"].open_until == clock.now + 600


async def test_success_rate_and_latency_percentiles_come_from_recent_outcomes(
    redis: Redis,
) -> None:
    clock = Clock()
    h = health(redis, clock)
    for ms in range(1, 101):
        await h.record("apiinone", None, latency_ms=float(ms))
    await h.record_task("apiinone", completed=False)
    state = (await h.snapshot())["apiinone"]
    assert state.success_rate == 0.99
    assert state.latency_p50_ms == 50
    assert state.latency_p99_ms == 99


async def test_snapshot_is_cached_for_the_refresh_interval(redis: Redis) -> None:
    clock = Clock()
    cached = Health(redis, SETTINGS, ["runapi"], clock=clock, refresh_s=0.5)
    other = health(redis, clock)
    assert await circuit(cached, clock) is Circuit.CLOSED
    for _ in range(3):
        await other.record("runapi", server_error())
    assert await circuit(cached, clock) is Circuit.CLOSED  # still the cached read
    clock.now += 0.5
    assert await circuit(cached, clock) is Circuit.OPEN


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.99) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0


async def test_buffered_successes_survive_a_failed_health_read(
    redis: Redis, redis_url: str
) -> None:
    """A success buffered in memory reaches Redis with the next read; a read that fails must
    keep it for the one after, not drop it. Redis ACLs make the read fail for real."""
    await redis.acl_setuser(
        "health_reader", enabled=True, passwords=["+health-test-password"],
        commands=["+@all", "-lpush"], keys=["*"],
    )  # fmt: skip
    joiner = "&" if "?" in redis_url else "?"
    limited = connect(f"{redis_url}{joiner}username=health_reader&password=health-test-password")
    try:
        clock = Clock()
        # refresh_s large: successes stay buffered until a read this test triggers.
        h = Health(limited, SETTINGS, ["runapi"], clock=clock, refresh_s=3600)
        await h.snapshot(fresh=True)
        for ms in (10.0, 20.0, 30.0):
            await h.record("runapi", None, latency_ms=ms)
        assert await redis.llen(Keys.health_outcomes("runapi")) == 0  # still buffered
        with pytest.raises(StoreUnavailable):
            await h.snapshot(fresh=True)  # LPUSH refused: the read fails
        await redis.acl_setuser("health_reader", commands=["+lpush"])
        state = (await h.snapshot(fresh=True))["runapi"]
        assert await redis.llen(Keys.health_outcomes("runapi")) == 3
        assert state.latency_p50_ms == 20
    finally:
        await limited.aclose()
        await redis.acl_deluser("health_reader")
