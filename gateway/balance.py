"""Balance-aware routing: provider accounts whose known balance cannot pay are skipped.

For each provider with ``balance`` configured (kinds with a balance API,
``providers.base.BalanceReader``), one instance at a time reads the account balance from the
reseller, at most every ``balance.refresh_s`` (a Redis lease with that TTL), and shares it in
Redis (``Keys.balance``). Every instance picks the shared value up within a second and lowers
its own copy by each price it has an upstream accept since that read, so a run of creates
between two reads does not spend past the balance unseen. The router asks :meth:`allows`: a
provider whose known balance is below the request's price or ``balance.min_usd`` is not
eligible. An unknown balance (not read yet, the reseller unreachable) does not exclude anyone;
a ``402`` from the reseller still opens its circuit (``gateway.health``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.budgets import to_micros, to_usd
from gateway.config import BalanceSettings
from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics
from gateway.redis_client import RedisClient
from gateway.store import Keys, translated
from providers.base import BalanceReader
from providers.errors import ProviderError

logger = logging.getLogger(__name__)

MAX_TICK_S = 1.0
"""How often each instance looks for a fresher shared balance (and for its turn to read)."""
KEEP_READS = 10
"""A shared balance expires after this many refresh intervals without a read."""


@dataclass(frozen=True)
class Watched:
    """One provider account whose balance is watched."""

    reader: BalanceReader
    settings: BalanceSettings


@dataclass
class _Known:
    micros: int
    read_at: float
    spent_since: int = 0

    @property
    def left(self) -> int:
        return self.micros - self.spent_since


BalanceLookup = Callable[[str], BalanceSettings | None]
"""A provider's ``balance`` settings as they are now (a reload changes ``min_usd`` and
``refresh_s``)."""


class Balances:
    """The known balances, and the loop (:meth:`run`) that keeps them fresh. ``current``: the
    settings in force for a watched provider (default: those it was watched with)."""

    def __init__(
        self,
        redis: RedisClient,
        watched: Mapping[str, Watched],
        *,
        metrics: Metrics,
        current: BalanceLookup | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._watched = dict(watched)
        self._current = current
        self._metrics = metrics
        self._clock = clock
        self._known: dict[str, _Known] = {}
        self._stop = asyncio.Event()

    @property
    def watched(self) -> Mapping[str, Watched]:
        return self._watched

    def balance_usd(self, provider: str) -> float | None:
        known = self._known.get(provider)
        return to_usd(known.left) if known else None

    def _settings(self, provider: str) -> BalanceSettings:
        now = self._current(provider) if self._current is not None else None
        return now or self._watched[provider].settings

    def allows(self, provider: str, price_usd: float) -> bool:
        """False when ``provider``'s known balance is below ``price_usd`` or its ``min_usd``."""
        known = self._known.get(provider)
        if known is None or provider not in self._watched:
            return True
        minimum = self._settings(provider).min_usd
        return known.left >= max(to_micros(price_usd), to_micros(minimum))

    def retry_after_s(self) -> float:
        """When a fresher balance may be known."""
        return min((self._settings(name).refresh_s for name in self._watched), default=1.0)

    def spent(self, provider: str, price_usd: float) -> None:
        """An upstream accepted a task at ``price_usd``: lower this instance's copy."""
        known = self._known.get(provider)
        if known is not None:
            known.spent_since += to_micros(price_usd)
            self._metrics.provider_balance(provider, to_usd(known.left))

    async def refresh(self) -> None:
        """One round: read each account whose turn it is, then pick up the shared values."""
        for name, watched in self._watched.items():
            try:
                if await self._take_turn(name, self._settings(name).refresh_s):
                    await self._read_upstream(name, watched)
                await self._pick_up(name)
            except StoreUnavailable:
                logger.warning("balance not refreshed: redis unreachable", extra={"provider": name})

    async def _take_turn(self, provider: str, refresh_s: float) -> bool:
        async with translated(self._metrics, "balance"):
            won = await self._redis.set(
                Keys.balance_lease(provider), "1", nx=True, px=int(refresh_s * 1000)
            )
        return bool(won)

    async def _read_upstream(self, provider: str, watched: Watched) -> None:
        started = time.perf_counter()
        try:
            balance = await watched.reader.balance()
        except ProviderError as exc:
            seconds = time.perf_counter() - started
            self._metrics.upstream_call(provider, "balance", exc.outcome, seconds)
            logger.warning(
                "balance read failed",
                extra={"provider": provider, "operation": "balance", "outcome": exc.outcome},
            )
            return
        self._metrics.upstream_call(provider, "balance", "ok", time.perf_counter() - started)
        micros = balance.balance_cents * 10_000
        ttl_ms = int(self._settings(provider).refresh_s * KEEP_READS * 1000)
        async with translated(self._metrics, "balance"):
            await self._redis.hset(
                Keys.balance(provider), mapping={"micros": micros, "read_at": self._clock()}
            )
            await self._redis.pexpire(Keys.balance(provider), ttl_ms)
        logger.info("balance read", extra={"provider": provider, "balance_usd": to_usd(micros)})

    async def _pick_up(self, provider: str) -> None:
        async with translated(self._metrics, "balance"):
            micros, read_at = await self._redis.hmget(Keys.balance(provider), ["micros", "read_at"])
        if micros is None or read_at is None:
            return
        shared = _Known(int(micros), float(read_at))
        known = self._known.get(provider)
        if known is None or known.read_at != shared.read_at:
            self._known[provider] = shared
            self._metrics.provider_balance(provider, to_usd(shared.left))

    async def run(self) -> None:
        """Refresh until :meth:`stop`; failures are logged and counted, and the loop goes on."""
        tick = min(MAX_TICK_S, self.retry_after_s() / 4)
        while not self._stop.is_set():
            await self.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), tick)

    async def stop(self) -> None:
        self._stop.set()
