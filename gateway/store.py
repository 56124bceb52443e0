"""Tasks in Redis: the public id → (provider, upstream task id) mapping and everything around it.

Every Redis key the gateway uses is built in this module. A task is one string key holding the
record's JSON, with a TTL set at creation (``status.task_ttl_days``) and kept on updates.
Any Redis failure leaves this module as :class:`gateway.errors.StoreUnavailable`.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from pydantic import BaseModel, Field, ValidationError
from redis.asyncio import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from gateway.errors import StoreUnavailable
from gateway.schemas import Attempt, Problem, Task, TaskError
from providers.base import TaskStatus, VideoJob

KEY_PREFIX = "gw"


def new_task_id() -> str:
    """``vid_`` + 26 base32 characters of 128 random bits: opaque, URL-safe, unguessable."""
    return "vid_" + base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


def now_s() -> int:
    return int(time.time())


class TaskRecord(BaseModel):
    """What the store keeps for one task; :meth:`public` is what a client sees."""

    id: str
    client: str
    status: TaskStatus = TaskStatus.QUEUED
    job: VideoJob | None
    """The canonical request; dropped once the task is final (it is only needed to submit)."""
    mode: str
    model: str
    tier: str
    duration: int
    resolution: str
    webhook_url: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    provider: str | None = None
    provider_task_id: str | None = None
    price_usd: float | None = None
    video_url: str | None = None
    error: TaskError | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    created_at: int
    updated_at: int
    completed_at: int | None = None
    polled_at: float | None = None
    """When the upstream was last asked for this task's status (Unix seconds, fractional)."""

    @classmethod
    def new(
        cls,
        client: str,
        job: VideoJob,
        *,
        webhook_url: str | None,
        metadata: dict[str, str],
    ) -> TaskRecord:
        created = now_s()
        return cls(
            id=new_task_id(),
            client=client,
            job=job,
            mode=job.mode,
            model=job.model,
            tier=job.tier,
            duration=job.duration,
            resolution=job.resolution,
            webhook_url=webhook_url,
            metadata=metadata,
            created_at=created,
            updated_at=created,
        )

    @property
    def is_final(self) -> bool:
        return self.status.is_final

    def finish(
        self,
        status: TaskStatus,
        *,
        video_url: str | None = None,
        error: TaskError | None = None,
    ) -> None:
        """Move to a final state; the job is no longer needed."""
        at = now_s()
        self.status = status
        self.video_url = video_url
        self.error = error
        self.updated_at = at
        self.completed_at = at
        self.job = None

    def public(self) -> Task:
        return Task.model_validate(
            self.model_dump(exclude={"client", "job", "webhook_url", "polled_at"})
        )


def connect(url: str) -> Redis:
    """A pooled client with short timeouts and a small retry policy for transient errors."""
    return Redis.from_url(
        url,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
        health_check_interval=30,
        max_connections=256,
    )


@asynccontextmanager
async def translated() -> AsyncIterator[None]:
    """Redis failures leave as StoreUnavailable."""
    try:
        yield
    except RedisError as exc:
        raise StoreUnavailable(f"redis: {type(exc).__name__}") from exc


class TaskStore:
    """Tasks by public id. Writes keep the TTL given at creation."""

    def __init__(self, redis: Redis, *, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    @staticmethod
    def task_key(task_id: str) -> str:
        return f"{KEY_PREFIX}:task:{task_id}"

    async def ping(self) -> None:
        async with translated():
            await self._redis.ping()

    async def create(self, record: TaskRecord) -> None:
        """Write a new task; refuses (StoreUnavailable) when Redis cannot take it."""
        async with translated():
            created = await self._redis.set(
                self.task_key(record.id), record.model_dump_json(), ex=self._ttl_s, nx=True
            )
        if not created:
            # 128 random bits do not collide; a duplicate means a bug, so fail loudly.
            raise RuntimeError(f"task id collision: {record.id}")

    async def save(self, record: TaskRecord) -> None:
        """Overwrite an existing task, keeping its TTL."""
        async with translated():
            await self._redis.set(self.task_key(record.id), record.model_dump_json(), keepttl=True)

    async def get(self, task_id: str) -> TaskRecord | None:
        async with translated():
            raw = await self._redis.get(self.task_key(task_id))
        if raw is None:
            return None
        try:
            return TaskRecord.model_validate_json(raw)
        except ValidationError as exc:
            raise RuntimeError(f"unreadable task record {task_id}") from exc


class IdempotencyRecord(BaseModel):
    """What an ``Idempotency-Key`` is bound to: one request body and the task it created."""

    state: Literal["in_flight", "done", "outcome_unknown"]
    fingerprint: str
    task_id: str
    started_at: float
    problem: Problem | None = None
    """The ``504`` answered for an ``outcome_unknown`` create, replayed as it was."""


class IdempotencyStore:
    """``Idempotency-Key`` records, scoped to the client; ``SET NX`` makes the claim atomic
    across instances."""

    def __init__(self, redis: Redis, *, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    @staticmethod
    def key(client: str, idempotency_key: str) -> str:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
        return f"{KEY_PREFIX}:idem:{client}:{digest}"

    async def claim(
        self, client: str, idempotency_key: str, record: IdempotencyRecord
    ) -> IdempotencyRecord | None:
        """Bind the key to ``record``; returns None when this caller won it, else the record
        already there."""
        key = self.key(client, idempotency_key)
        for _ in range(3):  # the existing record may expire between SET NX and GET
            async with translated():
                if await self._redis.set(key, record.model_dump_json(), nx=True, ex=self._ttl_s):
                    return None
                raw = await self._redis.get(key)
            if raw is not None:
                return IdempotencyRecord.model_validate_json(raw)
        raise StoreUnavailable("idempotency record kept changing")

    async def settle(self, client: str, idempotency_key: str, record: IdempotencyRecord) -> None:
        async with translated():
            await self._redis.set(
                self.key(client, idempotency_key), record.model_dump_json(), keepttl=True, xx=True
            )

    async def release(self, client: str, idempotency_key: str) -> None:
        """Forget the key: the request ended in an error a retry may safely repeat."""
        async with translated():
            await self._redis.delete(self.key(client, idempotency_key))
