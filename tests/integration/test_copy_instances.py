"""Two gateway instances copying finished videos on one Redis (api.md §3, stored videos): each
video is downloaded from the reseller once and uploaded once, and its task finalized once.

Each instance has what the app gives it (its own Redis connection, :class:`TaskStore`,
:class:`CopyQueue`, :class:`VideoCopier` and a :class:`VideoStore` on the shared directory);
the simulated RunAPI serves the videos, paced so a download outlasts the copy lease."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from obstore.store import LocalStore

from gateway.config import StorageSettings
from gateway.metrics import Metrics
from gateway.netguard import AddressPolicy
from gateway.redis_client import RedisClient, connect
from gateway.retention import Retention
from gateway.schemas import TaskError
from gateway.storage import VideoStore
from gateway.store import TaskStore
from gateway.tasks import TaskRecord
from gateway.video_copy import CopyQueue, VideoCopier, content_link, object_key
from gateway.video_source import VideoSource
from providers.base import TaskStatus, VideoJob
from providers.sandbox import runapi as sandbox_runapi
from providers.sandbox.engine import Knobs, SandboxState, TaskSpec
from tests.integration.conftest import ENV, IMAGE, asgi

LEASE_S = 1.0
VIDEO_BYTES = 150_000
# 1.5 s a download: longer than the lease, so only the lease's extension keeps it one copy.
PACED = Knobs(queue_s=0, complete_after_s=0, video_bytes=VIDEO_BYTES, video_bytes_per_s=100_000)
SETTINGS = StorageSettings(
    enabled=True, allow_private_sources=True, copy_lease_s=LEASE_S, copy_concurrency=2
)


class CountedVideoStore(VideoStore):
    """The local-file store, noting each upload it is asked for."""

    def __init__(self, root: Path, uploads: list[str]) -> None:
        super().__init__(LocalStore(prefix=root), description=f"files under {root}")
        self.uploads = uploads

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> None:
        self.uploads.append(key)
        await super().put(key, chunks)


@dataclass
class Instance:
    store: TaskStore
    queue: CopyQueue
    copier: VideoCopier
    uploads: list[str] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)


@pytest.fixture
async def two_redis(redis: RedisClient, redis_url: str) -> AsyncIterator[list[RedisClient]]:
    other = connect(redis_url)
    yield [redis, other]
    await other.aclose()


def instance(redis: RedisClient, root: Path, sandbox: SandboxState) -> Instance:
    metrics = Metrics(["runapi"])
    store = TaskStore(redis, ttl_s=3600, metrics=metrics)
    uploads: list[str] = []
    videos = CountedVideoStore(root, uploads)
    finalized: list[str] = []

    async def finalize(record: TaskRecord) -> TaskRecord:
        if await store.finalize(record):
            finalized.append(record.id)
        return record

    source = VideoSource(
        AddressPolicy(allow_private=True), SETTINGS.max_bytes,
        asgi(sandbox_runapi.create_app(sandbox)),
    )  # fmt: skip
    copier = VideoCopier(
        store, videos, source, Retention(store, videos, metrics=metrics), SETTINGS,
        finalize=finalize, public_url=None, metrics=metrics,
    )  # fmt: skip
    return Instance(store, CopyQueue(store), copier, uploads, finalized)


async def upstream_completed(store: TaskStore, sandbox: SandboxState) -> TaskRecord:
    """A task in progress at RunAPI, whose read has just come back completed (not saved)."""
    job = VideoJob(prompt="a paper boat on a canal", image=IMAGE)
    record = TaskRecord.new("demo", job, webhook_url=None, metadata={})
    upstream = sandbox.accept(record.id, TaskSpec("hailuo-2.3", job.prompt, 6, "768P"))
    record.provider, record.provider_task_id = "runapi", upstream.task_id
    record.status = TaskStatus.IN_PROGRESS
    await store.create(record, check_at=time.time() + 60)
    record.finish(TaskStatus.COMPLETED, video_url=f"http://runapi.sandbox/files/{record.id}.mp4")
    return record


async def until_final(store: TaskStore, ids: list[str], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        records = await store.get_many(ids)
        if all(r is not None and r.is_final for r in records):
            return
        assert time.monotonic() < deadline, "copies not finished"
        await asyncio.sleep(0.1)


async def run_until_final(instances: list[Instance], ids: list[str]) -> None:
    """Run every copier until the tasks are final and their leases have run out (a copier
    claiming a finished copy again must drop it), then stop them."""
    runs = [asyncio.create_task(i.copier.run()) for i in instances]
    try:
        await until_final(instances[0].store, ids)
        await asyncio.sleep(LEASE_S + 0.5)
    finally:
        for i in instances:
            await i.copier.stop()
        await asyncio.gather(*runs)


async def test_two_copiers_on_one_redis_copy_each_video_once(
    two_redis: list[RedisClient], tmp_path: Path
) -> None:
    sandbox = SandboxState("runapi", ENV["RUNAPI_API_KEY"], PACED)
    first, second = (instance(r, tmp_path, sandbox) for r in two_redis)
    records = [await upstream_completed(first.store, sandbox) for _ in range(6)]
    for n, record in enumerate(records):  # both instances' refreshes hand copies over
        await (first, second)[n % 2].queue.begin(record)
    ids = [r.id for r in records]
    await run_until_final([first, second], ids)
    assert sandbox.counters.video_downloads == len(ids)
    assert sorted(first.uploads + second.uploads) == sorted(object_key(i) for i in ids)
    assert first.uploads, "the first instance copied nothing"
    assert second.uploads, "the second instance copied nothing"
    assert sorted(first.finalized + second.finalized) == sorted(ids)
    for stored in await first.store.get_many(ids):
        assert stored is not None
        assert stored.status is TaskStatus.COMPLETED
        assert stored.video_url == content_link(None, stored.id)
        assert stored.stored is not None
        assert stored.stored.size == VIDEO_BYTES


async def test_a_second_begin_from_an_older_read_does_not_copy_again(
    two_redis: list[RedisClient], tmp_path: Path
) -> None:
    # Both instances read the task before either began its copy (the second's poll turn came
    # after the first's slow upstream read ran past status.poll_interval_s): the later begin
    # must not put the copy back on the schedule while the first instance is copying.
    sandbox = SandboxState("runapi", ENV["RUNAPI_API_KEY"], PACED)
    first, second = (instance(r, tmp_path, sandbox) for r in two_redis)
    record = await upstream_completed(first.store, sandbox)
    older = record.model_copy(deep=True)
    await first.queue.begin(record)
    runs = [asyncio.create_task(first.copier.run())]
    try:
        deadline = time.monotonic() + 5
        while sandbox.counters.video_downloads == 0:
            assert time.monotonic() < deadline, "the copy did not start"
            await asyncio.sleep(0.02)
        answer = await second.queue.begin(older)
        runs.append(asyncio.create_task(second.copier.run()))
        await until_final(first.store, [record.id])
        await asyncio.sleep(LEASE_S + 0.5)
    finally:
        for i in (first, second):
            await i.copier.stop()
        await asyncio.gather(*runs)
    assert sandbox.counters.video_downloads == 1
    assert first.uploads + second.uploads == [object_key(record.id)]
    assert first.finalized + second.finalized == [record.id]
    # The later begin answered the copy already under way.
    assert record.copy_state is not None
    assert answer.copy_state is not None
    assert answer.copy_state.started_at == record.copy_state.started_at


async def test_a_write_from_a_read_before_the_copy_began_does_not_undo_it(
    two_redis: list[RedisClient], tmp_path: Path
) -> None:
    sandbox = SandboxState("runapi", ENV["RUNAPI_API_KEY"], PACED)
    first, second = (instance(r, tmp_path, sandbox) for r in two_redis)
    record = await upstream_completed(first.store, sandbox)
    older = await second.store.get(record.id)  # still processing when this instance read it
    assert older is not None
    await first.queue.begin(record)
    assert not await second.store.save(older)
    older.finish(TaskStatus.FAILED, error=TaskError(code="timeout", message="deadline"))
    assert not await second.store.finalize(older)
    stored = await first.store.get(record.id)
    assert stored is not None
    assert (stored.status, stored.copy_state) == (TaskStatus.IN_PROGRESS, record.copy_state)
