"""Per-client budgets and ``GET /v1/usage``: the app on a real Redis, the simulated resellers
behind it, and :class:`gateway.budgets.Budgets` on its own for the money arithmetic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.budgets import Budgets, period_of
from gateway.config import BudgetSettings, resolve_secrets, settings_from_mapping
from gateway.errors import BudgetExceeded
from gateway.metrics import Metrics
from gateway.schemas import Attempt, TaskError
from gateway.tasks import TaskRecord
from gateway.usage import usage
from providers.base import TaskStatus, VideoJob
from providers.sandbox import apiinone as sandbox_apiinone
from providers.sandbox.engine import FAIL_MARKER, Knobs, SandboxState
from tests.integration.conftest import (
    ENV,
    FAST,
    IMAGE,
    OTHER_KEY,
    Harness,
    asgi,
    base_config,
)
from tests.integration.test_api import wait_final

PROBLEM = "application/problem+json"
SLOW = Knobs(queue_s=0.0, complete_after_s=30.0)
"""Tasks stay in progress: their reservations hold for the whole test."""


def body(**fields: Any) -> dict[str, Any]:
    return {"prompt": "a red fox in snow", "image": IMAGE, **fields}


def keys(**demo_budget: float) -> dict[str, Any]:
    return {
        "keys": [
            {"name": "demo", "key_env": "GATEWAY_KEY_DEMO", "budget_usd": demo_budget},
            {"name": "other", "key_env": "GATEWAY_KEY_OTHER"},
        ]
    }


async def read_usage(h: Harness, period: str = "day", key: str | None = None) -> dict[str, Any]:
    response = await h.client.get(
        "/v1/usage", params={"period": period}, headers=h.headers(*([key] if key else []))
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_concurrent_creates_from_two_instances_never_exceed_the_budget(
    harness_factory: Callable[..., Any],
) -> None:
    first: Harness = await harness_factory(knobs=SLOW, auth=keys(day=3.0))
    second: Harness = await harness_factory(
        sandboxes=(first.runapi, first.apiinone), auth=keys(day=3.0)
    )
    answers = await asyncio.gather(
        *(h.create(body(prompt=f"scene {i}")) for i in range(20) for h in (first, second))
    )
    accepted = [a for a in answers if a.status_code == 202]
    refused = [a for a in answers if a.status_code == 402]
    assert len(accepted) + len(refused) == 40
    billed = 0.30 * len(first.runapi.tasks) + 0.32 * len(first.apiinone.tasks)
    assert billed <= 3.0 + 1e-9
    assert len(accepted) == 10  # 3.00 / 0.30: the budget is used, not left idle
    assert first.upstream_creates == len(accepted)  # a refusal sends nothing
    assert {a.json()["code"] for a in refused} == {"budget_exceeded"}
    assert {a.headers["content-type"] for a in refused} == {PROBLEM}
    usage_now = await read_usage(first)
    assert usage_now["reserved_usd"] == 3.0
    assert usage_now["spent_usd"] == 0
    refusals = [
        (await h.scrape()).value("gateway_budget_refusals_total", client="demo")
        for h in (first, second)
    ]
    assert sum(refusals) == len(refused)


async def test_over_budget_answers_402_with_retry_after_to_the_end_of_the_day(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(knobs=SLOW, auth=keys(day=0.50, month=100))
    assert (await h.create(body())).status_code == 202
    refused = await h.create(body())
    assert refused.status_code == 402
    assert refused.json()["code"] == "budget_exceeded"
    to_midnight = period_of("day", time.time()).end - time.time()
    assert abs(int(refused.headers["Retry-After"]) - to_midnight) <= 5
    assert h.upstream_creates == 1
    # Another client's budget is its own.
    assert (await h.create(body(), key=OTHER_KEY)).status_code == 202


async def test_a_month_budget_refuses_until_the_end_of_the_month(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(knobs=SLOW, auth=keys(month=0.30))
    assert (await h.create(body())).status_code == 202
    refused = await h.create(body())
    assert refused.status_code == 402
    to_month_end = period_of("month", time.time()).end - time.time()
    assert abs(int(refused.headers["Retry-After"]) - to_month_end) <= 5


async def test_a_refused_create_gives_its_reservation_back(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(knobs=SLOW, auth=keys(day=0.32))
    h.runapi.update_knobs({"create_fault": "http_500"})
    h.apiinone.update_knobs({"create_fault": "http_503"})
    failed = await h.create(body())
    assert failed.json()["code"] == "all_providers_failed"
    assert (await read_usage(h))["reserved_usd"] == 0
    h.runapi.update_knobs({"create_fault": "none"})
    h.apiinone.update_knobs({"create_fault": "none"})
    assert (await h.create(body())).status_code == 202  # the whole budget is there again


async def test_failover_keeps_one_reservation_at_the_accepting_providers_price(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(knobs=SLOW, auth=keys(day=0.40))
    h.runapi.update_knobs({"create_fault": "http_500"})
    task = (await h.create(body())).json()
    assert task["provider"] == "apiinone"
    assert (await read_usage(h))["reserved_usd"] == 0.32


async def test_a_completed_task_becomes_spend_and_a_failed_generation_is_given_back(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(status={"resubmit_failed": 0}, auth=keys(day=10))
    done = await wait_final(h, (await h.create(body())).json()["id"])
    failed = await wait_final(h, (await h.create(body(prompt=f"x {FAIL_MARKER}"))).json()["id"])
    assert (done["status"], failed["status"]) == ("completed", "failed")
    day = await read_usage(h)
    assert (day["spent_usd"], day["reserved_usd"], day["tasks"]) == (0.30, 0, 1)
    assert day["by_provider"] == {"runapi": {"spent_usd": 0.30, "tasks": 1}}
    assert day["budget_usd"] == 10
    assert day["saving_usd"] == 0.02  # apiinone would have charged 0.32
    s = await h.scrape()
    assert s.value("gateway_spend_usd_total", provider="runapi") == pytest.approx(0.30)
    assert s.value("gateway_client_spend_usd_total", client="demo") == pytest.approx(0.30)
    assert s.value("gateway_price_routing_saving_usd_total", provider="runapi") == (
        pytest.approx(0.02)
    )
    # Budget use as Redis holds it, read at the scrape.
    assert s.value("gateway_client_budget_used_usd", client="demo", period="day") == 0.30
    assert s.value("gateway_client_budget_usd", client="demo", period="day") == 10
    assert s.value("gateway_client_budget_used_usd", client="other", period="month") == 0
    assert not [x for x in s if x.name == "gateway_client_budget_usd" and x.labels["period"]
                == "month"]  # fmt: skip


async def test_a_resubmitted_generation_is_reserved_and_spent_once_at_the_new_price(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(
        status={"resubmit_failed": 1, "background_polling": True}, auth=keys(day=0.35)
    )
    h.runapi.update_knobs({"task_outcome": "failed"})
    task = await wait_final(h, (await h.create(body())).json()["id"], timeout_s=10)
    assert (task["status"], task["provider"]) == ("completed", "apiinone")
    day = await read_usage(h)
    # 0.30 then 0.32 would not fit a 0.35 budget: the failed generation's reservation moved.
    assert (day["spent_usd"], day["reserved_usd"], day["tasks"]) == (0.32, 0, 1)
    s = await h.scrape()
    assert s.nonzero("gateway_spend_usd_total", "provider") == {("apiinone",): 0.32}


async def test_an_ambiguous_create_keeps_its_reservation(redis: Redis, redis_url: str) -> None:
    def read_timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    data = base_config(redis_url)
    data["auth"] = keys(day=1.0)
    settings = settings_from_mapping(data, {})
    sandbox = SandboxState("apiinone", ENV["APIINONE_API_KEY"], FAST)
    transports = {
        "runapi": httpx.MockTransport(read_timeout),
        "apiinone": asgi(sandbox_apiinone.create_app(sandbox)),
    }
    app = create_app(settings, resolve_secrets(settings, ENV), transports=transports)
    async with AsyncTestClient(app) as client:
        h = Harness(client, SandboxState("runapi", "unused", FAST), sandbox, settings)
        answer = await h.create(body())
        assert answer.json()["code"] == "upstream_outcome_unknown"
        day = await read_usage(h)
    assert (day["reserved_usd"], day["spent_usd"]) == (0.30, 0)  # runapi may bill it


async def test_usage_is_the_callers_own_and_takes_day_or_month(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(auth=keys(day=5, month=50))
    await wait_final(h, (await h.create(body())).json()["id"])
    mine, theirs = await read_usage(h, "month"), await read_usage(h, key=OTHER_KEY)
    assert (mine["client"], mine["period"], mine["spent_usd"], mine["budget_usd"]) == (
        "demo", "month", 0.30, 50,
    )  # fmt: skip
    start, end = period_of("month", time.time()).start, period_of("month", time.time()).end
    assert (mine["start"], mine["end"]) == (start, end)
    assert (theirs["client"], theirs["spent_usd"], theirs["budget_usd"]) == ("other", 0, None)
    assert theirs["by_provider"] == {}
    bad = await h.client.get("/v1/usage", params={"period": "week"}, headers=h.headers())
    assert bad.status_code in (400, 422)
    assert bad.headers["content-type"] == PROBLEM
    assert (await h.client.get("/v1/usage")).status_code == 401


async def test_a_client_without_a_budget_still_has_its_spend_and_reservations_counted(
    harness_factory: Callable[..., Any],
) -> None:
    # /v1/usage reports every client's own spend (api.md §2), budget or not: a create by a
    # client without a budget reserves and settles in Redis like any other.
    auth = {
        "keys": [
            {"name": "demo", "key_env": "GATEWAY_KEY_DEMO"},
            {"name": "other", "key_env": "GATEWAY_KEY_OTHER", "budget_usd": {"day": 10}},
        ]
    }
    h: Harness = await harness_factory(auth=auth)
    done = await wait_final(h, (await h.create(body())).json()["id"])
    assert done["status"] == "completed"
    h.runapi.update_knobs({"complete_after_s": 30.0})
    assert (await h.create(body(prompt="still rendering"))).status_code == 202
    mine = await read_usage(h)
    assert (mine["budget_usd"], mine["spent_usd"], mine["tasks"]) == (None, 0.30, 1)
    assert mine["reserved_usd"] == 0.30
    assert mine["by_provider"] == {"runapi": {"spent_usd": 0.30, "tasks": 1}}


# Budgets on their own, on a real Redis.


def record(client: str = "demo", **fields: Any) -> TaskRecord:
    job = VideoJob(prompt="p", image=IMAGE)
    task = TaskRecord.new(client, job, webhook_url=None, metadata={})
    return task.model_copy(update=fields)


def budgets_for(redis: Redis, **budget: float) -> Budgets:
    limits = BudgetSettings(**budget) if budget else None
    return Budgets(redis, lambda: {"demo": limits}, metrics=Metrics(["runapi"], clients=["demo"]))


async def complete(budgets: Budgets, task: TaskRecord, price: float, ceiling: float) -> None:
    await budgets.reserve(task, price, ceiling)
    task.provider, task.price_usd = "runapi", price
    task.finish(TaskStatus.COMPLETED, video_url="https://example.com/v.mp4")
    await budgets.finalized(task)


async def test_usage_adds_up_exactly_over_many_tasks(redis: Redis) -> None:
    budgets = budgets_for(redis)
    tasks = [record() for _ in range(1000)]
    for batch in range(0, len(tasks), 50):
        await asyncio.gather(*(complete(budgets, t, 0.1, 0.13) for t in tasks[batch : batch + 50]))
    assert sum([0.1] * 1000) != 100.0  # what adding floats would have given
    day = await usage(budgets, "demo", "day")
    assert (day.spent_usd, day.tasks, day.reserved_usd) == (100.0, 1000, 0.0)
    assert day.saving_usd == 30.0
    assert day.by_provider["runapi"].spent_usd == 100.0


async def test_settling_a_task_twice_releases_once(redis: Redis) -> None:
    budgets = budgets_for(redis, day=1.0)
    held, failed = record(), record()
    await budgets.reserve(held, 0.30, 0.30)
    await budgets.reserve(failed, 0.45, 0.45)
    failed.finish(TaskStatus.FAILED, error=TaskError(code="generation_failed", message="x"))
    await budgets.finalized(failed)
    await budgets.finalized(failed)  # a repeated finalize
    assert (await usage(budgets, "demo", "day")).reserved_usd == 0.30
    await budgets.reserve(record(), 0.70, 0.70)  # 0.30 + 0.70 fits exactly
    with pytest.raises(BudgetExceeded):
        await budgets.reserve(record(), 0.01, 0.01)


async def test_completing_a_task_twice_spends_once(redis: Redis) -> None:
    budgets = budgets_for(redis)
    task = record()
    await complete(budgets, task, 0.30, 0.30)
    await budgets.finalized(task)
    day = await usage(budgets, "demo", "day")
    assert (day.spent_usd, day.tasks, day.reserved_usd) == (0.30, 1, 0.0)


async def test_a_refused_reservation_changes_nothing(redis: Redis) -> None:
    budgets = budgets_for(redis, day=0.50)
    task = record()
    await budgets.reserve(task, 0.30, 0.30)
    with pytest.raises(BudgetExceeded):
        await budgets.reserve(task, 0.90, 0.90)  # a failover to a dearer provider
    assert (await usage(budgets, "demo", "day")).reserved_usd == 0.30
    await budgets.reserve(task, 0.45, 0.45)  # re-reserving replaces, it does not add
    assert (await usage(budgets, "demo", "day")).reserved_usd == 0.45


async def test_an_interrupted_or_timed_out_task_keeps_its_reservation(redis: Redis) -> None:
    budgets = budgets_for(redis)
    interrupted, overdue, unanswered = record(), record(), record()
    for task in (interrupted, overdue, unanswered):
        await budgets.reserve(task, 0.30, 0.30)
    interrupted.finish(TaskStatus.FAILED, error=TaskError(code="submit_interrupted", message=""))
    overdue.finish(TaskStatus.FAILED, error=TaskError(code="timeout", message=""))
    unanswered.attempts = [Attempt(provider="runapi", outcome="outcome_unknown")]
    unanswered.finish(TaskStatus.FAILED, error=TaskError(code="all_providers_failed", message=""))
    for task in (interrupted, overdue, unanswered):
        await budgets.finalized(task)
    assert (await usage(budgets, "demo", "day")).reserved_usd == 0.90


async def test_counters_expire_after_their_period(redis: Redis) -> None:
    budgets = budgets_for(redis, day=5)
    task = record()
    await budgets.reserve(task, 0.30, 0.30)
    day, month = period_of("day", task.created_at), period_of("month", task.created_at)
    names = [k.decode() if isinstance(k, bytes) else k for k in await redis.keys("gw:{c:demo}:*")]
    now = time.time()
    expiries = {name.rsplit(":", 1)[-1]: now + await redis.ttl(name) for name in names}
    assert expiries[day.id] == pytest.approx(day.end + 2 * 86400, abs=2)
    assert expiries[month.id] == pytest.approx(month.end + 2 * 86400, abs=2)
    assert expiries[task.id] == pytest.approx(month.end + 2 * 86400, abs=2)


async def test_a_budget_added_by_a_reload_counts_what_the_client_already_holds(
    redis: Redis,
) -> None:
    table: dict[str, BudgetSettings | None] = {"demo": None}
    budgets = Budgets(redis, lambda: table, metrics=Metrics(["runapi"], clients=["demo"]))
    rendering = record()
    await budgets.reserve(rendering, 0.30, 0.30)  # no budget yet: held all the same
    table["demo"] = BudgetSettings(day=0.50)  # what `gateway reload` does to the table
    with pytest.raises(BudgetExceeded):
        await budgets.reserve(record(), 0.30, 0.30)  # 0.30 held + 0.30 > 0.50
    await budgets.reserve(record(), 0.20, 0.20)  # fits exactly
    assert (await usage(budgets, "demo", "day")).reserved_usd == 0.50
