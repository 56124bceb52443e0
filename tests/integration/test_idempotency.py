"""``Idempotency-Key`` over the real app and a real Redis. Concurrency and unanswered
creates need real sockets: they are in ``tests/e2e/test_routing_e2e.py``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from redis.asyncio import Redis

from gateway.idempotency import IdempotencyRecord, IdempotencyStore
from gateway.schemas import Attempt
from gateway.store import TaskStore
from gateway.tasks import TaskRecord
from providers.base import VideoJob
from tests.integration.conftest import IMAGE, OTHER_KEY, Harness

BODY = {"prompt": "a heron taking off", "image": IMAGE}


async def create(h: Harness, idem: str, body: dict[str, Any] = BODY, **kw: Any) -> httpx.Response:
    return await h.client.post(
        "/v1/videos", json=body, headers={**h.headers(**kw), "Idempotency-Key": idem}
    )


async def test_same_key_same_body_returns_the_same_task_with_200_and_no_second_call(
    harness: Harness,
) -> None:
    first = await create(harness, "order-1")
    again = await create(harness, "order-1", {**BODY, "duration": "6"})  # same after defaults
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert harness.upstream_creates == 1


async def test_same_key_with_another_body_is_422_reused(harness: Harness) -> None:
    await create(harness, "order-2")
    response = await create(harness, "order-2", {**BODY, "prompt": "a crane"})
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert harness.upstream_creates == 1


async def test_keys_are_scoped_to_the_client(harness: Harness) -> None:
    mine = await create(harness, "shared-key")
    theirs = await create(harness, "shared-key", key=OTHER_KEY)
    assert theirs.status_code == 202
    assert theirs.json()["id"] != mine.json()["id"]


async def test_an_error_is_forgotten_and_a_retry_runs_again(harness: Harness) -> None:
    harness.runapi.update_knobs({"create_fault": "http_500"})
    harness.apiinone.update_knobs({"create_fault": "http_503"})
    failed = await create(harness, "order-5")
    assert failed.status_code == 502
    harness.runapi.update_knobs({"create_fault": "none"})
    retried = await create(harness, "order-5")
    assert retried.status_code == 202
    assert harness.runapi.counters.accepted_creates == 1


async def test_invalid_key_is_422_naming_the_header(harness: Harness) -> None:
    for bad in ("", "x" * 256, "tab\there"):
        response = await create(harness, bad)
        assert response.status_code == 422, bad
        assert response.json()["errors"][0]["field"] == "Idempotency-Key"
    assert harness.upstream_creates == 0


async def test_a_key_held_by_a_dead_request_replays_504_when_a_call_may_have_gone_out(
    harness: Harness, redis: Redis
) -> None:
    # What an instance that died mid-call leaves behind: the task with a pending attempt and
    # an in-flight key older than any create could take.
    body = await create(harness, "probe")
    fingerprint = (await _record(redis, "probe")).fingerprint
    record = TaskRecord.new("demo", VideoJob(prompt="p", image=IMAGE), webhook_url=None,
                            metadata={})  # fmt: skip
    record.attempts = [Attempt(provider="runapi", outcome="pending")]
    await TaskStore(redis, ttl_s=60).create(record, check_at=time.time() + 3600)
    stale = IdempotencyRecord(
        state="in_flight", fingerprint=fingerprint, task_id=record.id, started_at=time.time() - 3600
    )
    await redis.set(IdempotencyStore.key("demo", "dead"), stale.model_dump_json())
    response = await create(harness, "dead")
    assert response.status_code == 504
    assert response.json()["code"] == "upstream_outcome_unknown"
    assert harness.upstream_creates == 1  # only the "probe" create above
    again = await create(harness, "dead")
    assert again.status_code == 504
    assert body.status_code == 202


async def test_a_key_held_by_a_request_that_wrote_nothing_runs_again(
    harness: Harness, redis: Redis
) -> None:
    await create(harness, "probe")
    fingerprint = (await _record(redis, "probe")).fingerprint
    stale = IdempotencyRecord(
        state="in_flight", fingerprint=fingerprint, task_id="vid_" + "a" * 26,
        started_at=time.time() - 3600,
    )  # fmt: skip
    await redis.set(IdempotencyStore.key("demo", "never-sent"), stale.model_dump_json())
    response = await create(harness, "never-sent")
    assert response.status_code == 202
    assert harness.upstream_creates == 2


async def test_records_expire_after_the_configured_ttl(
    harness_factory: Callable[..., Any], redis: Redis
) -> None:
    h: Harness = await harness_factory(idempotency={"ttl_s": 120})
    await create(h, "order-7")
    ttl = await redis.ttl(IdempotencyStore.key("demo", "order-7"))
    assert 110 <= ttl <= 120


async def _record(redis: Redis, key: str) -> IdempotencyRecord:
    raw = await redis.get(IdempotencyStore.key("demo", key))
    assert raw is not None
    return IdempotencyRecord.model_validate_json(raw)


def no_answer(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("no answer", request=request)


async def test_a_replayed_504_names_the_same_task(harness_factory: Callable[..., Any]) -> None:
    """The 504 names the task the client may poll; its replay under the same key names it too."""
    h: Harness = await harness_factory(transports={"runapi": httpx.MockTransport(no_answer)})
    first = await create(h, "order-unanswered")
    again = await create(h, "order-unanswered")
    assert (first.status_code, again.status_code) == (504, 504)
    assert first.json()["id"].startswith("vid_")
    assert again.json()["id"] == first.json()["id"]
