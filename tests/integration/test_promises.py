"""The money promise under concurrency and outages: a video is never paid twice and a paid task
is never lost (issue #11).

Real parts only: two app instances on the suite's real redis-server sharing the simulated
resellers, slow resellers (``latency_ms``), and Redis ACLs that make one chosen write fail for
the gateway's own Redis user while the test's admin connection keeps working.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import httpx
from redis.asyncio import Redis

from gateway.errors import GatewayError
from gateway.idempotency import IdempotencyRecord, IdempotencyStore, IdempotentCreates, fingerprint
from gateway.redis_client import connect
from gateway.schemas import CreateVideoRequest, Task, TaskError
from gateway.shards import shard_of
from gateway.store import Keys, TaskStore
from gateway.tasks import TaskRecord, new_task_id
from providers.base import TaskStatus, VideoJob
from tests.integration.conftest import (
    EVERY_KEY_BUT_IDEMPOTENCY,
    EVERY_KEY_BUT_TASKS,
    IMAGE,
    Acl,
    Harness,
    base_config,
)

BODY = {"prompt": "a paper boat in the rain", "image": IMAGE}


async def create(
    h: Harness, body: dict[str, Any] = BODY, idem: str | None = None
) -> httpx.Response:
    """``POST /v1/videos`` from a thread: the test client's transport blocks its caller's loop
    for the whole request, so requests that must overlap (with each other or with an outage the
    test drives) are sent from threads."""
    headers = h.headers() if idem is None else {**h.headers(), "Idempotency-Key": idem}
    request = h.client.build_request("POST", "/v1/videos", json=body, headers=headers)
    transport = cast(httpx.BaseTransport, h.client._transport)
    response = await asyncio.to_thread(transport.handle_request, request)
    response.read()
    return response


async def stored(redis: Redis, task_id: str) -> TaskRecord | None:
    raw = await redis.get(Keys.task(task_id))
    return None if raw is None else TaskRecord.model_validate_json(raw)


async def until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 8.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def job() -> VideoJob:
    return VideoJob(model="hailuo-2.3", tier="standard", prompt=BODY["prompt"], image=IMAGE)


def polling(**status: Any) -> dict[str, Any]:
    return {"poll_interval_s": 1, "background_polling": True, **status}


# 1 -----------------------------------------------------------------------------------------


async def test_two_retries_taking_over_one_stale_claim_create_once(
    harness: Harness, redis: Redis
) -> None:
    """Two retries find the same claim left by a dead instance: one takes it over (by
    compare-and-swap on the value read), the other does not delete the new claim."""
    request = CreateVideoRequest.model_validate(BODY)
    dead = IdempotencyRecord(
        state="in_flight", fingerprint=fingerprint(request), task_id=new_task_id(),
        started_at=time.time() - 10_000,
    )  # fmt: skip
    await redis.set(IdempotencyStore.key("demo", "order-stale"), dead.model_dump_json())
    harness.runapi.update_knobs({"latency_ms": 300})
    answers = await asyncio.gather(*(create(harness, idem="order-stale") for _ in range(10)))
    assert harness.upstream_creates == 1
    assert 202 in [a.status_code for a in answers]


class SlowReader(IdempotencyStore):
    """The real store, but the n-th caller that finds a claim already there is held up
    0.05 + (n - 1) × 0.1 s before acting on what it read (a slow instance, a GC pause)."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, ttl_s=3600)
        self.readers = 0

    async def claim(self, client: str, key: str, record: IdempotencyRecord) -> Any:
        existing = await super().claim(client, key, record)
        if existing is not None:
            self.readers += 1
            await asyncio.sleep(0.05 + 0.1 * (self.readers - 1))
        return existing


async def test_concurrent_take_overs_of_a_stale_claim_call_the_upstream_once(redis: Redis) -> None:
    """The race without HTTP: two retries read the same stale claim; the first replaces it
    and calls the upstream; the second, acting later on what it read, must not delete the
    first one's claim."""
    creates = IdempotentCreates(SlowReader(redis), TaskStore(redis, ttl_s=3600), stale_after_s=60)
    request = CreateVideoRequest.model_validate(BODY)
    dead = IdempotencyRecord(
        state="in_flight", fingerprint=fingerprint(request), task_id=new_task_id(),
        started_at=time.time() - 10_000,
    )  # fmt: skip
    await redis.set(IdempotencyStore.key("demo", "order-race"), dead.model_dump_json())
    calls = 0

    async def upstream(record: TaskRecord) -> Task:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.3)
        return record.public()

    async def retry() -> str:
        record = TaskRecord.new("demo", job(), webhook_url=None, metadata={})
        try:
            await creates.run("demo", "order-race", request, record, lambda: upstream(record))
        except GatewayError as exc:
            return exc.code
        return "created"

    outcomes = await asyncio.gather(retry(), retry())
    assert calls == 1
    assert sorted(outcomes) == ["created", "idempotency_key_in_use"]


# 2 -----------------------------------------------------------------------------------------


async def test_a_poller_that_loses_the_resubmission_leaves_the_task_alone(
    harness_factory: Callable[..., Any], redis: Redis
) -> None:
    """Instance A resubmits a failed generation to a slow reseller; meanwhile instance B reads
    the old (failed) upstream task. B must not end the task: A's paid create must be mapped."""
    a: Harness = await harness_factory(status=polling())
    b: Harness = await harness_factory(sandboxes=(a.runapi, a.apiinone))
    a.runapi.update_knobs({"task_outcome": "failed"})
    a.apiinone.update_knobs({"latency_ms": 2500})
    task_id = (await create(a)).json()["id"]

    async def resubmitting() -> bool:
        return a.apiinone.counters.create_calls == 1

    await until(resubmitting)
    await asyncio.sleep(1.1)  # B's poll turn comes while A's create is in flight
    assert (await b.read(task_id)).json()["status"] != "failed"

    async def mapped() -> bool:
        record = await stored(redis, task_id)
        return record is not None and record.provider == "apiinone"

    await until(mapped)
    record = await stored(redis, task_id)
    assert record is not None
    assert record.provider_task_id in a.apiinone.tasks
    assert not record.is_final or record.status is TaskStatus.COMPLETED


# 3 -----------------------------------------------------------------------------------------


async def test_an_accept_written_during_a_one_second_outage_is_recorded(
    harness_factory: Callable[..., Any], acl: Acl, redis: Redis
) -> None:
    h: Harness = await harness_factory(redis_url_override=acl.url)
    h.runapi.update_knobs({"latency_ms": 300})
    outage = asyncio.create_task(acl.outage(0.15, 1.0, *EVERY_KEY_BUT_TASKS))
    answer = await create(h)
    await outage
    assert answer.status_code == 202
    record = await stored(redis, answer.json()["id"])
    assert record is not None
    assert record.provider_task_id in h.runapi.tasks


async def test_an_accept_never_written_answers_504_naming_the_task(
    harness_factory: Callable[..., Any], acl: Acl
) -> None:
    h: Harness = await harness_factory(redis_url_override=acl.url, redis={"accept_retry_s": 0.5})
    h.runapi.update_knobs({"latency_ms": 300})
    outage = asyncio.create_task(acl.outage(0.15, 2.0, *EVERY_KEY_BUT_TASKS))
    answer = await create(h)
    await outage
    assert answer.status_code == 504
    assert answer.json()["code"] == "upstream_outcome_unknown"
    assert answer.json()["id"].startswith("vid_")
    assert (await h.read(answer.json()["id"])).status_code == 200

    async def recorded() -> bool:  # the write goes on in the background once Redis is back
        record = await stored(acl.admin, answer.json()["id"])
        return record is not None and record.provider_task_id in h.runapi.tasks

    await until(recorded, timeout_s=5)


# 4 -----------------------------------------------------------------------------------------


async def test_an_idempotency_record_unwritable_after_an_accept_still_answers_the_task(
    harness_factory: Callable[..., Any], acl: Acl, redis: Redis
) -> None:
    h: Harness = await harness_factory(redis_url_override=acl.url)
    h.runapi.update_knobs({"latency_ms": 300})
    outage = asyncio.create_task(acl.outage(0.15, 0.5, *EVERY_KEY_BUT_IDEMPOTENCY))
    first = await create(h, idem="order-settle")
    await outage
    assert first.status_code == 202
    key = IdempotencyStore.key("demo", "order-settle")

    async def settled() -> bool:
        raw = await redis.get(key)
        return raw is not None and IdempotencyRecord.model_validate_json(raw).state == "done"

    await until(settled, timeout_s=5)
    again = await create(h, idem="order-settle")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert h.upstream_creates == 1


# 5 -----------------------------------------------------------------------------------------


async def test_an_error_answered_during_an_outage_is_forgotten(
    harness_factory: Callable[..., Any], acl: Acl, redis: Redis
) -> None:
    """The claim is taken, then Redis refuses the task and the release alike: 503. Once Redis is
    back, the key is released and a retry runs again (no 409, no false 504)."""
    h: Harness = await harness_factory(redis_url_override=acl.url)
    await acl.only_keys("gw:*:idem:*")
    await acl.deny("del", "eval", "evalsha", "unlink")
    failed = await create(h, idem="order-outage")
    assert failed.status_code == 503
    assert failed.json()["code"] == "store_unavailable"
    await acl.allow_all()
    key = IdempotencyStore.key("demo", "order-outage")

    async def released() -> bool:
        return not await redis.exists(key)

    await until(released, timeout_s=5)
    retried = await create(h, idem="order-outage")
    assert retried.status_code == 202
    assert h.upstream_creates == 1


# 6 -----------------------------------------------------------------------------------------


async def test_the_store_client_retries_a_command_that_timed_out(
    redis: Redis, redis_url: str
) -> None:
    """Redis stops answering for a bit longer than the socket timeout (2 s), as during a
    failover: the command is retried on a new connection instead of failing."""
    client = connect(redis_url)
    try:
        await client.ping()
        await redis.client_pause(2300)
        await client.set("gw:test:retry", "1")
        assert await redis.get("gw:test:retry") == b"1"
    finally:
        await client.aclose()


# 7 -----------------------------------------------------------------------------------------


async def test_a_lookup_never_sends_a_create(harness: Harness) -> None:
    harness.runapi.update_knobs({"task_outcome": "failed"})
    task_id = (await create(harness)).json()["id"]
    await asyncio.sleep(1.05)  # the poll interval: the lookup reads the failed generation
    started = time.monotonic()
    assert (await harness.read(task_id)).status_code == 200
    assert harness.upstream_creates == 1
    assert time.monotonic() - started < 0.5


# 8 -----------------------------------------------------------------------------------------


def no_answer(request: httpx.Request) -> httpx.Response:
    """A reseller that receives every request and never answers (the read times out)."""
    raise httpx.ReadTimeout("no answer", request=request)


async def test_an_ambiguous_resubmission_fails_the_task_naming_the_provider(
    harness_factory: Callable[..., Any], redis: Redis
) -> None:
    h: Harness = await harness_factory(
        status=polling(), transports={"apiinone": httpx.MockTransport(no_answer)}
    )
    h.runapi.update_knobs({"task_outcome": "failed"})
    task_id = (await create(h)).json()["id"]

    async def final() -> bool:
        record = await stored(redis, task_id)
        return record is not None and record.is_final

    await until(final)
    task = (await h.read(task_id)).json()
    assert task["status"] == "failed"
    assert task["error"]["code"] == "upstream_outcome_unknown"
    assert "apiinone" in task["error"]["message"]
    assert (await h.scrape()).value("gateway_ambiguous_submits_total", provider="apiinone") == 1


# 9 -----------------------------------------------------------------------------------------


async def test_the_deadline_ends_tasks_of_a_provider_since_removed(
    harness_factory: Callable[..., Any], redis_url: str
) -> None:
    a: Harness = await harness_factory(status={"deadline_s": 1})
    task_id = (await create(a, {**BODY, "prompt": "z [sandbox:slow]"})).json()["id"]
    providers = base_config(redis_url)["providers"]
    b: Harness = await harness_factory(
        sandboxes=(a.runapi, a.apiinone), status={"deadline_s": 1},
        providers={"runapi": {**providers["runapi"], "enabled": False}},
    )  # fmt: skip
    await asyncio.sleep(1.2)
    task = (await b.read(task_id)).json()
    assert task["status"] == "failed"
    assert task["error"]["code"] == "timeout"


# 10 ----------------------------------------------------------------------------------------


async def test_an_accept_for_a_task_deleted_meanwhile_writes_it_again(
    harness: Harness, redis: Redis
) -> None:
    harness.runapi.update_knobs({"latency_ms": 300})

    async def lose_the_task() -> None:
        await asyncio.sleep(0.15)
        keys = [k async for k in redis.scan_iter(match="gw:*:task:*")]
        await redis.delete(*keys)

    losing = asyncio.create_task(lose_the_task())
    answer = await create(harness)
    await losing
    assert answer.status_code == 202
    record = await stored(redis, answer.json()["id"])
    assert record is not None
    assert record.provider_task_id in harness.runapi.tasks


async def test_an_accept_refused_because_the_task_ended_answers_504_with_its_id(
    harness: Harness, redis: Redis
) -> None:
    harness.runapi.update_knobs({"latency_ms": 300})

    async def end_the_task() -> None:
        await asyncio.sleep(0.15)
        keys = [k async for k in redis.scan_iter(match="gw:*:task:*")]
        key = keys[0]
        record = TaskRecord.model_validate_json(await redis.get(key) or b"")
        record.finish(TaskStatus.FAILED, error=TaskError(code="submit_interrupted", message="x"))
        await redis.set(key, record.model_dump_json(), keepttl=True)

    ending = asyncio.create_task(end_the_task())
    answer = await create(harness)
    await ending
    assert answer.status_code == 504
    assert answer.json()["code"] == "upstream_outcome_unknown"
    assert answer.json()["id"].startswith("vid_")


# 11 ----------------------------------------------------------------------------------------


def final_on_create(request: httpx.Request) -> httpx.Response:
    """A reseller (runapi's wire format) whose create answer is already final (failed)."""
    if request.method == "POST":
        return httpx.Response(200, json={"id": "rt-final-1", "status": "failed"})
    return httpx.Response(
        200, json={"id": "rt-final-1", "status": "failed", "error": "render error"}
    )


async def test_a_create_answered_final_goes_through_finalize(
    harness_factory: Callable[..., Any], redis: Redis
) -> None:
    h: Harness = await harness_factory(
        status={"resubmit_failed": 0},
        routing={"strategy": "priority"},
        transports={"runapi": httpx.MockTransport(final_on_create)},
    )
    answer = await create(h, {**BODY, "routing": {"providers": ["runapi"]}})
    assert answer.status_code == 202
    task = (await h.read(answer.json()["id"])).json()
    assert task["status"] == "failed"
    assert task["completed_at"] is not None
    assert await redis.zscore(Keys.due("poll", shard_of(task["id"])), task["id"]) is None


# 12 ----------------------------------------------------------------------------------------


async def test_shutdown_lets_a_resubmission_in_flight_finish(
    harness_factory: Callable[..., Any], redis: Redis
) -> None:
    a: Harness = await harness_factory(status=polling())
    a.runapi.update_knobs({"task_outcome": "failed"})
    a.apiinone.update_knobs({"latency_ms": 600})
    task_id = (await create(a)).json()["id"]

    async def resubmitting() -> bool:
        return a.apiinone.counters.create_calls == 1

    await until(resubmitting)
    await a.stop()
    record = await stored(redis, task_id)
    assert record is not None
    assert record.provider == "apiinone"
    assert record.provider_task_id in a.apiinone.tasks


async def test_a_delete_during_a_resubmission_in_flight_is_refused_until_it_is_recorded(
    harness_factory: Callable[..., Any], redis: Redis
) -> None:
    """Deleting a task while its resubmission's paid create is in flight would leave the new
    upstream task mapped to nothing: 409 task_busy then, and the delete works once recorded."""
    a: Harness = await harness_factory(status=polling())
    a.runapi.update_knobs({"task_outcome": "failed"})
    a.apiinone.update_knobs({"latency_ms": 800})
    task_id = (await create(a)).json()["id"]

    async def resubmitting() -> bool:
        return a.apiinone.counters.create_calls == 1

    await until(resubmitting)
    busy = await a.client.delete(f"/v1/videos/{task_id}", headers=a.headers())
    assert busy.status_code == 409
    assert busy.json()["code"] == "task_busy"
    assert busy.headers["Retry-After"] == "5"

    async def recorded() -> bool:
        record = await stored(redis, task_id)
        return record is not None and record.provider == "apiinone" and not record.resubmitting

    await until(recorded)
    record = await stored(redis, task_id)
    assert record is not None
    assert record.provider_task_id in a.apiinone.tasks
    deleted = await a.client.delete(f"/v1/videos/{task_id}", headers=a.headers())
    assert deleted.status_code == 200
    assert await stored(redis, task_id) is None


async def test_shutdown_lets_a_create_in_flight_finish(harness: Harness, redis: Redis) -> None:
    harness.runapi.update_knobs({"latency_ms": 400})
    creating = asyncio.create_task(create(harness))
    await asyncio.sleep(0.1)
    await harness.stop()
    answer = await creating
    assert answer.status_code == 202
    record = await stored(redis, answer.json()["id"])
    assert record is not None
    assert record.provider_task_id in harness.runapi.tasks


# Single-flight refresh ----------------------------------------------------------------------


async def test_a_lookup_that_goes_away_does_not_cancel_the_shared_refresh(
    harness: Harness, redis: Redis
) -> None:
    """Two lookups share one status read; the first is cancelled (its client disconnected)
    while the read is in flight: the other still gets the refreshed task."""
    harness.runapi.update_knobs({"queue_s": 0})
    task_id = (await create(harness)).json()["id"]
    record = await stored(redis, task_id)
    assert record is not None
    harness.runapi.update_knobs({"latency_ms": 300})
    refresher = harness.client.app.state.resources.service._refresher
    portal = harness.client.blocking_portal  # the app's own event loop
    first = portal.start_task_soon(refresher.refresh, record)
    await asyncio.sleep(0.05)
    second = portal.start_task_soon(refresher.refresh, record)
    await asyncio.sleep(0.05)
    first.cancel()
    refreshed = await asyncio.wrap_future(second)
    assert refreshed.polled_at is not None
    assert harness.runapi.counters.status_calls == 1
