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

from gateway.errors import (
    GatewayError,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidRequest,
    StoreUnavailable,
    UpstreamOutcomeUnknown,
)
from gateway.schemas import CreateVideoRequest, FieldError, Task
from gateway.store import IdempotencyRecord, IdempotencyStore, TaskRecord, TaskStore

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
SETTLE_RETRY_S = 60.0
"""How long a key's settle or release is retried during a Redis outage (a restart or a
failover takes about a second; the claim turns stale after the longest create anyway)."""


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
    return UpstreamOutcomeUnknown(problem.detail, attempts=problem.attempts)
