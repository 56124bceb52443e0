"""The HTTP contract of api.md §2, through the real app, a real Redis and the simulated
resellers' real wire formats."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from providers.sandbox.engine import FAILURE_MESSAGE
from tests.integration.conftest import FAST, IMAGE, OTHER_KEY, Harness

PROBLEM = "application/problem+json"


def body(**fields: Any) -> dict[str, Any]:
    return {"prompt": "a red fox in snow", "image": IMAGE, **fields}


async def wait_final(h: Harness, task_id: str, timeout_s: float = 5.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        task: dict[str, Any] = (await h.read(task_id)).json()
        if task["status"] in ("completed", "failed"):
            return task
        assert asyncio.get_running_loop().time() < deadline, f"still {task['status']}"
        await asyncio.sleep(0.2)


async def test_create_answers_202_with_the_task_object(harness: Harness) -> None:
    response = await harness.create(body(metadata={"order": "A-1"}))
    assert response.status_code == 202
    task = response.json()
    assert task["id"].startswith("vid_")
    assert task["object"] == "video"
    assert task["status"] == "queued"
    assert (task["model"], task["tier"], task["duration"], task["resolution"]) == (
        "hailuo-2.3", "standard", 6, "768P",
    )  # fmt: skip
    assert task["mode"] == "image_to_video"
    assert task["metadata"] == {"order": "A-1"}
    assert task["provider_task_id"]
    assert task["attempts"][-1]["outcome"] == "accepted"
    assert task["video_url"] is None
    assert task["error"] is None


async def test_six_second_768p_goes_to_the_cheaper_provider(harness: Harness) -> None:
    task = (await harness.create(body())).json()
    assert task["provider"] == "runapi"
    assert task["price_usd"] == 0.30
    assert harness.runapi.counters.accepted_creates == 1
    assert harness.apiinone.counters.create_calls == 0


async def test_ten_second_request_goes_where_it_is_cheaper(harness: Harness) -> None:
    task = (await harness.create(body(duration=10))).json()
    assert task["provider"] == "apiinone"
    assert task["price_usd"] == 0.45
    assert harness.runapi.counters.create_calls == 0


async def test_task_reaches_completed_with_a_video_url(harness: Harness) -> None:
    for duration in (6, 10):  # one on each reseller
        task_id = (await harness.create(body(duration=duration))).json()["id"]
        final = await wait_final(harness, task_id)
        assert final["status"] == "completed"
        assert final["video_url"].endswith(".mp4")
        assert final["completed_at"] is not None


async def test_upstream_failed_generation_becomes_failed_with_an_error(harness: Harness) -> None:
    task_id = (await harness.create(body(prompt="a storm [sandbox:fail]"))).json()["id"]
    final = await wait_final(harness, task_id)
    assert final["status"] == "failed"
    assert final["error"]["code"] == "generation_failed"
    assert FAILURE_MESSAGE in final["error"]["message"]
    assert final["video_url"] is None


async def test_final_task_is_served_without_asking_the_upstream(harness: Harness) -> None:
    task_id = (await harness.create(body())).json()["id"]
    await wait_final(harness, task_id)
    calls = harness.runapi.counters.status_calls
    for _ in range(5):
        assert (await harness.read(task_id)).json()["status"] == "completed"
    assert harness.runapi.counters.status_calls == calls


async def redis_reads(redis: Redis) -> int:
    """GET commands the Redis server has run so far."""
    stats: dict[str, Any] = await redis.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


async def test_final_task_is_answered_again_from_memory_without_reading_redis(
    harness: Harness, redis: Redis
) -> None:
    task_id = (await harness.create(body())).json()["id"]
    final = await wait_final(harness, task_id)
    first = await harness.read(task_id)  # read once as final: from now on it is in memory
    before = await redis_reads(redis)
    again = [await harness.read(task_id) for _ in range(5)]
    assert await redis_reads(redis) == before
    assert {a.content for a in again} == {first.content}
    assert first.json() == final
    assert first.headers["content-type"] == "application/json"


async def test_remembered_final_task_is_still_404_for_another_client(harness: Harness) -> None:
    task_id = (await harness.create(body())).json()["id"]
    await wait_final(harness, task_id)
    assert (await harness.read(task_id)).status_code == 200
    response = await harness.read(task_id, key=OTHER_KEY)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_unfinished_task_is_read_from_redis_on_every_lookup(
    harness: Harness, redis: Redis
) -> None:
    harness.runapi.update_knobs({"queue_s": 30, "complete_after_s": 60})
    task_id = (await harness.create(body())).json()["id"]
    before = await redis_reads(redis)
    for _ in range(3):
        assert (await harness.read(task_id)).json()["status"] in ("queued", "processing")
    assert await redis_reads(redis) - before >= 3


async def test_lookups_within_the_poll_interval_share_one_upstream_read(
    harness: Harness,
) -> None:
    harness.runapi.update_knobs({"queue_s": 30, "complete_after_s": 60, "latency_ms": 50})
    task_id = (await harness.create(body())).json()["id"]
    answers = await asyncio.gather(*(harness.read(task_id) for _ in range(20)))
    assert all(a.status_code == 200 for a in answers)
    assert harness.runapi.counters.status_calls == 1


async def test_missing_key_is_401_problem(harness: Harness) -> None:
    response = await harness.client.post("/v1/videos", json=body())
    assert response.status_code == 401
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_wrong_key_is_401_even_with_an_invalid_body(harness: Harness) -> None:
    response = await harness.client.post(
        "/v1/videos", json={"bogus": 1}, headers={"Authorization": "Bearer nope"}
    )
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


async def test_lookup_needs_a_key_too(harness: Harness) -> None:
    response = await harness.client.get("/v1/videos/vid_aaaaaaaaaaaaaaaaaaaaaaaaaa")
    assert response.status_code == 401


async def test_task_of_another_client_is_404(harness: Harness) -> None:
    task_id = (await harness.create(body())).json()["id"]
    response = await harness.read(task_id, key=OTHER_KEY)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_unknown_and_malformed_ids_are_404(harness: Harness) -> None:
    for task_id in ("vid_aaaaaaaaaaaaaaaaaaaaaaaaaa", "nope", "gw:task:x"):
        response = await harness.read(task_id)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


async def test_invalid_fields_are_422_naming_each_field_and_reach_no_reseller(
    harness: Harness,
) -> None:
    response = await harness.create({"prompt": "", "duration": 7, "colour": "red"})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["code"] == "invalid_request"
    assert {e["field"] for e in problem["errors"]} == {"prompt", "duration", "colour"}
    assert harness.upstream_creates == 0


async def test_ten_seconds_at_1080p_is_refused_before_any_upstream_call(
    harness: Harness,
) -> None:
    response = await harness.create(body(duration=10, resolution="1080p"))
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["resolution"]
    assert harness.upstream_creates == 0


async def test_a_body_that_is_not_a_json_object_is_400(harness: Harness) -> None:
    for content in (b"[1, 2]", b'"text"', b"{not json", b""):
        response = await harness.client.post(
            "/v1/videos",
            content=content,
            headers={**harness.headers(), "content-type": "application/json"},
        )
        assert response.status_code == 400, content
        assert response.json()["code"] == "invalid_request"
    assert harness.upstream_creates == 0


async def test_unknown_model_is_invalid_naming_model(harness: Harness) -> None:
    response = await harness.create(body(model="hailuo-9"))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "model"


async def test_text_to_video_is_unsupported_when_no_provider_serves_it(harness: Harness) -> None:
    response = await harness.create({"prompt": "a fox"})
    assert response.status_code == 422
    assert response.json()["code"] == "unsupported"
    assert harness.upstream_creates == 0


async def test_max_price_below_every_provider_is_unsupported(harness: Harness) -> None:
    response = await harness.create(body(routing={"max_price_usd": 0.10}))
    assert response.status_code == 422
    assert response.json()["code"] == "unsupported"


async def test_allow_list_restricts_routing(harness: Harness) -> None:
    task = (await harness.create(body(routing={"providers": ["apiinone"]}))).json()
    assert task["provider"] == "apiinone"
    response = await harness.create(body(routing={"providers": ["nobody"]}))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "routing.providers"


async def test_body_over_the_limit_is_413(harness_factory: Callable[..., Any]) -> None:
    h: Harness = await harness_factory(server={"max_body_bytes": 2048})
    response = await h.create(body(prompt="x" * 1900, metadata={"pad": "y" * 500}))
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_content_refusal_is_422_and_not_failed_over(harness: Harness) -> None:
    response = await harness.create(body(prompt="something [sandbox:content]"))
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "content_rejected"
    assert [a["provider"] for a in problem["attempts"]] == ["runapi"]
    assert harness.apiinone.counters.create_calls == 0


async def test_upstream_5xx_fails_over_to_the_next_provider(harness: Harness) -> None:
    harness.runapi.update_knobs({"create_fault": "http_503"})
    response = await harness.create(body())
    assert response.status_code == 202
    task = response.json()
    assert task["provider"] == "apiinone"
    assert [(a["provider"], a["outcome"]) for a in task["attempts"]] == [
        ("runapi", "upstream_unavailable"),
        ("apiinone", "accepted"),
    ]


async def test_upstream_validation_refusal_is_502_upstream_rejected(harness: Harness) -> None:
    harness.runapi.update_knobs({"create_fault": "http_400"})
    response = await harness.create(body())
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_rejected"
    assert harness.apiinone.counters.create_calls == 0


async def test_every_provider_failing_is_502_with_attempts(harness: Harness) -> None:
    harness.runapi.update_knobs({"create_fault": "http_500"})
    harness.apiinone.update_knobs({"create_fault": "http_402"})
    response = await harness.create(body())
    assert response.status_code == 502
    problem = response.json()
    assert problem["code"] == "all_providers_failed"
    assert [a["outcome"] for a in problem["attempts"]] == ["upstream_unavailable", "account_error"]


async def test_redis_down_refuses_create_before_any_upstream_call(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(redis_url_override="redis://127.0.0.1:1/0")
    response = await h.create(body())
    assert response.status_code == 503
    assert response.json()["code"] == "store_unavailable"
    assert h.upstream_creates == 0
    lookup = await h.read("vid_aaaaaaaaaaaaaaaaaaaaaaaaaa")
    assert lookup.status_code == 503
    ready = await h.client.get("/readyz")
    assert ready.status_code == 503
    assert "redis" in ready.json()["reasons"][0]


async def test_health_and_readiness(harness: Harness) -> None:
    assert (await harness.client.get("/healthz")).json() == {"status": "ok"}
    assert (await harness.client.get("/readyz")).status_code == 200


async def test_openapi_documents_the_create_body(harness: Harness) -> None:
    schema = (await harness.client.get("/schema/openapi.json")).json()
    post = schema["paths"]["/v1/videos"]["post"]
    assert "requestBody" in post
    assert "202" in post["responses"]


async def test_unknown_route_is_a_404_problem(harness: Harness) -> None:
    response = await harness.client.get("/v2/nothing")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)


async def test_second_app_on_the_same_redis_answers_lookups(
    harness: Harness, harness_factory: Callable[..., Any]
) -> None:
    task_id = (await harness.create(body())).json()["id"]
    await wait_final(harness, task_id)
    second: Harness = await harness_factory(knobs=FAST)
    again = await second.read(task_id)
    assert again.status_code == 200
    assert again.json()["status"] == "completed"


def test_client_type_is_async(harness: Harness) -> None:
    assert isinstance(harness.client, AsyncTestClient)


async def test_deeply_nested_body_is_400_not_a_crash(harness: Harness) -> None:
    for depth in (70, 1000, 100_000):
        content = b'{"prompt":"x","extra":' + b"[" * depth + b"]" * depth + b"}"
        response = await harness.client.post(
            "/v1/videos",
            content=content,
            headers={**harness.headers(), "content-type": "application/json"},
        )
        assert response.status_code == 400, depth
        assert response.json()["code"] == "invalid_request"
    assert harness.upstream_creates == 0


async def test_brackets_inside_strings_do_not_count_toward_the_structure_limit(
    harness: Harness,
) -> None:
    prompt = "[" * 500 + '{"quoted \\" brace"}' + "]" * 500
    response = await harness.create(body(prompt=prompt[:2000]))
    assert response.status_code == 202
