"""Per-client rate limits (``auth.keys[].rate_per_minute``), shared by every instance.

A token bucket per client in Redis, updated by one Lua script (atomic across instances, timed
by Redis's own clock so instances' clocks do not matter): ``rate_per_minute`` tokens refill
evenly over a minute, and a full bucket allows a burst of that many. Every ``/v1`` request
takes a token; an empty bucket answers ``429 rate_limited`` with ``Retry-After`` before
anything else happens (so no upstream call).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

from gateway.errors import RateLimited, StoreUnavailable
from gateway.metrics import Metrics
from gateway.redis_client import RedisClient
from gateway.store import Keys, translated

logger = logging.getLogger(__name__)

_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local rate, capacity = tonumber(ARGV[1]), tonumber(ARGV[2])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(bucket[1]) or capacity
local ts = tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return tostring(wait)
"""


class RateLimiter:
    def __init__(
        self,
        redis: RedisClient,
        per_minute: Mapping[str, int | None] | Callable[[], Mapping[str, int | None]],
        *,
        metrics: Metrics,
    ) -> None:
        """``per_minute``: each client's rate, or a function giving the rates in force (read
        on every request, so a config reload changes them at once)."""
        self._metrics = metrics
        self._limits = per_minute if callable(per_minute) else lambda: per_minute
        self._take = redis.register_script(_TAKE)

    async def check(self, client: str) -> None:
        """Take one token for ``client``; raises RateLimited when there is none. A client
        without a configured rate is unlimited. If Redis is down the request goes on (it will
        meet the store's own 503 if it needs Redis); that is counted as a Redis error of
        ``rate_limit`` and logged."""
        per_minute = self._limits().get(client)
        if not per_minute:
            return
        try:
            async with translated(self._metrics, "rate_limit"):
                wait = float(await self._take(keys=[Keys.rate(client)],
                                              args=[per_minute / 60.0, per_minute]))  # fmt: skip
        except StoreUnavailable:
            logger.warning("rate limit not checked: redis unreachable", extra={"client": client})
            return
        if wait > 0:
            raise RateLimited(
                f"over {per_minute} requests per minute",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
