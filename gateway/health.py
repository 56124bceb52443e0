"""Provider health: circuit breakers and recent outcomes, shared by every instance through Redis.

Fed only by real traffic (create outcomes and task outcomes), never by probe calls that could
bill. A circuit opens after ``failures_to_open`` consecutive failed creates, or as many
consecutive failed generations (counted apart, so accepted creates do not hide a reseller whose
tasks all fail), for ``cooldown_s``; a
``429`` with ``Retry-After`` opens it for that long; ``401``/``402``/``403`` open it for
``account_cooldown_s`` (an operator must act). Once the cooldown is over the circuit is
half-open: one request, across all instances, is let through (a Redis lease), and its success
closes the circuit while its failure opens it again.

Each instance reads all providers' state in one round trip at most every ``refresh_s``
(0.5 s), so an open circuit is seen everywhere within a second. Each read and each change
sets the ``gateway_circuit_state`` gauge; Redis failures count in ``gateway_redis_errors_total``.

Failures are written at once. A success that changes no circuit (no failures counted, not
open) is kept in memory and written with the next snapshot read, so the common create costs
no health round trip; the price is that another instance's success may reset a failure count
up to ``refresh_s`` late.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.config import CircuitSettings
from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics, RedisOperation
from gateway.redis_client import RedisClient
from gateway.store import Keys, translated
from providers import errors as perr

logger = logging.getLogger(__name__)

OUTCOME_WINDOW = 100
LATENCY_WINDOW = 200
REFRESH_S = 0.5

# KEYS[1] circuit hash, KEYS[2] half-open lease. ARGV: now, failures_to_open, cooldown_s,
# force_open_s (0: count toward the threshold instead), the counter ('failures' for creates,
# 'task_failures' for finished tasks). Returns {failures, open_until}.
_RECORD_FAILURE = """
local failures = redis.call('HINCRBY', KEYS[1], ARGV[5], 1)
local now = tonumber(ARGV[1])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
local force = tonumber(ARGV[4])
local was_half_open = open_until > 0 and open_until <= now
if force > 0 then
  open_until = math.max(open_until, now + force)
elseif was_half_open or failures >= tonumber(ARGV[2]) then
  open_until = now + tonumber(ARGV[3])
else
  return {failures, tostring(open_until)}
end
redis.call('HSET', KEYS[1], 'open_until', tostring(open_until))
redis.call('DEL', KEYS[2])
return {failures, tostring(open_until)}
"""


class Circuit(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Verdict(StrEnum):
    """What an outcome says about a provider's health."""

    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"
    """About the request, not the provider: content and validation refusals."""


@dataclass(frozen=True)
class ProviderHealth:
    name: str
    failures: int
    task_failures: int
    open_until: float
    success_rate: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None

    def circuit(self, now: float) -> Circuit:
        if self.open_until > now:
            return Circuit.OPEN
        return Circuit.HALF_OPEN if self.open_until > 0 else Circuit.CLOSED


def verdict_of(error: perr.ProviderError | None) -> Verdict:
    if error is None:
        return Verdict.SUCCESS
    if isinstance(error, perr.RequestRejected | perr.ContentRejected | perr.TaskNotFound):
        return Verdict.NEUTRAL
    return Verdict.FAILURE


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Health:
    """Circuits and recent outcomes of the configured providers."""

    def __init__(
        self,
        redis: RedisClient,
        settings: CircuitSettings,
        names: Sequence[str],
        *,
        clock: Callable[[], float] = time.time,
        refresh_s: float = REFRESH_S,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics if metrics is not None else Metrics(names)
        self._redis = redis
        self._settings = settings
        self._names = list(names)
        self._clock = clock
        self._refresh_s = refresh_s
        self._snapshot: dict[str, ProviderHealth] = {}
        self._pending: dict[str, tuple[list[int], list[float]]] = {}
        """Successes not yet in Redis: provider → (outcomes, latencies)."""
        self._snapshot_at = -math.inf
        self._refreshing: asyncio.Task[dict[str, ProviderHealth]] | None = None
        self._record_failure = redis.register_script(_RECORD_FAILURE)

    def now(self) -> float:
        return self._clock()

    async def snapshot(self, *, fresh: bool = False) -> dict[str, ProviderHealth]:
        """Every provider's health, at most ``refresh_s`` old (one Redis round trip);
        ``fresh`` reads it now, with this instance's buffered successes."""
        if not fresh and self._clock() - self._snapshot_at < self._refresh_s:
            return self._snapshot
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._read())
        return await asyncio.shield(self._refreshing)

    async def _read(self) -> dict[str, ProviderHealth]:
        pending, self._pending = self._pending, {}
        try:
            async with (
                counted(self._metrics, "health"),
                translated(),
                self._redis.pipeline(transaction=False) as pipe,
            ):
                for name, (outcomes, latencies) in pending.items():
                    self._push_samples(pipe, name, outcomes, latencies)
                for name in self._names:
                    pipe.hmget(Keys.circuit(name), "failures", "task_failures", "open_until")
                    pipe.lrange(Keys.health_outcomes(name), 0, OUTCOME_WINDOW - 1)
                    pipe.lrange(Keys.health_latency(name), 0, LATENCY_WINDOW - 1)
                raw = (await pipe.execute())[-3 * len(self._names) :]
        except StoreUnavailable:
            # Counted above; the buffered successes go back in the buffer for the next read
            # instead of being lost with this one.
            for name, (outcomes, latencies) in pending.items():
                kept_outcomes, kept_latencies = self._pending.setdefault(name, ([], []))
                kept_outcomes[:0] = outcomes
                kept_latencies[:0] = latencies
            logger.warning("provider health not read; buffered samples kept for the next read")
            raise
        snapshot = {}
        for i, name in enumerate(self._names):
            (failures, task_failures, open_until), outcomes, latencies = raw[3 * i : 3 * i + 3]
            ok = [int(o) for o in outcomes]
            lat = [float(v) for v in latencies]
            snapshot[name] = ProviderHealth(
                name=name,
                failures=int(failures or 0),
                task_failures=int(task_failures or 0),
                open_until=float(open_until or 0),
                success_rate=(sum(ok) / len(ok)) if ok else None,
                latency_p50_ms=percentile(lat, 0.50),
                latency_p99_ms=percentile(lat, 0.99),
            )
        self._snapshot, self._snapshot_at = snapshot, self._clock()
        for name, health in snapshot.items():
            self._metrics.circuit_state(name, health.circuit(self._snapshot_at))
        return snapshot

    async def acquire(self, name: str, lease_s: float) -> bool:
        """May a create go to ``name`` now? Closed: yes. Open: no. Half-open: only the one
        caller (across all instances) that takes the lease."""
        health = (await self.snapshot()).get(name)
        if health is None:
            return True
        state = health.circuit(self._clock())
        if state is Circuit.CLOSED:
            return True
        if state is Circuit.OPEN:
            return False
        async with counted(self._metrics, "health"), translated():
            won = await self._redis.set(
                Keys.circuit_lease(name), "1", nx=True, px=int(lease_s * 1000)
            )
        return bool(won)

    async def record(
        self,
        name: str,
        error: perr.ProviderError | None,
        *,
        latency_ms: float | None = None,
    ) -> None:
        """Feed one create or task outcome. Never raises: health must not fail a request."""
        verdict = verdict_of(error)
        if verdict is Verdict.NEUTRAL:
            return
        try:
            if verdict is Verdict.SUCCESS and await self._buffered(name, "failures", latency_ms):
                return
            await self._write(name, verdict, error, latency_ms, counter="failures")
        except StoreUnavailable:
            logger.warning("could not record provider health", extra={"provider": name})

    async def record_task(self, name: str, *, completed: bool) -> None:
        """Feed a task's final outcome: a reseller whose accepted tasks fail is unhealthy too."""
        verdict = Verdict.SUCCESS if completed else Verdict.FAILURE
        try:
            if verdict is Verdict.SUCCESS and await self._buffered(name, "task_failures", None):
                return
            await self._write(name, verdict, None, None, counter="task_failures")
        except StoreUnavailable:
            logger.warning("could not record provider health", extra={"provider": name})

    async def _buffered(self, name: str, counter: str, latency_ms: float | None) -> bool:
        """Keep a success in memory when it changes no circuit (the common case); it reaches
        Redis with the next snapshot read, at most ``refresh_s`` later. True when buffered."""
        health = (await self.snapshot()).get(name)
        clean = (
            health is not None
            and health.open_until == 0
            and (health.failures == 0 if counter == "failures" else health.task_failures == 0)
        )
        if clean:
            outcomes, latencies = self._pending.setdefault(name, ([], []))
            outcomes.append(1)
            if latency_ms is not None:
                latencies.append(round(latency_ms, 1))
        return clean

    def _push_samples(
        self, pipe: Any, name: str, outcomes: Sequence[int], latencies: Sequence[float]
    ) -> None:
        if outcomes:
            pipe.lpush(Keys.health_outcomes(name), *outcomes)
            pipe.ltrim(Keys.health_outcomes(name), 0, OUTCOME_WINDOW - 1)
        if latencies:
            pipe.lpush(Keys.health_latency(name), *latencies)
            pipe.ltrim(Keys.health_latency(name), 0, LATENCY_WINDOW - 1)

    async def _write(
        self,
        name: str,
        verdict: Verdict,
        error: perr.ProviderError | None,
        latency_ms: float | None,
        *,
        counter: str,
    ) -> None:
        async with (
            counted(self._metrics, "health"),
            translated(),
            self._redis.pipeline(transaction=False) as pipe,
        ):
            self._push_samples(
                pipe,
                name,
                [1 if verdict is Verdict.SUCCESS else 0],
                [round(latency_ms, 1)] if latency_ms is not None else [],
            )
            if verdict is Verdict.SUCCESS:
                pipe.hset(Keys.circuit(name), mapping={counter: 0, "open_until": 0})
                pipe.delete(Keys.circuit_lease(name))
            await pipe.execute()
            if verdict is Verdict.FAILURE:
                await self._fail(name, error, counter)
            else:
                self._metrics.circuit_state(name, Circuit.CLOSED)
        self._snapshot_at = -math.inf  # our own outcome is seen by our next request

    async def _fail(self, name: str, error: perr.ProviderError | None, counter: str) -> None:
        force = 0.0
        if isinstance(error, perr.RateLimited) and error.retry_after_s:
            force = error.retry_after_s
        elif isinstance(error, perr.AccountError):
            force = self._settings.account_cooldown_s
            logger.error(
                "provider account refused our key or credits; circuit opened",
                extra={"provider": name, "http_status": error.http_status,
                       "open_for_s": force},
            )  # fmt: skip
        circuit = self._settings
        result: Any = await self._record_failure(
            keys=[Keys.circuit(name), Keys.circuit_lease(name)],
            args=[self._clock(), circuit.failures_to_open, circuit.cooldown_s, force, counter],
        )
        failures, open_until = int(result[0]), float(result[1])
        if open_until > self._clock():
            self._metrics.circuit_state(name, Circuit.OPEN)
            logger.warning(
                "circuit open",
                extra={"provider": name, "failures": failures,
                       "open_for_s": round(open_until - self._clock(), 1)},
            )  # fmt: skip


@asynccontextmanager
async def counted(metrics: Metrics, operation: RedisOperation) -> AsyncIterator[None]:
    """Count a StoreUnavailable (a Redis failure, as ``translated`` raises it) and let it go."""
    try:
        yield
    except StoreUnavailable:
        metrics.redis_error(operation)
        raise


class Readiness:
    """Can this instance serve creates right now? Empty reasons mean yes."""

    def __init__(
        self,
        ping: Callable[[], Any],
        health: Health,
        enabled: Callable[[], Sequence[str]],
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self._ping = ping
        self._health = health
        self._enabled = enabled
        """The providers that can serve now (the live settings: a reload changes them)."""
        self._metrics = metrics if metrics is not None else Metrics(enabled())
        self.draining: Callable[[], bool] = lambda: False
        """Set by the app: true once SIGTERM started the drain (``gateway.drain``)."""

    async def reasons(self) -> list[str]:
        if self.draining():
            return ["draining: shutting down"]
        reasons = []
        try:
            async with counted(self._metrics, "ping"):
                await self._ping()
        except StoreUnavailable as exc:
            return [f"redis unreachable: {exc}"]
        enabled = self._enabled()
        if not enabled:
            reasons.append("no provider is enabled")
        else:
            snapshot = await self._health.snapshot()
            now = self._health.now()
            if all(snapshot[n].circuit(now) is Circuit.OPEN for n in enabled):
                reasons.append("every provider's circuit is open")
        return reasons
