"""The failover verdicts one level up: what ``VideoService.create`` stores and raises, and what
the status ``Refresher`` does with a failed generation (resubmit it or let the failure stand).

Scripted providers (``providers/fake.py``) behind the real router, task store, health, budgets
and refresher, on the suite's real redis-server; Redis refusing a write is a Redis ACL.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.budgets import Budgets, period_of, to_micros
from gateway.errors import (
    AllProvidersFailed,
    ContentRejected,
    StoreUnavailable,
    UpstreamOutcomeUnknown,
)
from gateway.health import Health
from gateway.idempotency import IdempotencyStore, IdempotentCreates
from gateway.live import LiveSettings
from gateway.metrics import Metrics
from gateway.poller import Poller
from gateway.redis_client import RedisClient, connect
from gateway.router import Router
from gateway.schemas import CreateVideoRequest
from gateway.service import ServiceOptions, VideoService
from gateway.status import Finalizer, Refresher
from gateway.store import TaskStore
from gateway.tasks import TaskRecord
from providers import errors as perr
from providers.base import TaskStatus, UpstreamStatus
from providers.fake import FakeProvider, accepted
from tests.fake_routes import NAMES, fake_routes, fake_settings
from tests.integration.conftest import EVERY_KEY_BUT_TASKS, Acl

CLIENT = "demo"
PROMPT = "a lighthouse in the fog"
FAILED = UpstreamStatus(status=TaskStatus.FAILED, raw_status="failed", error_message="render")


@dataclass
class Stack:
    service: VideoService
    refresher: Refresher
    store: TaskStore
    fakes: dict[str, FakeProvider]
    redis: RedisClient
    metrics: Metrics
    finalizer: Finalizer
    budgets: Budgets

    async def create(self, **body: Any) -> TaskRecord:
        """Create through the service; the task as stored."""
        request = CreateVideoRequest.model_validate({"prompt": PROMPT, **body})
        outcome = await self.service.create(CLIENT, request)
        record = await self.store.get(outcome.task.id)
        assert record is not None
        return record

    async def only_task(self) -> TaskRecord:
        """The one task in Redis (a refused create answers no id)."""
        keys = [k async for k in self.redis.scan_iter(match="gw:*:task:*")]
        assert len(keys) == 1, keys
        raw = await self.redis.get(keys[0])
        assert raw is not None
        return TaskRecord.model_validate_json(raw)


def stack(
    redis: RedisClient,
    task_redis: RedisClient | None = None,
    budget_redis: RedisClient | None = None,
    **routing: Any,
) -> Stack:
    """The service as ``gateway.app.build_resources`` wires it, with fakes for adapters;
    ``task_redis``, ``budget_redis``: the task store's and the budgets' own connections (one a
    test narrows with an ACL)."""
    settings = fake_settings(
        routing=routing,
        status={"poll_interval_s": 1, "background_polling": True, "resubmit_failed": 1},
    )
    routes, fakes = fake_routes(settings)
    metrics = Metrics(NAMES, clients=[CLIENT])
    live = LiveSettings(settings)
    store = TaskStore(task_redis or redis, ttl_s=3600, metrics=metrics)
    health = Health(redis, settings.routing.circuit, NAMES, metrics=metrics)
    budgets = Budgets(budget_redis or redis, dict, metrics=metrics)
    router = Router(routes, live, health, metrics=metrics)
    finalizer = Finalizer(store, health, budgets=budgets, metrics=metrics, webhooks_enabled=False)
    refresher = Refresher(
        store, router, finalizer, settings.status, health=health, metrics=metrics,
        budgets=budgets, create_timeout_s=60,
    )  # fmt: skip
    options = ServiceOptions(
        listen_host="127.0.0.1", listen_port=8080, public_url=None, webhooks_enabled=False,
        webhooks=settings.webhooks, create_timeout_s=60, first_poll_s=1, accept_retry_s=0.5,
    )  # fmt: skip
    idempotent = IdempotentCreates(IdempotencyStore(redis, ttl_s=3600), store, stale_after_s=60)
    service = VideoService(
        store, router, refresher, finalizer, idempotent, options, metrics=metrics, budgets=budgets
    )
    return Stack(service, refresher, store, fakes, redis, metrics, finalizer, budgets)


def attempts(record: TaskRecord) -> list[str]:
    return [f"{a.provider}:{a.outcome}" for a in record.attempts]


# VideoService.create ------------------------------------------------------------------------


async def test_an_accepted_create_stores_the_placed_task_and_schedules_its_poll(
    redis: Redis,
) -> None:
    s = stack(redis)
    s.fakes["a"].on_create(accepted("up-a-1"))
    record = await s.create()
    assert (record.provider, record.provider_task_id, record.price_usd) == ("a", "up-a-1", 0.2)
    assert record.status is TaskStatus.QUEUED
    assert attempts(record) == ["a:accepted"]
    assert s.fakes["a"].creates[0].prompt == PROMPT
    assert await redis.zscore(s.store.due_key("poll", record.id, 0), record.id) is not None


async def test_a_failed_over_create_stores_the_second_provider_and_both_attempts(
    redis: Redis,
) -> None:
    s = stack(redis)
    s.fakes["a"].on_create(perr.Unreachable("a", "connection refused"))
    s.fakes["b"].on_create(accepted("up-b-1"))
    record = await s.create()
    assert (record.provider, record.provider_task_id, record.price_usd) == ("b", "up-b-1", 0.3)
    assert attempts(record) == ["a:upstream_unreachable", "b:accepted"]
    assert s.fakes["c"].creates == []


async def test_an_unanswered_create_is_504_and_keeps_the_task_as_outcome_unknown(
    redis: Redis,
) -> None:
    s = stack(redis)
    s.fakes["a"].on_create(perr.OutcomeUnknown("a", "read timeout"))
    with pytest.raises(UpstreamOutcomeUnknown) as raised:
        await s.create()
    assert (raised.value.status, raised.value.code) == (504, "upstream_outcome_unknown")
    record = await s.only_task()
    assert raised.value.problem().id == record.id  # the 504 names the task the client may poll
    assert record.status is TaskStatus.FAILED
    assert record.error is not None
    assert record.error.code == "upstream_outcome_unknown"  # never a plain failure
    assert attempts(record) == ["a:outcome_unknown"]
    assert s.fakes["b"].creates == []


async def test_a_content_refusal_is_422_and_stored_as_content_rejected(redis: Redis) -> None:
    s = stack(redis)
    s.fakes["a"].on_create(perr.ContentRejected("a", "prompt refused by moderation"))
    with pytest.raises(ContentRejected):
        await s.create()
    record = await s.only_task()
    assert record.error is not None
    assert record.error.code == "content_rejected"
    assert attempts(record) == ["a:content_rejected"]
    assert s.fakes["b"].creates == []


async def test_every_provider_failing_is_502_and_stored_with_every_attempt(
    redis: Redis,
) -> None:
    s = stack(redis)
    s.fakes["a"].on_create(perr.Unreachable("a", "connection refused"))
    s.fakes["b"].on_create(perr.UpstreamServerError("b", "502"))
    s.fakes["c"].on_create(perr.RateLimited("c", "slow down"))
    with pytest.raises(AllProvidersFailed):
        await s.create()
    record = await s.only_task()
    assert record.status is TaskStatus.FAILED
    assert record.error is not None
    assert record.error.code == "all_providers_failed"
    assert attempts(record) == ["a:upstream_unreachable", "b:upstream_unavailable",
                                "c:rate_limited"]  # fmt: skip


async def test_redis_refusing_the_first_write_calls_no_upstream(redis: Redis, acl: Acl) -> None:
    task_redis = connect(acl.url)
    try:
        await acl.only_keys(*EVERY_KEY_BUT_TASKS)
        s = stack(redis, task_redis)
        with pytest.raises(StoreUnavailable):
            await s.create()
    finally:
        await task_redis.aclose()
    assert all(f.creates == [] for f in s.fakes.values())
    assert [k async for k in redis.scan_iter(match="gw:*:task:*")] == []
    errors = s.metrics.registry.get_sample_value(
        "gateway_redis_errors_total", {"operation": "tasks"}
    )
    assert errors == 1  # the task's own write is the one refused


# Refresher: resubmitting a failed generation -----------------------------------------------


async def placed_on_a(s: Stack, **body: Any) -> TaskRecord:
    s.fakes["a"].on_create(accepted("up-a-1"))
    return await s.create(**body)


async def test_a_failed_generation_is_resubmitted_to_the_next_provider_under_the_same_id(
    redis: Redis,
) -> None:
    s = stack(redis)
    record = await placed_on_a(s)
    s.fakes["a"].on_status(FAILED)
    s.fakes["b"].on_create(accepted("up-b-1"))
    refreshed = await s.refresher.refresh(record, may_resubmit=True)
    stored = await s.store.get(record.id)
    assert stored is not None
    for task in (refreshed, stored):
        assert (task.id, task.provider, task.provider_task_id) == (record.id, "b", "up-b-1")
        assert not task.is_final
        assert not task.resubmitting
        assert task.resubmits == 1
        assert attempts(task) == ["a:accepted", "a:generation_failed", "b:accepted"]
    assert s.fakes["a"].status_reads == ["up-a-1"]
    assert s.fakes["b"].creates[0].prompt == PROMPT


async def test_a_content_refusal_is_not_resubmitted(redis: Redis) -> None:
    s = stack(redis)
    record = await placed_on_a(s)
    s.fakes["a"].on_status(
        UpstreamStatus(status=TaskStatus.FAILED, raw_status="failed", error_code="content_rejected")
    )
    refreshed = await s.refresher.refresh(record, may_resubmit=True)
    assert refreshed.status is TaskStatus.FAILED
    assert refreshed.error is not None
    assert refreshed.error.code == "content_rejected"
    assert s.fakes["b"].creates == []


async def test_an_unanswered_resubmission_ends_the_task_upstream_outcome_unknown(
    redis: Redis,
) -> None:
    s = stack(redis)
    record = await placed_on_a(s)
    s.fakes["a"].on_status(FAILED)
    s.fakes["b"].on_create(perr.OutcomeUnknown("b", "read timeout"))
    refreshed = await s.refresher.refresh(record, may_resubmit=True)
    stored = await s.store.get(record.id)
    assert stored is not None
    for task in (refreshed, stored):
        assert task.status is TaskStatus.FAILED
        assert task.error is not None
        assert task.error.code == "upstream_outcome_unknown"  # never a plain failure
        assert "b" in task.error.message
        assert attempts(task) == ["a:accepted", "a:generation_failed", "b:outcome_unknown"]
    assert s.fakes["c"].creates == []


async def test_with_no_candidate_left_the_failure_stands(redis: Redis) -> None:
    s = stack(redis)
    record = await placed_on_a(s, routing={"providers": ["a"]})
    s.fakes["a"].on_status(FAILED)
    refreshed = await s.refresher.refresh(record, may_resubmit=True)
    assert refreshed.status is TaskStatus.FAILED
    assert refreshed.error is not None
    assert refreshed.error.code == "generation_failed"
    assert (refreshed.provider, refreshed.resubmits) == ("a", 0)
    assert len(s.fakes["a"].creates) == 1
    assert all(f.creates == [] for f in (s.fakes["b"], s.fakes["c"]))


async def test_a_resubmission_every_provider_refuses_leaves_the_failure_standing(
    redis: Redis,
) -> None:
    s = stack(redis)
    record = await placed_on_a(s)
    s.fakes["a"].on_status(FAILED)
    s.fakes["b"].on_create(perr.UpstreamServerError("b", "503"))
    s.fakes["c"].on_create(perr.Unreachable("c", "connection refused"))
    refreshed = await s.refresher.refresh(record, may_resubmit=True)
    assert refreshed.status is TaskStatus.FAILED
    assert refreshed.error is not None
    assert refreshed.error.code == "generation_failed"
    assert attempts(refreshed) == ["a:accepted", "a:generation_failed",
                                   "b:upstream_unavailable", "c:upstream_unreachable"]  # fmt: skip


# Finalizer: a budget settle Redis refuses ----------------------------------------------------


async def test_a_settle_redis_refused_at_the_end_is_done_by_the_poller_once_redis_answers(
    redis: Redis, acl: Acl
) -> None:
    """A task completing while the client's budget slot is down (a Cluster primary failing
    over) kept its reservation for good: nothing settled it later. It goes back on the poll
    schedule, and the poller settles it once Redis takes the write."""
    budget_redis = connect(acl.url)
    try:
        s = stack(redis, budget_redis=budget_redis)
        record = await placed_on_a(s)
        month = period_of("month", record.created_at)
        assert (await s.budgets.counters(CLIENT, month)).reserved == to_micros(0.2)
        await acl.only_keys("gw:*:task:*")  # the budgets' keys refuse every command
        s.fakes["a"].on_status(
            UpstreamStatus(status=TaskStatus.COMPLETED, raw_status="success",
                           video_url="https://cdn.example/v.mp4")
        )  # fmt: skip
        done = await s.refresher.refresh(record, may_resubmit=True)
        assert done.status is TaskStatus.COMPLETED
        poll_due = s.store.due_key("poll", record.id, 0)
        assert await redis.zscore(poll_due, record.id) is not None  # back on the schedule
        await acl.allow_all()
        poller = Poller(s.store, s.refresher, fake_settings().status, create_timeout_s=60,
                        lease_s=5, metrics=s.metrics, finalizer=s.finalizer)  # fmt: skip
        await redis.zadd(poll_due, {record.id: 0})  # due now rather than in SETTLE_RETRY_S
        run = asyncio.create_task(poller.run())
        try:
            for _ in range(100):
                if (await s.budgets.counters(CLIENT, month)).reserved == 0:
                    break
                await asyncio.sleep(0.05)
        finally:
            await poller.stop()
            await run
    finally:
        await budget_redis.aclose()
    counters = await s.budgets.counters(CLIENT, month)
    assert (counters.reserved, counters.spent, counters.tasks) == (0, to_micros(0.2), 1)
    assert await redis.zscore(poll_due, record.id) is None
