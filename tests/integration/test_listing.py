"""api.md §6: ``GET /v1/videos`` (each client's own tasks, newest first, cursor pages) and
``DELETE /v1/videos/{id}``, through the real app on a real Redis; the task object's OpenAI
fields and ``openai-poll-after-ms``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from gateway.listing import TaskIndex
from gateway.openai_compat import POLL_AFTER_HEADER
from gateway.store import Keys
from tests.integration.conftest import EVERY_KEY_BUT_TASKS, IMAGE, OTHER_KEY, Acl, Harness
from tests.integration.test_promises import create, no_answer, until

BODY = {"prompt": "a lighthouse at dusk", "image": IMAGE}


async def created(h: Harness, n: int, key: str | None = None) -> list[str]:
    ids = []
    for _ in range(n):
        response = await (h.create(BODY) if key is None else h.create(BODY, key=key))
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


async def listed(h: Harness, key: str | None = None, **params: Any) -> dict[str, Any]:
    response = await h.client.get(
        "/v1/videos", params=params, headers=h.headers(*(key,) if key else ())
    )
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def final(h: Harness, task_id: str) -> dict[str, Any]:
    for _ in range(50):
        task: dict[str, Any] = (await h.read(task_id)).json()
        if task["status"] in ("completed", "failed"):
            return task
        await asyncio.sleep(0.1)
    raise AssertionError("the task did not finish")


async def test_list_pages_newest_first_with_openais_envelope(harness: Harness) -> None:
    ids = await created(harness, 5)
    first = await listed(harness, limit=2)
    assert first["object"] == "list"
    assert [t["id"] for t in first["data"]] == ids[::-1][:2]
    assert (first["first_id"], first["last_id"], first["has_more"]) == (ids[4], ids[3], True)
    second = await listed(harness, limit=2, after=first["last_id"])
    assert [t["id"] for t in second["data"]] == [ids[2], ids[1]]
    last = await listed(harness, limit=2, after=second["last_id"])
    assert ([t["id"] for t in last["data"]], last["has_more"]) == ([ids[0]], False)
    oldest_first = await listed(harness, order="asc", limit=100)
    assert [t["id"] for t in oldest_first["data"]] == ids
    assert oldest_first["data"][0]["object"] == "video"


async def test_list_holds_only_the_clients_own_tasks(harness: Harness) -> None:
    mine = await created(harness, 2)
    theirs = await created(harness, 1, key=OTHER_KEY)
    assert [t["id"] for t in (await listed(harness))["data"]] == mine[::-1]
    assert [t["id"] for t in (await listed(harness, key=OTHER_KEY))["data"]] == theirs
    # Another client's id is no cursor of this one: nothing is known to come after it.
    assert (await listed(harness, after=theirs[0]))["data"] == []
    assert (await listed(harness, after="vid_aaaaaaaaaaaaaaaaaaaaaaaaaa"))["data"] == []


async def test_empty_list(harness: Harness) -> None:
    page = await listed(harness)
    assert page == {"object": "list", "data": [], "first_id": None, "last_id": None,
                    "has_more": False}  # fmt: skip


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"order": "newest"}, "order")],
)  # fmt: skip
async def test_bad_list_parameters_are_422_naming_them(
    harness: Harness, params: dict[str, Any], field: str
) -> None:
    response = await harness.client.get("/v1/videos", params=params, headers=harness.headers())
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_refused_creates_are_not_listed(harness: Harness) -> None:
    refused = await harness.create({**BODY, "prompt": "x [sandbox:content]"})
    assert refused.status_code == 422
    assert (await listed(harness))["data"] == []


def unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


async def test_a_create_no_provider_took_is_not_listed(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(
        transports={"runapi": httpx.MockTransport(unreachable),
                    "apiinone": httpx.MockTransport(unreachable)},
    )  # fmt: skip
    refused = await h.create(BODY)
    assert (refused.status_code, "id" in refused.json()) == (502, False)
    assert (await listed(h))["data"] == []


async def test_an_unanswered_create_is_listed_under_the_id_its_504_names(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(transports={"runapi": httpx.MockTransport(no_answer)})
    answer = await h.create(BODY)
    assert (answer.status_code, answer.json()["code"]) == (504, "upstream_outcome_unknown")
    assert [t["id"] for t in (await listed(h))["data"]] == [answer.json()["id"]]


async def test_an_accept_not_recorded_in_time_is_listed_under_the_id_its_504_names(
    harness_factory: Callable[..., Any], acl: Acl
) -> None:
    """Task records are unwritable past ``accept_retry_s``, the client's list is not: the 504
    answer names the task and the list holds it at once."""
    h: Harness = await harness_factory(redis_url_override=acl.url, redis={"accept_retry_s": 0.3})
    h.runapi.update_knobs({"latency_ms": 300})
    outage = asyncio.create_task(acl.outage(0.15, 1.0, *EVERY_KEY_BUT_TASKS, "gw:*:tasks"))
    answer = await create(h, BODY)
    assert (answer.status_code, answer.json()["code"]) == (504, "upstream_outcome_unknown")
    index = Keys.client_tasks("demo")
    assert await acl.admin.zscore(index, answer.json()["id"]) is not None  # during the outage
    await outage
    assert [t["id"] for t in (await listed(h))["data"]] == [answer.json()["id"]]


async def test_an_accept_recorded_after_its_504_is_listed_once_redis_is_back(
    harness_factory: Callable[..., Any], acl: Acl
) -> None:
    """The list was as unwritable as the task when the 504 went out: the background write
    that records the task lists it too."""
    h: Harness = await harness_factory(redis_url_override=acl.url, redis={"accept_retry_s": 0.3})
    h.runapi.update_knobs({"latency_ms": 300})
    outage = asyncio.create_task(acl.outage(0.15, 1.0, *EVERY_KEY_BUT_TASKS))
    answer = await create(h, BODY)
    assert (answer.status_code, answer.json()["code"]) == (504, "upstream_outcome_unknown")
    await outage

    async def in_the_list() -> bool:
        return [t["id"] for t in (await listed(h))["data"]] == [answer.json()["id"]]

    await until(in_the_list, timeout_s=5)


async def test_the_index_expires_with_the_tasks(redis: Redis) -> None:
    now = [1_000_000.0]
    index = TaskIndex(redis, ttl_s=60, clock=lambda: now[0])
    await index.add("demo", "vid_old")
    now[0] += 61
    await index.add("demo", "vid_new")
    assert await index.page("demo", None, 10, "desc") == ["vid_new"]  # the old one trimmed
    assert 0 < await redis.ttl(Keys.client_tasks("demo")) <= 60


async def test_an_id_listed_again_keeps_its_first_time(redis: Redis) -> None:
    """A task listed with its 504 and again once its late write succeeds keeps its place."""
    now = [1_000_000.0]
    index = TaskIndex(redis, ttl_s=60, clock=lambda: now[0])
    await index.add("demo", "vid_first")
    now[0] += 1
    await index.add("demo", "vid_second")
    now[0] += 1
    await index.add("demo", "vid_first")
    assert await index.page("demo", None, 10, "desc") == ["vid_second", "vid_first"]


async def test_delete_removes_the_task_for_good(harness: Harness, redis: Redis) -> None:
    keep, gone = await created(harness, 2)
    await final(harness, gone)
    response = await harness.client.delete(f"/v1/videos/{gone}", headers=harness.headers())
    assert response.status_code == 200
    assert response.json() == {"id": gone, "object": "video.deleted", "deleted": True}
    assert (await harness.read(gone)).status_code == 404  # also not from this process's memory
    again = await harness.client.delete(f"/v1/videos/{gone}", headers=harness.headers())
    assert (again.status_code, again.json()["code"]) == (404, "not_found")
    assert [t["id"] for t in (await listed(harness))["data"]] == [keep]
    assert await redis.exists(Keys.task(gone)) == 0


async def test_another_clients_task_cannot_be_deleted(harness: Harness) -> None:
    (task_id,) = await created(harness, 1)
    response = await harness.client.delete(
        f"/v1/videos/{task_id}", headers=harness.headers(OTHER_KEY)
    )
    assert response.status_code == 404
    assert (await harness.read(task_id)).status_code == 200


async def test_a_deleted_id_is_still_a_cursor(harness: Harness) -> None:
    """A client deleting every task of a page can ask for the next page after the last one."""
    ids = await created(harness, 4)
    page = await listed(harness, limit=2)
    for task in page["data"]:
        await harness.client.delete(f"/v1/videos/{task['id']}", headers=harness.headers())
    rest = await listed(harness, limit=2, after=page["last_id"])
    assert [t["id"] for t in rest["data"]] == [ids[1], ids[0]]


async def test_deleting_an_unfinished_task_logs_its_mapping(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.runapi.update_knobs({"queue_s": 30, "complete_after_s": 60})
    task = (await harness.create(BODY)).json()
    with caplog.at_level(logging.WARNING, logger="gateway.listing"):
        response = await harness.client.delete(
            f"/v1/videos/{task['id']}", headers=harness.headers()
        )
    assert response.status_code == 200
    (line,) = [r for r in caplog.records if r.name == "gateway.listing"]
    assert "still runs at its reseller" in line.getMessage()
    assert (line.provider, line.provider_task_id) == (task["provider"], task["provider_task_id"])  # type: ignore[attr-defined]


async def test_a_task_deleted_on_one_instance_is_404_on_another_that_remembered_it(
    harness_factory: Callable[..., Any],
) -> None:
    a: Harness = await harness_factory()
    b: Harness = await harness_factory(sandboxes=(a.runapi, a.apiinone))
    task_id = (await created(a, 1))[0]
    await final(b, task_id)
    assert (await b.read(task_id)).status_code == 200  # b answers it from memory now
    deleted = await a.client.delete(f"/v1/videos/{task_id}", headers=a.headers())
    assert deleted.status_code == 200
    for _ in range(50):  # pub/sub: delivered within milliseconds
        if (await b.read(task_id)).status_code == 404:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the other instance still answers the deleted task")


async def test_unfinished_answers_carry_poll_after_and_final_ones_do_not(
    harness: Harness,
) -> None:
    harness.runapi.update_knobs({"queue_s": 0, "complete_after_s": 1.5})
    created_answer = await harness.create(BODY)
    task = created_answer.json()
    assert created_answer.headers[POLL_AFTER_HEADER] == "1000"
    running = await harness.read(task["id"])
    assert running.json()["status"] in ("queued", "in_progress")
    assert running.headers[POLL_AFTER_HEADER] == "1000"
    done = await final(harness, task["id"])
    assert (done["status"], done["progress"]) == ("completed", 100)
    for _ in range(2):  # from the app, then from memory (the shortcut)
        answer = await harness.read(task["id"])
        assert POLL_AFTER_HEADER not in answer.headers


async def test_progress_follows_the_expected_render_time(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(status={"expected_render_s": 2})
    h.runapi.update_knobs({"queue_s": 0, "complete_after_s": 60})
    task_id = (await h.create(BODY)).json()["id"]
    await asyncio.sleep(1.1)
    task = (await h.read(task_id)).json()
    assert task["status"] == "in_progress"
    assert 40 <= task["progress"] <= 99
