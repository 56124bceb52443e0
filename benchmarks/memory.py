"""(e) Redis memory per stored task.

Each kind of record is written ``count`` times with the gateway's own :class:`TaskStore` into a
fresh redis-server (configured as the gateway's embedded one: append-only file, fsync every
second), and ``INFO memory`` ``used_memory`` is read before and after. The connections are
opened before the first reading and the reading after waits for any append-only-file rewrite to
end, so only the tasks are in the difference.

Two kinds: an accepted task still rendering (it keeps the canonical request, the job, and has
an entry in the poll schedule) and a final one (the job is dropped, a video URL added, and the
task taken off the schedule).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from benchmarks.processes import ProcessStack, start_redis
from benchmarks.workload import IMAGE, PROMPT
from gateway.redis_client import RedisClient, connect
from gateway.schemas import Attempt
from gateway.store import Keys, TaskStore
from gateway.tasks import TaskRecord
from providers.base import TaskStatus, VideoJob

RecordKind = Literal["rendering", "final"]
CONCURRENCY = 200  # under the store's pool limit (256 connections)
TTL_S = 7 * 86400
POLL_IN_S = 2.0


class MemoryResult(BaseModel):
    kind: RecordKind
    tasks: int
    bytes_per_task: float
    """``used_memory`` after − before, divided by ``tasks``."""
    sample_usage_bytes: int
    """``MEMORY USAGE`` of one task's key, Redis's own estimate, as a cross-check."""
    json_bytes: int
    """The length of one record's JSON, the stored value."""
    write_s: float


def sample_record(kind: RecordKind) -> TaskRecord:
    """A task as the gateway stores it once RunAPI accepted it (and, for ``final``, finished)."""
    job = VideoJob(prompt=PROMPT, image=IMAGE, duration=6, resolution="768P")
    record = TaskRecord.new("bench", job, webhook_url=None, metadata={})
    upstream_id = str(uuid.uuid4())
    record.provider = "runapi"
    record.provider_task_id = upstream_id
    record.price_usd = 0.30
    record.status = TaskStatus.IN_PROGRESS
    record.attempts = [Attempt(provider="runapi", outcome="accepted", latency_ms=48)]
    record.polled_at = time.time()
    if kind == "final":
        record.finish(
            TaskStatus.COMPLETED, video_url=f"https://cdn.runapi.ai/videos/{upstream_id}.mp4"
        )
    return record


def measure_memory(
    stack: ProcessStack, workdir: Path, count: int, kind: RecordKind
) -> MemoryResult:
    server = start_redis(stack, workdir / f"redis-memory-{kind}")
    try:
        return asyncio.run(_fill(server.url, count, kind))
    finally:
        server.stop()


async def _fill(url: str, count: int, kind: RecordKind) -> MemoryResult:
    redis = connect(url)
    store = TaskStore(redis, ttl_s=TTL_S)
    try:
        await asyncio.gather(*(redis.ping() for _ in range(CONCURRENCY)))  # open the pool
        before = await _used_memory(redis)
        started = time.monotonic()
        sample = sample_record(kind)
        for first in range(0, count, CONCURRENCY):
            batch = [sample_record(kind) for _ in range(min(CONCURRENCY, count - first))]
            await asyncio.gather(*(_store(store, record) for record in batch))
            sample = batch[0]
        write_s = time.monotonic() - started
        after = await _used_memory(redis)
        usage = await redis.memory_usage(Keys.task(sample.id)) or 0
    finally:
        await redis.aclose()
    return MemoryResult(
        kind=kind,
        tasks=count,
        bytes_per_task=(after - before) / count,
        sample_usage_bytes=int(usage),
        json_bytes=len(sample.model_dump_json()),
        write_s=write_s,
    )


async def _store(store: TaskStore, record: TaskRecord) -> None:
    """The gateway's own writes: a task is created on the poll schedule; a final one then
    goes through the one transition to final, which takes it off the schedule."""
    if not record.is_final:
        await store.create(record, check_at=time.time() + POLL_IN_S)
        return
    rendering = record.model_copy(update={"status": TaskStatus.IN_PROGRESS, "completed_at": None})
    await store.create(rendering, check_at=time.time() + POLL_IN_S)
    await store.finalize(record)


async def _used_memory(redis: RedisClient) -> int:
    for _ in range(600):  # an append-only-file rewrite holds a buffer until it ends
        persistence = await redis.info("persistence")
        if not persistence.get("aof_rewrite_in_progress"):
            break
        await asyncio.sleep(0.1)
    memory = await redis.info("memory")
    return int(memory["used_memory"])
