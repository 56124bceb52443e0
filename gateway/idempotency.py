"""``Idempotency-Key`` (api.md §2): one key, one body, one upstream task.

- same key, same body → the same task again (``200``), with no second upstream call;
- same key, another body → ``422 idempotency_key_reused``;
- same key while the first request is still being routed → ``409 idempotency_key_in_use``;
- an error answer is forgotten (a retry runs again), except ``504 upstream_outcome_unknown``,
  which is replayed: the upstream may have taken the task, so a blind retry must not bill twice.

If the instance that claimed a key dies mid-request, the key stays ``in_flight``; once that is
older than any create could take, the task record decides: a recorded upstream task is replayed,
a task whose call may have gone out is ``504``, and no task at all means nothing was sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, PrivateAttr

from gateway.errors import (
    GatewayError,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidRequest,
    StoreUnavailable,
    UpstreamOutcomeUnknown,
)
from gateway.metrics import Metrics
from gateway.redis_client import RedisClient
from gateway.schemas import CreateVideoRequest, FieldError, Problem, Task
from gateway.store import Keys, TaskStore, translated
from gateway.tasks import TaskRecord

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
SETTLE_RETRY_S = 60.0
"""How long a key's settle or release is retried during a Redis outage (a restart or a
failover takes about a second; the claim turns stale after the longest create anyway)."""


# Compare-and-swap on an idempotency record: replace (or, with an empty ARGV[2], delete) the
# record only if it still holds exactly the value the caller read (ARGV[1]). Another instance's
# newer claim is never overwritten or deleted. Retried after a lost reply, it still answers 1:
# the key already holds the new value (or, for a delete, nothing).
_SWAP_IF_UNCHANGED = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  if ARGV[2] == '' then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  end
  return 1
end
if ARGV[2] == '' then return current and 0 or 1 end
return current == ARGV[2] and 1 or 0
"""


class IdempotencyRecord(BaseModel):
    """What an ``Idempotency-Key`` is bound to: one request body and the task it created."""

    state: Literal["in_flight", "done", "outcome_unknown"]
    fingerprint: str
    task_id: str
    started_at: float
    problem: Problem | None = None
    """The ``504`` answered for an ``outcome_unknown`` create, replayed as it was."""
    _stored_as: str | None = PrivateAttr(default=None)
    """The exact value read from Redis, for a compare-and-swap on it. ``model_copy`` keeps it,
    so a copy serves only as a new value (:meth:`IdempotencyStore.swap` writes its JSON)."""

    @property
    def stored_as(self) -> str:
        """What Redis holds for this record: the value read, else this process's own JSON."""
        return self._stored_as if self._stored_as is not None else self.model_dump_json()

    @classmethod
    def read(cls, raw: bytes | str) -> IdempotencyRecord:
        record = cls.model_validate_json(raw)
        record._stored_as = raw.decode() if isinstance(raw, bytes) else raw
        return record


class IdempotencyStore:
    """``Idempotency-Key`` records, scoped to the client; ``SET NX`` makes the claim atomic
    across instances, and every later change is a compare-and-swap on the value last read."""

    def __init__(self, redis: RedisClient, *, ttl_s: int, metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        self._redis = redis
        self._ttl_s = ttl_s
        self._swap = redis.register_script(_SWAP_IF_UNCHANGED)

    @staticmethod
    def key(client: str, idempotency_key: str) -> str:
        return Keys.idempotency(client, idempotency_key)

    async def claim(
        self, client: str, idempotency_key: str, record: IdempotencyRecord
    ) -> IdempotencyRecord | None:
        """Bind the key to ``record``; returns None when this caller won it, else the record
        already there."""
        key = self.key(client, idempotency_key)
        mine = record.model_dump_json()
        for _ in range(3):  # the existing record may expire between SET NX and GET
            async with translated(self._metrics, "idempotency"):
                if await self._redis.set(key, mine, nx=True, ex=self._ttl_s):
                    return None
                raw = await self._redis.get(key)
            if raw is not None:
                existing = IdempotencyRecord.read(raw)
                # A SET NX retried after its reply was lost finds this caller's own claim.
                return None if existing.stored_as == mine else existing
        raise StoreUnavailable("idempotency record kept changing")

    async def swap(
        self,
        client: str,
        idempotency_key: str,
        read: IdempotencyRecord,
        new: IdempotencyRecord | None,
    ) -> bool:
        """Replace the record ``read`` by ``new`` (None: forget the key) only if the key still
        holds exactly what was read; False when another request changed it meanwhile."""
        args = [read.stored_as, "" if new is None else new.model_dump_json()]
        async with translated(self._metrics, "idempotency"):
            done = await self._swap(keys=[self.key(client, idempotency_key)], args=args)
        return int(done) == 1


def check_key(value: str | None) -> str | None:
    """The header's value, or None when absent; 1–255 printable ASCII characters."""
    if value is None:
        return None
    if not 1 <= len(value) <= 255 or not all(" " <= ch <= "~" for ch in value):
        raise InvalidRequest(
            f"{HEADER}: must be 1–255 printable ASCII characters",
            errors=[FieldError(field=HEADER, message="must be 1–255 printable ASCII characters")],
        )
    return value


def fingerprint(request: CreateVideoRequest) -> str:
    """The validated request, canonicalised: key order and defaulted fields do not matter."""
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Outcome:
    task: Task
    replayed: bool


class IdempotentCreates:
    def __init__(self, keys: IdempotencyStore, tasks: TaskStore, *, stale_after_s: float) -> None:
        self._keys = keys
        self._tasks = tasks
        self._stale_after_s = stale_after_s
        self._settling: set[asyncio.Task[None]] = set()

    async def run(
        self,
        client: str,
        key: str,
        request: CreateVideoRequest,
        record: TaskRecord,
        create: Callable[[], Awaitable[Task]],
    ) -> Outcome:
        fp = fingerprint(request)
        claim = IdempotencyRecord(
            state="in_flight", fingerprint=fp, task_id=record.id, started_at=time.time()
        )
        existing = await self._keys.claim(client, key, claim)
        if existing is not None:
            return await self._replay(client, key, fp, existing, request, record, create)
        return await self._create(client, key, claim, create)

    async def _create(
        self,
        client: str,
        key: str,
        claim: IdempotencyRecord,
        create: Callable[[], Awaitable[Task]],
    ) -> Outcome:
        """Run the create under ``claim`` (this request's, as stored) and settle the key."""
        try:
            task = await create()
        except UpstreamOutcomeUnknown as exc:
            unknown = claim.model_copy(
                update={"state": "outcome_unknown", "problem": exc.problem()}
            )
            await self._settle(client, key, claim, unknown)
            raise
        except GatewayError:
            await self._settle(client, key, claim, None)  # an error is forgotten
            raise
        # The upstream accepted: whatever Redis does now, the answer is the task, never 503.
        await self._settle(client, key, claim, claim.model_copy(update={"state": "done"}))
        return Outcome(task, replayed=False)

    async def _settle(
        self, client: str, key: str, claim: IdempotencyRecord, new: IdempotencyRecord | None
    ) -> None:
        """Move the key from this request's ``claim`` to ``new`` (None: forget it). During a
        Redis outage the answer does not wait: the write is retried in the background, with
        backoff, for :data:`SETTLE_RETRY_S`, so that the key neither stays ``409 in use`` nor
        turns into a false ``504`` for a request whose outcome is known."""
        try:
            await self._keys.swap(client, key, claim, new)
        except StoreUnavailable:
            logger.warning(
                "idempotency key not settled; retrying in the background",
                extra={"client": client, "state": new.state if new else "released"},
            )
            retry = asyncio.create_task(self._settle_later(client, key, claim, new))
            self._settling.add(retry)
            retry.add_done_callback(self._settling.discard)

    async def _settle_later(
        self, client: str, key: str, claim: IdempotencyRecord, new: IdempotencyRecord | None
    ) -> None:
        deadline = time.monotonic() + SETTLE_RETRY_S
        delay = 0.05
        while True:
            await asyncio.sleep(delay)
            try:
                await self._keys.swap(client, key, claim, new)
            except StoreUnavailable:  # counted by the store as a Redis error
                if time.monotonic() >= deadline:
                    logger.exception(
                        "idempotency key left in flight: Redis unreachable",
                        extra={"client": client, "state": new.state if new else "released"},
                    )
                    return
                delay = min(1.0, delay * 2)
            else:
                return

    async def _replay(
        self,
        client: str,
        key: str,
        fp: str,
        existing: IdempotencyRecord,
        request: CreateVideoRequest,
        record: TaskRecord,
        create: Callable[[], Awaitable[Task]],
    ) -> Outcome:
        if existing.fingerprint != fp:
            raise IdempotencyKeyReused(f"{HEADER} {key!r} was used with a different body")
        if existing.state == "outcome_unknown":
            raise _replayed_unknown(existing)
        stored = await self._tasks.get(existing.task_id)
        if existing.state == "done" and stored is not None:
            return Outcome(stored.public(), replayed=True)
        if time.time() - existing.started_at < self._stale_after_s:
            raise IdempotencyKeyInUse(f"a request with {HEADER} {key!r} is still being routed")
        # The instance that claimed the key died mid-request.
        if stored is None:
            # It never wrote the task: nothing was sent. Take the key over only if it still
            # holds the claim read: another retry may have taken it over first.
            claim = IdempotencyRecord(
                state="in_flight", fingerprint=fp, task_id=record.id, started_at=time.time()
            )
            if not await self._keys.swap(client, key, existing, claim):
                return await self.run(client, key, request, record, create)
            return await self._create(client, key, claim, create)
        if stored.provider_task_id is not None:
            await self._keys.swap(
                client, key, existing, existing.model_copy(update={"state": "done"})
            )
            return Outcome(stored.public(), replayed=True)
        unknown = UpstreamOutcomeUnknown(
            "the request holding this key was interrupted while calling "
            f"{stored.attempts[-1].provider if stored.attempts else 'an upstream'}; "
            "it may have created the task",
            attempts=stored.attempts,
        )
        await self._keys.swap(
            client, key, existing, existing.model_copy(update={"state": "outcome_unknown",
                                                               "problem": unknown.problem()})
        )  # fmt: skip
        raise unknown


def _replayed_unknown(existing: IdempotencyRecord) -> UpstreamOutcomeUnknown:
    problem = existing.problem
    if problem is None:
        return UpstreamOutcomeUnknown()
    return UpstreamOutcomeUnknown(problem.detail, attempts=problem.attempts, task_id=problem.id)
