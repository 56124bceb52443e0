from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis
from redis.exceptions import SlotNotCoveredError

from gateway.errors import StoreUnavailable
from gateway.redis_client import connect
from gateway.schemas import Attempt, Task
from gateway.shards import SHARDS, shard_of
from gateway.store import Keys, TaskStore, translated
from gateway.tasks import TaskRecord, new_task_id
from providers.base import TaskStatus, VideoJob

JOB = VideoJob(prompt="a lighthouse at dusk", image="https://example.com/a.png")


def new_record() -> TaskRecord:
    return TaskRecord.new("demo", JOB, webhook_url=None, metadata={"order": "42"})


def test_task_ids_are_opaque_and_unique() -> None:
    ids = {new_task_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("vid_") and len(i) == 30 and i[4:].isalnum() for i in ids)


async def test_created_task_reads_back_equal(redis: Redis) -> None:
    store = TaskStore(redis, ttl_s=3600)
    record = new_record()
    await store.create(record, check_at=0)
    assert await store.get(record.id) == record


async def test_created_task_expires_after_the_configured_ttl(redis: Redis) -> None:
    store = TaskStore(redis, ttl_s=3600)
    record = new_record()
    await store.create(record, check_at=0)
    ttl = await redis.ttl(Keys.task(record.id))
    assert 3590 <= ttl <= 3600


async def test_save_keeps_the_ttl_set_at_creation(redis: Redis) -> None:
    store = TaskStore(redis, ttl_s=3600)
    record = new_record()
    await store.create(record, check_at=0)
    await redis.expire(Keys.task(record.id), 100)
    record.attempts = [Attempt(provider="runapi", outcome="accepted", latency_ms=5)]
    await store.save(record)
    assert 0 < await redis.ttl(Keys.task(record.id)) <= 100
    saved = await store.get(record.id)
    assert saved is not None
    assert saved.attempts == record.attempts


async def test_create_writes_the_task_its_schedule_and_its_callback_token(redis: Redis) -> None:
    store = TaskStore(redis, ttl_s=3600)
    record = new_record()
    record.callback_token = "token-1"
    await store.create(record, check_at=1_000.0)
    assert await redis.zscore(Keys.due("poll", shard_of(record.id)), record.id) == 1_000.0
    assert await redis.get(Keys.callback("token-1")) == record.id.encode()
    assert 3590 <= await redis.ttl(Keys.callback("token-1")) <= 3600


async def test_create_sent_again_after_a_lost_reply_finds_its_own_write(redis: Redis) -> None:
    store = TaskStore(redis, ttl_s=3600)
    record = new_record()
    await store.create(record, check_at=1_000.0)
    await store.create(record, check_at=2_000.0)  # the same record: no error
    assert await store.get(record.id) == record
    assert await redis.zscore(Keys.due("poll", shard_of(record.id)), record.id) == 1_000.0


async def test_create_over_another_record_fails_and_leaves_that_task_alone(redis: Redis) -> None:
    store = TaskStore(redis, ttl_s=3600)
    record = new_record()
    await store.create(record, check_at=1_000.0)
    other = record.model_copy(update={"metadata": {"order": "43"}, "callback_token": "token-2"})
    with pytest.raises(RuntimeError, match="collision"):
        await store.create(other, check_at=2_000.0)
    assert await store.get(record.id) == record
    assert await redis.zscore(Keys.due("poll", shard_of(record.id)), record.id) == 1_000.0
    assert await redis.exists(Keys.callback("token-2")) == 0


async def test_unknown_task_is_none(redis: Redis) -> None:
    assert await TaskStore(redis, ttl_s=60).get(new_task_id()) is None


async def test_final_task_drops_its_job_but_keeps_the_mapping(redis: Redis) -> None:
    store = TaskStore(redis, ttl_s=3600)
    record = new_record()
    record.provider, record.provider_task_id = "runapi", "up-1"
    await store.create(record, check_at=0)
    record.finish(TaskStatus.COMPLETED, video_url="https://cdn.example/v.mp4")
    await store.save(record)
    saved = await store.get(record.id)
    assert saved is not None
    assert saved.job is None
    assert (saved.provider, saved.provider_task_id) == ("runapi", "up-1")
    assert saved.public().video_url == "https://cdn.example/v.mp4"
    assert saved.completed_at is not None


def test_public_task_hides_client_job_and_webhook() -> None:
    record = new_record()
    public = record.public().model_dump()
    assert "client" not in public
    assert "job" not in public
    assert "webhook_url" not in public
    assert JOB.prompt not in str(public)


async def test_unreachable_redis_is_store_unavailable() -> None:
    # Port 1 on loopback refuses connections.
    client = connect("redis://127.0.0.1:1/0")
    store = TaskStore(client, ttl_s=60)
    with pytest.raises(StoreUnavailable):
        await store.create(new_record(), check_at=0)
    with pytest.raises(StoreUnavailable):
        await store.get(new_task_id())
    await client.aclose()


async def test_an_unreachable_cluster_is_store_unavailable_not_a_500() -> None:
    """redis-py's Cluster client raises ``RedisClusterException`` (outside ``RedisError``) when
    no node answers, and ``SlotNotCoveredError`` while it rebuilds its slot map: both are a
    failing Redis (503 store_unavailable), never an unhandled error."""
    client = connect("redis+cluster://127.0.0.1:1,127.0.0.1:2")
    store = TaskStore(client, ttl_s=60)
    with pytest.raises(StoreUnavailable):
        await store.get(new_task_id())
    with pytest.raises(StoreUnavailable) as caught:
        async with translated():
            raise SlotNotCoveredError('Slot "42" is not covered by the cluster.')
    assert "SlotNotCoveredError" in str(caught.value)
    await client.aclose()


async def test_claimed_schedule_entries_are_taken_over_when_the_lease_runs_out(
    redis: Redis,
) -> None:
    store = TaskStore(redis, ttl_s=60)
    record = new_record()
    # Times an hour ahead: a background poller left running by another test (claiming by
    # the real clock) cannot take the entry in between.
    at = float(int(time.time()) + 3600)  # whole seconds: at + 10 + 5 == at + 15 exactly
    await store.create(record, check_at=at)
    assert await store.claim_due("poll", now=at + 10, lease_s=5, limit=SHARDS) == [record.id]
    # Leased to the first claimer: nobody else gets it before the lease ends...
    assert await store.claim_due("poll", now=at + 14, lease_s=5, limit=SHARDS) == []
    # ...and if that claimer died, the next instance takes it over.
    assert await store.claim_due("poll", now=at + 15, lease_s=5, limit=SHARDS) == [record.id]


async def test_a_final_task_is_finalized_once_and_never_overwritten(redis: Redis) -> None:
    store = TaskStore(redis, ttl_s=60)
    record = new_record()
    await store.create(record, check_at=0)
    stale = record.model_copy(deep=True)
    record.finish(TaskStatus.COMPLETED, video_url="https://cdn.example/v.mp4")
    assert await store.finalize(record) is True
    assert await store.finalize(record) is False  # a second poller loses
    stale.status = TaskStatus.IN_PROGRESS
    assert await store.save(stale) is False  # an older answer cannot undo it
    saved = await store.get(record.id)
    assert saved is not None
    assert saved.status is TaskStatus.COMPLETED
    assert await redis.zscore(Keys.due("poll", shard_of(record.id)), record.id) is None


async def test_a_stored_copy_leaves_the_copy_schedule_with_its_finalize(redis: Redis) -> None:
    """A finished copy is off the copy schedule at once: no instance claims it again when the
    copier's lease runs out (one claim and one task read saved per stored video)."""
    store = TaskStore(redis, ttl_s=60)
    record = new_record()
    await store.create(record, check_at=0)
    record.status = TaskStatus.IN_PROGRESS
    assert await store.begin_copy(record, time.time(), first=True) is True
    copies = Keys.due("video_copy", shard_of(record.id))
    assert await redis.zscore(copies, record.id) is not None
    record.finish(TaskStatus.COMPLETED, video_url="https://gateway.example/v1/videos/x/content")
    assert await store.finalize(record) is True
    assert await redis.zscore(copies, record.id) is None
    assert await redis.zscore(Keys.due("poll", shard_of(record.id)), record.id) is None


async def test_one_poll_turn_per_interval(redis: Redis) -> None:
    store = TaskStore(redis, ttl_s=60)
    turns = [await store.take_poll_turn("vid_x", interval_s=5) for _ in range(3)]
    assert turns == [True, False, False]


async def test_read_for_poll_takes_the_poll_turn_with_the_task(redis: Redis) -> None:
    store = TaskStore(redis, ttl_s=60)
    record = new_record()
    await store.create(record, check_at=0)
    assert await store.read_for_poll(record.id, interval_s=5) == (record, True)
    assert await store.take_poll_turn(record.id, interval_s=5) is False  # one per interval
    assert await store.read_for_poll(record.id, interval_s=5) == (record, False)
    assert 0 < await redis.pttl(Keys.poll_lock(record.id)) <= 5000


async def test_renewed_poll_turn_starts_again_only_if_still_this_readers(redis: Redis) -> None:
    store = TaskStore(redis, ttl_s=60)
    record = new_record()
    await store.create(record, check_at=0)
    assert await store.read_for_poll(record.id, interval_s=0.2) == (record, True)
    assert await store.renew_poll_turn(record.id, interval_s=5) is True  # its own: renewed
    assert await redis.pttl(Keys.poll_lock(record.id)) > 4000
    await redis.delete(Keys.poll_lock(record.id))  # ran out...
    assert await store.take_poll_turn(record.id, interval_s=5) is True  # ...a lookup took it
    assert await store.renew_poll_turn(record.id, interval_s=5) is False
    await redis.delete(Keys.poll_lock(record.id))
    assert await store.renew_poll_turn(record.id, interval_s=5) is True  # free: taken
    assert await store.take_poll_turn(record.id, interval_s=5) is False


async def test_read_for_poll_of_a_missing_task_takes_no_turn(redis: Redis) -> None:
    store = TaskStore(redis, ttl_s=60)
    assert await store.read_for_poll("vid_gone", interval_s=5) == (None, False)
    assert await redis.exists(Keys.poll_lock("vid_gone")) == 0


def test_public_view_is_a_valid_task_with_every_field() -> None:
    record = new_record()
    record.attempts = [Attempt(provider="runapi", outcome="accepted", latency_ms=3)]
    public = record.public()
    assert Task.model_validate(public.model_dump()) == public
    assert set(public.model_dump()) == set(Task.model_fields)


async def test_accepted_task_is_saved_and_scheduled_for_its_first_poll_in_one_step(
    redis: Redis,
) -> None:
    store = TaskStore(redis, ttl_s=3600)
    record = new_record()
    await store.create(record, check_at=1_000.0)
    record.provider, record.provider_task_id = "runapi", "up-1"
    await store.accept(record, first_poll_at=2_000.0)
    saved = await store.get(record.id)
    assert saved is not None
    assert saved.provider_task_id == "up-1"
    assert await redis.zscore(Keys.due("poll", shard_of(record.id)), record.id) == 2_000.0


async def test_accept_neither_undoes_a_final_task_nor_schedules_it_again(redis: Redis) -> None:
    store = TaskStore(redis, ttl_s=3600)
    record = new_record()
    await store.create(record, check_at=1_000.0)
    final = record.model_copy(deep=True)
    final.finish(TaskStatus.COMPLETED, video_url="https://cdn.example/v.mp4")
    assert await store.finalize(final)  # leaves the schedule
    record.provider_task_id = "stale"
    await store.accept(record, first_poll_at=2_000.0)
    stored = await store.get(record.id)
    assert stored is not None
    assert stored.status is TaskStatus.COMPLETED
    assert await redis.zscore(Keys.due("poll", shard_of(record.id)), record.id) is None


async def test_delete_refuses_a_task_marked_resubmitting_and_a_mark_finds_no_deleted_task(
    redis: Redis,
) -> None:
    store = TaskStore(redis, ttl_s=60)
    busy, deleted = new_record(), new_record()
    for record in (busy, deleted):
        record.provider, record.provider_task_id = "runapi", "rt-1"
        await store.create(record, check_at=time.time())
    marked = busy.model_copy(update={"resubmitting": True})
    assert await store.mark_resubmitting(marked, "rt-1")
    assert await store.delete(busy) == "busy"
    assert await store.get(busy.id) is not None  # kept for the resubmission's answer

    assert await store.delete(deleted) == "deleted"
    late = deleted.model_copy(update={"resubmitting": True})
    assert not await store.mark_resubmitting(late, "rt-1")  # so no paid create is sent
    assert await store.delete(deleted) == "gone"
