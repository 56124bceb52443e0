"""``GET /v1/videos`` and ``DELETE /v1/videos/{id}`` (api.md §6): each client's own tasks.

:class:`TaskIndex` keeps, per client, a Redis sorted set of task ids scored by acceptance time
in milliseconds (``Keys.client_tasks``). A task joins it the moment its id is given to the
client: when an upstream accepted it, or when a ``504 upstream_outcome_unknown`` names it (the
upstream did not answer, or the accepted task could not be recorded in time), since the client
may poll that id. A refused create keeps its record as an operator's audit trail, but the
client never got that id, so it is not listed. Members older than the task TTL
are trimmed on every write and the set's own TTL is refreshed, so the index expires with the
tasks; a member whose record expired or was lost is dropped when a page meets it.

Pages are cut by cursor: ``after`` is a task id, and the page holds the tasks that sort after
it (by time, then id) in the asked order. A deleted id stays a valid cursor: deletion moves it
into a second set of the same hash slot (``Keys.client_deleted``), so a client that deletes
every task of a page can still ask for the next one. A cursor that is none of the client's
tasks (another client's, expired, made up) gives an empty page.

Deleting a task removes its stored copy (when the storage feature provides one), its record,
callback token, poll schedule entry and index entry, and tells every instance to forget its
cached answer (:mod:`gateway.invalidation`). A task that is not final yet keeps running at its
reseller and is billed if it completes: the gateway cannot cancel it there (no reseller offers
a cancel call). Its mapping is written to the log at WARNING for reconciliation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from gateway.cache import FinalTasks
from gateway.errors import NotFound, StoreUnavailable, TaskBusy
from gateway.invalidation import Invalidations
from gateway.metrics import Metrics
from gateway.redis_client import RedisClient
from gateway.retention import Retention
from gateway.schemas import TaskDeleted, TaskList
from gateway.store import Keys, TaskStore, translated
from gateway.tasks import TASK_ID, TaskRecord
from gateway.video_copy import object_key

logger = logging.getLogger(__name__)

Order = Literal["asc", "desc"]
MAX_LIMIT = 100
DEFAULT_LIMIT = 20
MAX_READS = 5
RETRY_BUSY_S = 5
"""Retry-After of a DELETE refused while a resubmission is in flight."""
"""Index reads one page may take when it meets ids whose records are gone."""

# KEYS: index, deleted. ARGV: cursor id ('' for none), count, '1' for newest first.
# Returns the ids of the page, or false when the cursor is in neither set. The cursor's
# position is counted, not looked up, so a deleted cursor (only in the second set) works too.
_PAGE = """
local start = 0
if ARGV[1] ~= '' then
  local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
  local present = score ~= false
  if not present then
    score = redis.call('ZSCORE', KEYS[2], ARGV[1])
    if not score then return false end
  end
  local desc = ARGV[3] == '1'
  local before
  if desc then
    before = redis.call('ZCOUNT', KEYS[1], '(' .. score, '+inf')
  else
    before = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. score)
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], score, score)) do
    if (desc and id > ARGV[1]) or (not desc and id < ARGV[1]) then before = before + 1 end
  end
  start = before
  if present then start = start + 1 end
end
local stop = start + tonumber(ARGV[2]) - 1
if ARGV[3] == '1' then return redis.call('ZREVRANGE', KEYS[1], start, stop) end
return redis.call('ZRANGE', KEYS[1], start, stop)
"""

# KEYS: index, deleted. ARGV: id, oldest score kept, ttl seconds. Moves the id to the deleted
# set (same score), trims both sets and refreshes their TTLs.
_REMOVE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], score, ARGV[1])
end
for _, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[2])
  if redis.call('EXISTS', key) == 1 then redis.call('EXPIRE', key, ARGV[3]) end
end
return score ~= false
"""


# KEYS: index. ARGV: id, score (ms), oldest score kept, ttl seconds. Adds the id (an id listed
# already keeps its first time), trims what the TTL has passed and refreshes the set's TTL. A
# script rather than a MULTI: redis-py's asyncio Cluster client runs each command queued in a
# transaction through a thread of its own.
_ADD = """
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
"""


def _ids(raw: list[bytes | str]) -> list[str]:
    return [i.decode() if isinstance(i, bytes) else str(i) for i in raw]


class TaskIndex:
    """Each client's task ids by time, in Redis (see the module docstring)."""

    def __init__(self, redis: RedisClient, *, ttl_s: int, clock: Callable[[], float] = time.time):
        self._redis = redis
        self._ttl_s = ttl_s
        self._clock = clock
        self._add = redis.register_script(_ADD)
        self._page = redis.register_script(_PAGE)
        self._remove = redis.register_script(_REMOVE)

    def _oldest_ms(self) -> int:
        return int((self._clock() - self._ttl_s) * 1000)

    async def add(self, client: str, task_id: str) -> None:
        args: list[str | int] = [task_id, int(self._clock() * 1000), self._oldest_ms(), self._ttl_s]
        async with translated():
            await self._add(keys=[Keys.client_tasks(client)], args=args)

    async def page(self, client: str, after: str | None, count: int, order: Order) -> list[str]:
        """Up to ``count`` ids after ``after``; none when ``after`` is not one of the client's
        tasks (live or deleted) within the TTL: nothing is known to come after it."""
        keys = [Keys.client_tasks(client), Keys.client_deleted(client)]
        async with translated():
            raw = await self._page(keys=keys, args=[after or "", count, int(order == "desc")])
        return [] if raw is None else _ids(raw)

    async def remove(self, client: str, task_id: str) -> None:
        keys = [Keys.client_tasks(client), Keys.client_deleted(client)]
        async with translated():
            await self._remove(keys=keys, args=[task_id, self._oldest_ms(), self._ttl_s])

    async def drop(self, client: str, task_ids: list[str]) -> None:
        """Members whose record is gone (expired, or lost): not a cursor any more."""
        async with translated():
            await self._redis.zrem(Keys.client_tasks(client), *task_ids)


DeleteCopy = Callable[[TaskRecord], Awaitable[None]]
"""Deletes a task's stored video; absent: nothing is stored (``storage.enabled`` false)."""


def stored_copy_deleter(retention: Retention) -> DeleteCopy:
    """Deletes a task's stored video now, through retention (which also takes it off the
    deletion schedule). A store that refuses leaves it scheduled: retention deletes it at its
    time, and nobody can read it meanwhile (its task is gone)."""

    async def delete(record: TaskRecord) -> None:
        # A copy may be under way without ``stored`` yet: its key is the task's all the same.
        await retention.delete_now(record.stored.key if record.stored else object_key(record.id))

    return delete


class TaskListing:
    """List and delete a client's tasks."""

    def __init__(
        self,
        store: TaskStore,
        index: TaskIndex,
        final: FinalTasks,
        invalidations: Invalidations,
        *,
        metrics: Metrics,
        delete_copy: DeleteCopy | None = None,
    ) -> None:
        self._store = store
        self._index = index
        self._final = final
        self._invalidations = invalidations
        self._metrics = metrics
        self._delete_copy = delete_copy

    async def indexed(self, client: str, task_id: str) -> None:
        """The client was given this task's id (accepted, or named by a 504): list it. Best
        effort: the task itself is recorded (or being recorded), and a failure here only hides
        it from lists (logged and counted)."""
        try:
            await self._index.add(client, task_id)
        except StoreUnavailable:
            self._metrics.redis_error("listing")
            logger.warning("task not added to its client's list", extra={"task_id": task_id})

    async def page(self, client: str, *, after: str | None, limit: int, order: Order) -> TaskList:
        records: list[TaskRecord] = []
        gone: list[str] = []
        cursor, wanted = after, limit + 1  # one more than the page says whether more exist
        for _ in range(MAX_READS):
            ids = await self._index.page(client, cursor, wanted - len(records), order)
            if not ids:
                break
            found = await self._store.get_many(ids)
            gone += [i for i, r in zip(ids, found, strict=True) if r is None]
            records += [r for r in found if r is not None and r.client == client]
            if len(records) >= wanted:
                break
            cursor = ids[-1]
        if gone:  # after the reads: a dropped id is no cursor any more
            await self._index.drop(client, gone)
        tasks = [r.public() for r in records[:limit]]
        return TaskList(
            data=tasks,
            first_id=tasks[0].id if tasks else None,
            last_id=tasks[-1].id if tasks else None,
            has_more=len(records) > limit,
        )

    async def delete(self, client: str, task_id: str) -> TaskDeleted:
        record = await self._store.get(task_id) if TASK_ID.match(task_id) else None
        if record is None or record.client != client:
            raise NotFound(f"no task {task_id}")
        if record.resubmitting:
            raise _busy(task_id)
        if self._delete_copy is not None:
            await self._delete_copy(record)
        deleted = await self._store.delete(record)
        if deleted == "busy":  # a resubmission began since the read
            raise _busy(task_id)
        if deleted == "gone":
            raise NotFound(f"no task {task_id}")  # a concurrent delete won
        self._final.evict(task_id)
        await self._invalidations.publish(task_id)
        try:
            await self._index.remove(client, task_id)
        except StoreUnavailable:
            # The record is gone; a page that meets the id drops it.
            self._metrics.redis_error("listing")
            logger.warning("deleted task left in its client's list", extra={"task_id": task_id})
        _log_deleted(record)
        return TaskDeleted(id=task_id)


def _log_deleted(record: TaskRecord) -> None:
    """The mapping outlives the record here: an unfinished task still runs (and bills) at its
    reseller, and an operator reconciling bills needs to find it."""
    extra = {
        "task_id": record.id,
        "client": record.client,
        "status": record.status.value,
        "provider": record.provider,
        "provider_task_id": record.provider_task_id,
        "price_usd": record.price_usd,
    }
    if record.is_final:
        logger.info("task deleted", extra=extra)
    else:
        logger.warning("unfinished task deleted; it still runs at its reseller", extra=extra)


def _busy(task_id: str) -> TaskBusy:
    """A resubmission's paid create is in flight: its answer must be recorded (and the new
    upstream task mapped) before the task can go; that takes at most one create's time."""
    return TaskBusy(
        f"task {task_id} is being resubmitted to another provider; retry in a few seconds",
        headers={"Retry-After": str(RETRY_BUSY_S)},
    )
