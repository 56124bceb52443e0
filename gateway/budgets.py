"""Per-client spend budgets per UTC day and month, shared by every instance through Redis.

Money is counted in integer micro-dollars, so a month of tasks adds up exactly. Each client has
one hash per period (``Keys.usage``: ``spent``, ``reserved``, ``tasks``, ``spent:<provider>``,
``tasks:<provider>``, ``spent_max``) and one reservation per unfinished task
(``Keys.reservation``: ``amount``, ``max``). Every key of a client carries the hash tag
``{c:<client>}``, so each script below touches one slot.

A task's life in money:

- before each upstream create, :meth:`Budgets.reserve` reserves the price of the provider about
  to be called, checking both periods in the same script (so instances together never
  overshoot); a failover or a resubmission re-reserves the task's one reservation at the next
  provider's price;
- once the task is final, :meth:`Budgets.settle` turns the reservation into spend when it
  completed, gives it back when nothing can be billed (a refused create, a failed generation),
  and keeps it when the outcome is unknown (the reseller may bill it). The script deletes the
  reservation as it settles it, so settling a task twice changes nothing. A settle Redis
  refuses (the client's slot failing over, say) is retried by the background poller: the
  task goes back on the poll schedule (:meth:`gateway.status.Finalizer.settle`).

A client without a budget goes through the same two scripts (only the limit check is moot):
``GET /v1/usage`` reports every client's spend and reservations, and a budget added by a
reload must count what the client already holds.

A task's money belongs to the periods it was created in, even when it completes after
midnight. Counters expire :data:`GRACE_S` after their period ends (late completions still
land), reservations with their month.
"""

from __future__ import annotations

import calendar
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from gateway.config import BudgetSettings
from gateway.errors import BudgetExceeded, StoreUnavailable
from gateway.metrics import Metrics
from gateway.redis_client import RedisClient
from gateway.store import Keys, translated
from gateway.tasks import TaskRecord
from providers.base import TaskStatus

logger = logging.getLogger(__name__)

MICROS = 1_000_000
GRACE_S = 2 * 86400
"""How long a period's counters outlive it: a task created before midnight that completes
after it still settles into its own period."""
UNLIMITED = -1

PeriodKind = Literal["day", "month"]
Verdict = Literal["spend", "release", "keep"]

AMBIGUOUS_ERRORS = frozenset({"upstream_outcome_unknown", "submit_interrupted", "timeout"})
"""Final errors after which the reseller may still bill the task: its reservation is kept."""

# KEYS: day, month, reservation. ARGV: amount, max, day limit, month limit (-1: none),
# day expire-at, month expire-at. A reservation already held is adjusted to the new amount
# (failover, resubmission). Returns 0, or a mask of the periods that cannot cover it
# (1 day, 2 month), having changed nothing.
_RESERVE = """
local amount = tonumber(ARGV[1])
local delta = amount - tonumber(redis.call('HGET', KEYS[3], 'amount') or '0')
local over = 0
if delta > 0 then
  for i = 1, 2 do
    local limit = tonumber(ARGV[2 + i])
    if limit >= 0 then
      local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
      if (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0) + delta > limit then
        over = over + i
      end
    end
  end
end
if over > 0 then return over end
for i = 1, 2 do
  redis.call('HINCRBY', KEYS[i], 'reserved', delta)
  redis.call('EXPIREAT', KEYS[i], ARGV[4 + i])
end
redis.call('HSET', KEYS[3], 'amount', amount, 'max', ARGV[2])
redis.call('EXPIREAT', KEYS[3], ARGV[6])
return 0
"""

# KEYS: day, month, reservation. ARGV: 'spend' | 'release', price paid, provider. Deletes the
# reservation and moves its amount out of 'reserved' (into 'spent' for 'spend'). Returns
# {amount, max} of the reservation settled, or {} when there was none (settled already).
_SETTLE = """
local held = redis.call('HMGET', KEYS[3], 'amount', 'max')
if not held[1] then return {} end
redis.call('DEL', KEYS[3])
local amount, price = tonumber(held[1]), tonumber(ARGV[2])
local ceiling = math.max(tonumber(held[2]) or price, price)
for i = 1, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HINCRBY', KEYS[i], 'reserved', -amount)
    if ARGV[1] == 'spend' then
      redis.call('HINCRBY', KEYS[i], 'spent', price)
      redis.call('HINCRBY', KEYS[i], 'tasks', 1)
      redis.call('HINCRBY', KEYS[i], 'spent:' .. ARGV[3], price)
      redis.call('HINCRBY', KEYS[i], 'tasks:' .. ARGV[3], 1)
      redis.call('HINCRBY', KEYS[i], 'spent_max', ceiling)
    end
  end
end
return {amount, ceiling}
"""


def to_micros(usd: float) -> int:
    return round(usd * MICROS)


def to_usd(micros: int) -> float:
    """Exact for any whole number of micro-dollars a JSON reader will see (6 decimals)."""
    return round(micros / MICROS, 6)


@dataclass(frozen=True)
class Period:
    """One UTC day or month: ``id`` names its counters, ``start``/``end`` in Unix seconds."""

    kind: PeriodKind
    id: str
    start: int
    end: int


def period_of(kind: PeriodKind, at: float) -> Period:
    moment = datetime.fromtimestamp(at, UTC)
    if kind == "day":
        start = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
        first = int(start.timestamp())
        return Period("day", f"d{start:%Y%m%d}", first, first + 86400)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    days = calendar.monthrange(moment.year, moment.month)[1]
    first = int(start.timestamp())
    return Period("month", f"m{start:%Y%m}", first, first + days * 86400)


def verdict(record: TaskRecord) -> Verdict:
    """What a final task's reservation becomes: spend when it completed, kept while a bill is
    possible (an unanswered create, an interrupted submit, a deadline passed), else released."""
    if record.status is TaskStatus.COMPLETED:
        return "spend"
    if record.error is not None and record.error.code in AMBIGUOUS_ERRORS:
        return "keep"
    if any(a.outcome == "outcome_unknown" for a in record.attempts):
        return "keep"
    return "release"


@dataclass(frozen=True)
class Counters:
    """One period's hash, decoded."""

    spent: int
    reserved: int
    tasks: int
    spent_max: int
    by_provider: Mapping[str, tuple[int, int]]
    """provider → (spent micro-dollars, tasks)"""

    @classmethod
    def parse(cls, raw: Mapping[bytes | str, bytes | str]) -> Counters:
        fields = {_text(k): int(_text(v)) for k, v in raw.items()}
        providers = {k.partition(":")[2] for k in fields if k.startswith(("spent:", "tasks:"))}
        return cls(
            spent=fields.get("spent", 0),
            reserved=fields.get("reserved", 0),
            tasks=fields.get("tasks", 0),
            spent_max=fields.get("spent_max", 0),
            by_provider={
                p: (fields.get(f"spent:{p}", 0), fields.get(f"tasks:{p}", 0)) for p in providers
            },
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


BudgetTable = Callable[[], Mapping[str, BudgetSettings | None]]
"""Every client → its budgets (None: none), read from the settings the app holds when asked."""


class Budgets:
    def __init__(
        self,
        redis: RedisClient,
        budgets: BudgetTable,
        *,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._budgets = budgets
        self._metrics = metrics
        self._clock = clock
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)

    def budget_usd(self, client: str, kind: PeriodKind) -> float | None:
        budget = self._budgets().get(client)
        if budget is None:
            return None
        return budget.day if kind == "day" else budget.month

    async def reserve(self, record: TaskRecord, price_usd: float, ceiling_usd: float) -> None:
        """Hold ``price_usd`` of the client's budgets for this task (replacing what it held).
        ``ceiling_usd``: the dearest eligible provider's price, for the saving. Raises
        :class:`BudgetExceeded` (and changes nothing) when a period cannot cover it."""
        day, month = (period_of(k, record.created_at) for k in ("day", "month"))
        limits = [self.budget_usd(record.client, k) for k in ("day", "month")]
        async with translated(self._metrics, "budgets"):
            over = int(
                await self._reserve(
                    keys=self._keys(record, day, month),
                    args=[
                        to_micros(price_usd), to_micros(max(ceiling_usd, price_usd)),
                        *(UNLIMITED if v is None else to_micros(v) for v in limits),
                        day.end + GRACE_S, month.end + GRACE_S,
                    ],
                )
            )  # fmt: skip
        if over:
            self._metrics.budget_refusal(record.client)
            ends = [p for bit, p in ((1, day), (2, month)) if over & bit]
            until = max(p.end for p in ends)
            names = " and ".join(f"{p.kind} (${self.budget_usd(record.client, p.kind)})"
                                 for p in ends)  # fmt: skip
            logger.info("create refused: budget", extra={"client": record.client,
                                                         "price_usd": price_usd})  # fmt: skip
            raise BudgetExceeded(
                f"the {names} budget cannot cover ${price_usd}",
                headers={"Retry-After": str(max(1, math.ceil(until - self._clock())))},
            )

    async def finalized(self, record: TaskRecord) -> bool:
        """The hook for a task that has just become final (once: the store's compare-and-set
        said so): count a completed task's spend, then settle its reservation (:meth:`settle`,
        whose answer this is)."""
        if record.status is TaskStatus.COMPLETED:
            self._metrics.spent(record.provider or "", record.client, record.price_usd or 0.0)
        return await self.settle(record)

    async def settle(self, record: TaskRecord) -> bool:
        """Settle a final task's reservation (see :func:`verdict`); safe to repeat (a settled
        reservation is gone, and settling it again changes nothing). False when Redis failed
        (logged and counted): the reservation is still held, and the caller settles it later
        (:meth:`gateway.status.Finalizer.settle`)."""
        outcome = verdict(record)
        if outcome == "keep":
            return True
        day, month = (period_of(k, record.created_at) for k in ("day", "month"))
        price = to_micros(record.price_usd or 0.0) if outcome == "spend" else 0
        try:
            async with translated(self._metrics, "budgets"):
                settled = await self._settle(
                    keys=self._keys(record, day, month),
                    args=[outcome, price, record.provider or ""],
                )
        except StoreUnavailable as exc:
            logger.warning(
                "reservation not settled",
                extra={"task_id": record.id, "client": record.client, "error": repr(exc.__cause__)},
            )
            return False
        if settled and outcome == "spend":
            self._metrics.routing_saving(record.provider or "", to_usd(int(settled[1]) - price))
        return True

    async def counters(self, client: str, period: Period) -> Counters:
        async with translated(self._metrics, "budgets"):
            raw = await self._redis.hgetall(Keys.usage(client, period.id))
        return Counters.parse(raw)

    def now(self) -> float:
        return self._clock()

    async def observe(self) -> None:
        """Set each client's budget gauges: its budgets, and what the current day and month
        have spent and reserved (one round trip; called when ``/metrics`` is scraped)."""
        clients = self._budgets()
        periods = [period_of(kind, self._clock()) for kind in ("day", "month")]
        async with translated(self._metrics, "budgets"), self._redis.pipeline(False) as pipe:
            for client in clients:
                for period in periods:
                    pipe.hmget(Keys.usage(client, period.id), ["spent", "reserved"])
            found = iter(await pipe.execute())
        for client, budget in clients.items():
            for period in periods:
                spent, reserved = next(found)
                used = int(spent or 0) + int(reserved or 0)
                limit = getattr(budget, period.kind) if budget else None
                self._metrics.budget(client, period.kind, to_usd(used), limit)

    @staticmethod
    def _keys(record: TaskRecord, day: Period, month: Period) -> list[str]:
        return [
            Keys.usage(record.client, day.id),
            Keys.usage(record.client, month.id),
            Keys.reservation(record.client, record.id),
        ]
