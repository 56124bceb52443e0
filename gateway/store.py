"""Tasks in Redis: the public id → (provider, upstream task id) mapping and everything around it.

Every Redis key the gateway uses is built in this module. A task is one string key holding the
record's JSON, with a TTL set at creation (``status.task_ttl_days``) and kept on updates.
Any Redis failure leaves this module as :class:`gateway.errors.StoreUnavailable`.

Writes that must be atomic are Lua scripts, never ``MULTI`` pipelines: redis-py's asyncio
Cluster client (8.1) queues each command of a transaction through a new thread running an event
loop of its own, blocking the gateway's loop meanwhile, which doubled the gateway's CPU per
create on a Cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal

from pydantic import ValidationError
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics, RedisOperation
from gateway.redis_client import REDIS_FAILURES, RedisClient
from gateway.shards import DueHints, shard_of, shard_tag
from gateway.tasks import TaskRecord

KEY_PREFIX = "gw"

# Both scripts below refuse a write that belongs to an older placement of the task: fewer
# resubmissions than stored, or the same number while a resubmission is marked in flight
# (only its resubmitter writes records that carry the mark). A poller holding the old
# upstream task's failure thus never ends a task another instance is resubmitting. Likewise a
# record read before the task's video copy began (every record read since carries
# copy_state) never undoes the copy.
_STALE = """
local function stale(stored, new)
  if new['resubmits'] < stored['resubmits'] then return true end
  if type(stored['copy_state']) == 'table' and type(new['copy_state']) ~= 'table' then
    return true
  end
  return new['resubmits'] == stored['resubmits'] and stored['resubmitting'] == true
    and new['resubmitting'] ~= true
end
"""

# Saves that must never undo a final state: a slower poller holding an older answer loses.
# KEYS: task[, due-set]. ARGV: record[, due-at, task id[, 'first_copy']]: with a due-set (in
# the task's shard), a saved task is also (re)scheduled there, in the same step (an accepted
# task's first poll). 'first_copy' refuses too when the task's copy has begun: an instance
# that read the completion later must not schedule a running copy again.
_SAVE_UNLESS_FINAL = (
    _STALE
    + """
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
local stored = cjson.decode(current)
if stored['status'] == 'completed' or stored['status'] == 'failed' then return 0 end
if ARGV[4] == 'first_copy' and type(stored['copy_state']) == 'table' then return 0 end
if stale(stored, cjson.decode(ARGV[1])) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
if #KEYS > 1 then redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3]) end
return 1
"""
)

# The one transition to a final state (compare-and-set), with what must happen exactly once
# in the same atomic step: leave the poll and copy schedules and, if asked, queue the webhook.
# KEYS: task, poll due-set, copy due-set[, delivery, deliveries-due]. ARGV: record, task id[,
# delivery, delivery id, deliver-at, delivery ttl]. Returns 1 when this call made the task final.
_FINALIZE = (
    _STALE
    + """
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
local stored = cjson.decode(current)
if stored['status'] == 'completed' or stored['status'] == 'failed' then return 0 end
if stale(stored, cjson.decode(ARGV[1])) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
if #KEYS > 3 then
  redis.call('SET', KEYS[4], ARGV[3], 'EX', ARGV[6])
  redis.call('ZADD', KEYS[5], ARGV[5], ARGV[4])
end
return 1
"""
)

# Mark a task "resubmitting" before the paid call: only if it is still the placement the
# caller read (same resubmission count, same upstream task, not final, not already marked).
# KEYS: task. ARGV: the marked record, the upstream task id read. Retried after a lost reply,
# it finds its own write and answers 1 again.
_MARK_RESUBMITTING = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if current == ARGV[1] then return 1 end
local stored = cjson.decode(current)
local new = cjson.decode(ARGV[1])
if stored['status'] == 'completed' or stored['status'] == 'failed' then return 0 end
if stored['resubmitting'] == true or stored['resubmits'] ~= new['resubmits'] then return 0 end
if stored['provider_task_id'] ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
return 1
"""

# Delete a task (record, poll schedule entry, callback token: one shard) unless a resubmission's
# paid create is in flight: its answer must find the record to be written to (-1: busy; 0: the
# task was gone already). KEYS: task, due-set[, callback]. ARGV: task id.
_DELETE_UNLESS_RESUBMITTING = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if cjson.decode(current)['resubmitting'] == true then return -1 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if #KEYS > 2 then redis.call('DEL', KEYS[3]) end
return 1
"""

# Write a new task with its first place on the poll schedule (and its callback token), in one
# step. A script rather than a MULTI: redis-py's asyncio Cluster client queues each command of
# a transaction through a thread running an event loop of its own (redis-py 8), which doubled
# the gateway's CPU per create on a Cluster. KEYS: task, due-set[, callback]. ARGV: record,
# ttl, due-at, task id. Returns 1 when written, or when the key already holds exactly this
# record (a retry after a lost reply finds its own write); 0, touching nothing, when another
# record holds the id.
_CREATE = """
local current = redis.call('GET', KEYS[1])
if current then return current == ARGV[1] and 1 or 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
if #KEYS > 2 then redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[2]) end
return 1
"""

# Claim due members of one shard of a schedule: push their score to the lease's end, so
# another instance takes them over only if this one does not finish (or reschedule) them in
# time. Returns {ids, the earliest score left (nil when empty)}.
_CLAIM_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id) end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {ids, first[2] or false}
"""

# The background poller's read of a task it claimed, with the task's poll turn (the
# ``SET NX`` of ``take_poll_turn``) taken in the same round trip when the task exists: one
# Redis command fewer per poll. KEYS: task, poll lock (one shard). ARGV: the turn's length
# (ms), this store's token (the lock's value, so that the turn can be renewed). Returns 0
# when the task is gone, else {record, 1 when this caller took the turn}.
_READ_FOR_POLL = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[1]) then return {current, 1} end
return {current, 0}
"""

# A turn taken by ``_READ_FOR_POLL`` starts again now: renewed if this store still holds it,
# taken if it is free; 0 (nothing changed) when another reader holds it. KEYS: poll lock.
# ARGV: the turn's length (ms), this store's token.
_RENEW_POLL_TURN = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
return 1
"""

Schedule = Literal["poll", "webhooks", "video_copy", "video_delete"]
"""The sharded schedules: task polls, webhook deliveries, video copies, stored videos'
deletions."""
SCHEDULES: tuple[Schedule, ...] = ("poll", "webhooks", "video_copy", "video_delete")
_SCHEDULE_ERRORS: dict[Schedule, RedisOperation] = {
    "poll": "polling", "webhooks": "webhooks", "video_copy": "polling", "video_delete": "polling",
}  # fmt: skip


Accepted = Literal["saved", "final", "missing"]
ACCEPT_RESULTS: dict[int, Accepted] = {1: "saved", 0: "final", -1: "missing"}
Deleted = Literal["deleted", "gone", "busy"]
DELETE_RESULTS: dict[int, Deleted] = {1: "deleted", 0: "gone", -1: "busy"}


class Keys:
    """Every Redis key the gateway uses, in one place.

    Cluster layout (:mod:`gateway.shards`): a task's keys, its idempotency record, its webhook
    delivery and its place on the schedules share the tag of the task's virtual shard
    ``{s<N>}``; a provider's circuit and health keys share ``{p:<provider>}``; a client's own
    keys share ``{c:<client>}``. No script or ``MULTI`` touches keys of two tags.
    """

    @staticmethod
    def _in(shard_of_id: str) -> str:
        return f"{KEY_PREFIX}:{shard_tag(shard_of(shard_of_id))}"

    @staticmethod
    def task(task_id: str) -> str:
        return f"{Keys._in(task_id)}:task:{task_id}"

    @staticmethod
    def poll_lock(task_id: str) -> str:
        return f"{Keys._in(task_id)}:poll:{task_id}"

    @staticmethod
    def due(schedule: Schedule, shard: int) -> str:
        """One shard of a schedule (a sorted set by due time): task ids for ``poll`` and
        ``video_copy`` (in the task's shard), delivery ids for ``webhooks`` (in their task's
        shard), stored videos' object keys for ``video_delete`` (shard: a hash of the key)."""
        return f"{KEY_PREFIX}:{shard_tag(shard)}:due:{schedule}"

    @staticmethod
    def callback(token: str) -> str:
        """Tokens are drawn in their task's shard."""
        return f"{Keys._in(token)}:callback:{token}"

    @staticmethod
    def webhook(delivery_id: str) -> str:
        """Delivery ids are drawn in their task's shard."""
        return f"{Keys._in(delivery_id)}:webhook:{delivery_id}"

    @staticmethod
    def idempotency_scope(client: str, idempotency_key: str) -> str:
        """What places a client's ``Idempotency-Key`` in a shard (the key itself is hashed)."""
        return f"{client}:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"

    @staticmethod
    def idempotency(client: str, idempotency_key: str) -> str:
        scope = Keys.idempotency_scope(client, idempotency_key)
        return f"{Keys._in(scope)}:idem:{scope}"

    @staticmethod
    def circuit(provider: str) -> str:
        return f"{KEY_PREFIX}:{{p:{provider}}}:circuit"

    @staticmethod
    def circuit_lease(provider: str) -> str:
        """The half-open trial call's lease."""
        return f"{KEY_PREFIX}:{{p:{provider}}}:circuit:half_open"

    @staticmethod
    def health_outcomes(provider: str) -> str:
        return f"{KEY_PREFIX}:{{p:{provider}}}:health:outcomes"

    @staticmethod
    def health_latency(provider: str) -> str:
        return f"{KEY_PREFIX}:{{p:{provider}}}:health:latency_ms"

    @staticmethod
    def rate(client: str) -> str:
        return f"{KEY_PREFIX}:{{c:{client}}}:rate"

    @staticmethod
    def client_tasks(client: str) -> str:
        """The client's task ids by creation time (``GET /v1/videos``); one hash slot per
        client, shared with :meth:`client_deleted` (one script touches both)."""
        return f"{KEY_PREFIX}:{{c:{client}}}:tasks"

    @staticmethod
    def client_deleted(client: str) -> str:
        """Ids the client deleted, by creation time: a deleted id stays a list cursor."""
        return f"{KEY_PREFIX}:{{c:{client}}}:deleted"

    DELETED_TASKS = f"{KEY_PREFIX}:events:deleted"
    """Pub/sub channel: a task id was deleted (every instance drops it from its memory)."""

    # A client's money keys share the hash tag {c:<client>}: one budget script touches one slot.
    @staticmethod
    def usage(client: str, period_id: str) -> str:
        """A client's counters for one UTC period (``d20261201``, ``m202612``): a hash of
        integer micro-dollars (spent, reserved, by provider) and task counts."""
        return f"{KEY_PREFIX}:{{c:{client}}}:usage:{period_id}"

    @staticmethod
    def reservation(client: str, task_id: str) -> str:
        """What one task holds of its client's budget until it completes or fails."""
        return f"{KEY_PREFIX}:{{c:{client}}}:reservation:{task_id}"

    @staticmethod
    def balance(provider: str) -> str:
        """A provider account's last balance read, shared by every instance."""
        return f"{KEY_PREFIX}:{{b:{provider}}}:balance"

    @staticmethod
    def balance_lease(provider: str) -> str:
        """Held by the one instance that reads the balance this interval."""
        return f"{KEY_PREFIX}:{{b:{provider}}}:balance:lease"


@asynccontextmanager
async def translated(
    metrics: Metrics | None = None, operation: RedisOperation = "tasks"
) -> AsyncIterator[None]:
    """Redis failures leave as StoreUnavailable, counted as ``operation`` when ``metrics`` is
    given (callers that count their own failures pass none)."""
    try:
        yield
    except REDIS_FAILURES as exc:
        if metrics is not None:
            metrics.redis_error(operation)
        raise StoreUnavailable(f"redis: {type(exc).__name__}") from exc


logger = logging.getLogger(__name__)


def _ms(seconds: float) -> int:
    """A lock's length in whole milliseconds (at least one)."""
    return max(1, int(seconds * 1000))


class TaskStore:
    """Tasks by public id, and the schedule of their status polls.

    Writes keep the TTL given at creation. A task's move to a final state happens once
    (:meth:`finalize`); later saves never undo it.
    """

    def __init__(self, redis: RedisClient, *, ttl_s: int, metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        self._redis = redis
        self._ttl_s = ttl_s
        self._create = redis.register_script(_CREATE)
        self._save_unless_final = redis.register_script(_SAVE_UNLESS_FINAL)
        self._finalize = redis.register_script(_FINALIZE)
        self._claim_due = redis.register_script(_CLAIM_DUE)
        self._read_for_poll = redis.register_script(_READ_FOR_POLL)
        self._renew_poll_turn = redis.register_script(_RENEW_POLL_TURN)
        self._turn_token = secrets.token_hex(8)
        """The value of the poll turns this store takes in :meth:`read_for_poll`."""
        self._mark_resubmitting = redis.register_script(_MARK_RESUBMITTING)
        self._delete = redis.register_script(_DELETE_UNLESS_RESUBMITTING)
        self._hints: dict[Schedule, DueHints] = {name: DueHints() for name in SCHEDULES}

    def _translated(self) -> AbstractAsyncContextManager[None]:
        return translated(self._metrics, "tasks")

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    async def ping(self) -> None:
        async with translated():
            await self._redis.ping()

    async def create(self, record: TaskRecord, *, check_at: float) -> None:
        """Write a new task and put it on the poll schedule at ``check_at`` (where a create
        that never finished is found); refuses (StoreUnavailable) when Redis cannot take it."""
        keys = [Keys.task(record.id), self.due_key("poll", record.id, check_at)]
        if record.callback_token:
            keys.append(Keys.callback(record.callback_token))
        async with self._translated():
            created = await self._create(
                keys=keys, args=[record.model_dump_json(), self._ttl_s, check_at, record.id]
            )
        if not int(created):
            # 128 random bits do not collide; a duplicate means a bug, so fail loudly.
            raise RuntimeError(f"task id collision: {record.id}")

    def expires_at(self, record: TaskRecord) -> float:
        """When the task's key is gone at the earliest (Unix seconds). Writes keep the TTL set
        at creation, and ``created_at`` (whole seconds) is taken just before that write."""
        return record.created_at + self._ttl_s - 1

    async def save(self, record: TaskRecord) -> bool:
        """Overwrite a task that is not final yet, keeping its TTL. False when the stored task
        is already final (or gone): the caller holds a stale copy."""
        async with self._translated():
            saved = await self._save_unless_final(
                keys=[Keys.task(record.id)], args=[record.model_dump_json()]
            )
        return int(saved) == 1

    async def accept(self, record: TaskRecord, first_poll_at: float) -> Accepted:
        """Save an accepted task's mapping and schedule its first poll: one script, one round
        trip (a script in a redis-py pipeline costs a SCRIPT EXISTS round trip first).
        ``missing`` when the task's key is gone (Redis lost it), ``final`` when the task ended
        meanwhile: either way nothing was written."""
        async with self._translated():
            saved = await self._save_unless_final(
                keys=[Keys.task(record.id), self.due_key("poll", record.id, first_poll_at)],
                args=[record.model_dump_json(), first_poll_at, record.id],
            )
        return ACCEPT_RESULTS[int(saved)]

    async def finalize(
        self, record: TaskRecord, webhook: tuple[str, str, float] | None = None
    ) -> bool:
        """Store ``record`` (final) unless the task is final already; True when this call made
        it final. ``webhook`` is (delivery id, delivery JSON, deliver at), queued atomically."""
        shard = shard_of(record.id)
        keys = [Keys.task(record.id), Keys.due("poll", shard), Keys.due("video_copy", shard)]
        args: list[str | float | int] = [record.model_dump_json(), record.id]
        if webhook is not None:
            delivery_id, delivery, at = webhook
            if shard_of(delivery_id) != shard_of(record.id):
                raise ValueError("a webhook delivery is drawn in its task's shard")
            keys += [Keys.webhook(delivery_id), self.due_key("webhooks", delivery_id, at)]
            args += [delivery, delivery_id, at, self._ttl_s]
        async with self._translated():
            done = await self._finalize(keys=keys, args=args)
        return int(done) == 1

    async def begin_copy(self, record: TaskRecord, at: float, *, first: bool = False) -> bool:
        """Save a task whose video is to be copied (unless final) and put it on the copy
        schedule at ``at``, off the poll schedule. False when the stored task is final, or,
        with ``first`` (the copy's start), when its copy has begun already."""
        args: list[str | float] = [record.model_dump_json(), at, record.id]
        async with self._translated():
            saved = await self._save_unless_final(
                keys=[Keys.task(record.id), self.due_key("video_copy", record.id, at)],
                args=[*args, "first_copy"] if first else args,
            )
            await self._redis.zrem(Keys.due("poll", shard_of(record.id)), record.id)
        return int(saved) == 1

    async def extend_lease(self, schedule: Schedule, member: str, until: float) -> None:
        """Keep a claimed schedule member leased (only if it is still scheduled)."""
        async with self._translated():
            await self._redis.zadd(Keys.due(schedule, shard_of(member)), {member: until}, xx=True)

    async def schedule_on(self, schedule: Schedule, member: str, at: float) -> None:
        async with self._translated():
            await self._redis.zadd(self.due_key(schedule, member, at), {member: at})

    async def unschedule_from(self, schedule: Schedule, member: str) -> None:
        async with self._translated():
            await self._redis.zrem(Keys.due(schedule, shard_of(member)), member)

    async def get(self, task_id: str) -> TaskRecord | None:
        async with self._translated():
            raw = await self._redis.get(Keys.task(task_id))
        if raw is None:
            return None
        try:
            return TaskRecord.model_validate_json(raw)
        except ValidationError as exc:
            raise RuntimeError(f"unreadable task record {task_id}") from exc

    async def get_many(self, task_ids: list[str]) -> list[TaskRecord | None]:
        """Several tasks in one round trip (one GET each: the keys live in many hash slots)."""
        async with self._translated(), self._redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.get(Keys.task(task_id))
            raws = await pipe.execute()
        records: list[TaskRecord | None] = []
        for task_id, raw in zip(task_ids, raws, strict=True):
            try:
                records.append(None if raw is None else TaskRecord.model_validate_json(raw))
            except ValidationError as exc:
                raise RuntimeError(f"unreadable task record {task_id}") from exc
        return records

    async def delete(self, record: TaskRecord) -> Deleted:
        """Remove a task, its callback token and its poll schedule entry, in one step: "gone"
        when it was already (a concurrent delete, or expired), "busy" while a resubmission's
        paid create is in flight (deleting then would leave the new upstream task unrecorded).
        """
        keys = [Keys.task(record.id), Keys.due("poll", shard_of(record.id))]
        if record.callback_token:
            keys.append(Keys.callback(record.callback_token))
        async with self._translated():
            done = int(await self._delete(keys=keys, args=[record.id]))
        return DELETE_RESULTS[done]

    async def task_for_callback(self, token: str) -> str | None:
        async with self._translated():
            task_id = await self._redis.get(Keys.callback(token))
        return task_id.decode() if isinstance(task_id, bytes) else task_id

    async def take_poll_turn(self, task_id: str, interval_s: float) -> bool:
        """One upstream status read per task per interval, whichever instance asks."""
        async with self._translated():
            won = await self._redis.set(
                Keys.poll_lock(task_id), "1", nx=True, px=max(1, int(interval_s * 1000))
            )
        return bool(won)

    async def read_for_poll(
        self, task_id: str, interval_s: float
    ) -> tuple[TaskRecord | None, bool]:
        """:meth:`get` and :meth:`take_poll_turn` in one round trip, for the background poller:
        the task, and whether this caller now holds its poll turn (taken whenever the task
        exists; one the poller will not read, final, being copied or not placed yet, is one
        no lookup refreshes either)."""
        async with self._translated():
            found = await self._read_for_poll(
                keys=[Keys.task(task_id), Keys.poll_lock(task_id)],
                args=[_ms(interval_s), self._turn_token],
            )
        if not isinstance(found, list):
            return None, False
        raw, won = found
        try:
            return TaskRecord.model_validate_json(raw), bool(won)
        except ValidationError as exc:
            raise RuntimeError(f"unreadable task record {task_id}") from exc

    async def renew_poll_turn(self, task_id: str, interval_s: float) -> bool:
        """Start again now a turn :meth:`read_for_poll` took (a poll that waited for a slot
        must not shorten the interval the next reader waits); False when another reader holds
        the turn (this one's ran out and was taken)."""
        async with self._translated():
            renewed = await self._renew_poll_turn(
                keys=[Keys.poll_lock(task_id)], args=[_ms(interval_s), self._turn_token]
            )
        return int(renewed) == 1

    async def give_back_poll_turn(self, task_id: str) -> None:
        """Let the next caller (the background poller) read the status now."""
        async with self._translated():
            await self._redis.delete(Keys.poll_lock(task_id))

    async def mark_resubmitting(self, record: TaskRecord, upstream_id: str) -> bool:
        """Exactly one instance may resubmit a failed generation (it is a paid call): the one
        that marks ``record`` (``resubmitting`` set) over the placement it read, whose upstream
        task was ``upstream_id``. False: another instance got there first, leave it alone."""
        async with self._translated():
            won = await self._mark_resubmitting(
                keys=[Keys.task(record.id)], args=[record.model_dump_json(), upstream_id]
            )
        return int(won) == 1

    async def schedule(self, task_id: str, at: float) -> None:
        async with self._translated():
            await self._redis.zadd(self.due_key("poll", task_id, at), {task_id: at})

    async def unschedule(self, task_id: str) -> None:
        async with self._translated():
            await self._redis.zrem(Keys.due("poll", shard_of(task_id)), task_id)

    async def hand_back(self, task_ids: Sequence[str], now: float) -> None:
        """Polls this instance claimed but will not finish (it is stopping): due at ``now``
        again, so another instance takes them at its next look at their shards (within a
        second while it has work, 4 s when idle). A task no longer on the schedule (it became
        final meanwhile) is not put back (``XX``). One command per shard."""
        by_shard: dict[int, list[str]] = {}
        for task_id in task_ids:
            by_shard.setdefault(shard_of(task_id), []).append(task_id)
        async with self._translated():
            for shard, ids in by_shard.items():
                await self._redis.zadd(Keys.due("poll", shard), dict.fromkeys(ids, now), xx=True)

    def due_key(self, schedule: Schedule, member: str, at: float) -> str:
        """The key of ``member``'s shard of ``schedule``, for a caller about to put it there
        due at ``at`` (so this instance's claims look there in time)."""
        shard = shard_of(member)
        self._hints[schedule].note(shard, at)
        return Keys.due(schedule, shard)

    async def claim_due(
        self, schedule: Schedule, now: float, lease_s: float, limit: int
    ) -> list[str]:
        """Up to ``limit`` members of ``schedule`` due by ``now``, over the shards that may
        hold some (:class:`~gateway.shards.DueHints`), leased to the caller for ``lease_s``;
        no Redis call when nothing is known to be due. With ``limit`` below the number of due
        shards, only ``limit`` of them (rotating) are visited: the others wait for the next call.
        A shard that fails is looked at again next time; StoreUnavailable only when every shard
        visited failed."""
        hints = self._hints[schedule]
        plan = hints.plan(now, limit)
        results = await self._claim_shards(schedule, plan, now, lease_s)
        ids: list[str] = []
        failed: list[BaseException] = []
        for (shard, _), result in zip(plan, results, strict=True):
            if isinstance(result, BaseException):
                hints.note(shard, now)
                failed.append(result)
                continue
            claimed, first = result
            hints.learn(shard, float(first) if first is not None else None)
            ids += [i.decode() if isinstance(i, bytes) else str(i) for i in claimed]
        if failed and len(failed) == len(plan):
            raise StoreUnavailable(f"redis: {type(failed[0]).__name__}") from failed[0]
        if failed:
            if self._metrics is not None:
                self._metrics.redis_error(_SCHEDULE_ERRORS[schedule])
            error = type(failed[0]).__name__
            logger.warning(
                "schedule shards unreachable",
                extra={"schedule": schedule, "shards": len(failed), "error": error},
            )
        return ids

    async def _claim_shards(
        self, schedule: Schedule, plan: list[tuple[int, int]], now: float, lease_s: float
    ) -> list[Any]:
        """Each planned shard's claim result, or the error it met. Standalone: one pipelined
        round trip. A Cluster client refuses scripts in pipelines: one call per shard, all at
        once (each goes to its own node)."""
        if not plan:
            return []
        lease_end = now + lease_s
        if isinstance(self._redis, RedisCluster):
            return await asyncio.gather(
                *(self._claim_due(keys=[Keys.due(schedule, shard)], args=[now, lease_end, count])
                  for shard, count in plan),
                return_exceptions=True,
            )  # fmt: skip
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for shard, count in plan:
                    key = Keys.due(schedule, shard)
                    pipe.evalsha(self._claim_due.sha, 1, key, now, lease_end, count)
                results: list[Any] = await pipe.execute(raise_on_error=False)
        except REDIS_FAILURES as exc:
            return [exc] * len(plan)
        for i, ((shard, count), result) in enumerate(zip(plan, results, strict=True)):
            if isinstance(result, NoScriptError):  # a new primary, or a flushed script cache
                try:
                    results[i] = await self._claim_due(
                        keys=[Keys.due(schedule, shard)], args=[now, lease_end, count]
                    )
                except REDIS_FAILURES as exc:
                    results[i] = exc
        return results
