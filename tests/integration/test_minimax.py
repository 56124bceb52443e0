"""MiniMax behind the gateway (in process, simulated MiniMax, real Redis): text-to-video, Fast,
data-URI images, each HTTP-200 business error's failover verdict, and the callback handshake."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.status import callback_urls
from gateway.store import KEY_PREFIX, Keys
from providers.sandbox.engine import Knobs
from tests.integration.conftest import IMAGE, Harness, minimax_config

PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwAB"
    "BAEAfbLI3wAAAABJRU5ErkJggg=="
)
TEXT = {"prompt": "a lighthouse in a storm"}
WITH_MINIMAX = {"minimax": minimax_config()}


async def with_minimax(make: Callable[..., Any], **sections: Any) -> Harness:
    providers = {**WITH_MINIMAX, **sections.pop("providers", {})}
    harness: Harness = await make(providers=providers, **sections)
    return harness


def creates(h: Harness) -> tuple[int, int, int]:
    """Create calls seen by (minimax, runapi, apiinone)."""
    return (
        h.minimax.counters.create_calls,
        h.runapi.counters.create_calls,
        h.apiinone.counters.create_calls,
    )


async def test_text_to_video_goes_to_minimax_and_completes_with_the_retrieved_url(
    harness_factory: Callable[..., Any],
) -> None:
    h = await with_minimax(harness_factory)
    created = await h.create(TEXT)
    assert created.status_code == 202, created.text
    task = created.json()
    assert (task["provider"], task["mode"], task["price_usd"]) == ("minimax", "text_to_video", 0.28)
    assert creates(h) == (1, 0, 0)
    done = (await h.read(task["id"])).json()
    assert done["status"] == "completed"
    assert done["video_url"].endswith(f"/files/{task['provider_task_id']}.mp4")
    assert h.minimax.counters.file_calls == 1


async def test_text_to_video_without_minimax_is_unsupported(harness: Harness) -> None:
    answer = await harness.create(TEXT)
    assert (answer.status_code, answer.json()["code"]) == (422, "unsupported")
    assert harness.upstream_creates == 0


async def test_fast_without_an_image_is_invalid_request_naming_image_before_routing(
    harness_factory: Callable[..., Any],
) -> None:
    h = await with_minimax(harness_factory)
    answer = await h.create({**TEXT, "model": "hailuo-2.3-fast"})
    assert (answer.status_code, answer.json()["code"]) == (422, "invalid_request")
    assert [e["field"] for e in answer.json()["errors"]] == ["image"]
    assert h.upstream_creates == 0


async def test_fast_with_an_image_is_routed_to_the_cheapest_fast_price(
    harness_factory: Callable[..., Any],
) -> None:
    h = await with_minimax(
        harness_factory,
        providers={
            "minimax_b": minimax_config(
                prices_usd={"hailuo-2.3-fast": {"standard": {"6s_768P": 0.17}}}
            )
        },
    )
    task = (await h.create({**TEXT, "model": "hailuo-2.3-fast", "image": IMAGE})).json()
    assert (task["provider"], task["model"], task["price_usd"]) == (
        "minimax_b",
        "hailuo-2.3-fast",
        0.17,
    )
    assert h.minimax.counters.create_calls == 1  # both accounts sit on one simulated MiniMax


async def test_image_to_video_goes_to_minimax_when_cheapest_and_pro_to_the_resellers(
    harness_factory: Callable[..., Any],
) -> None:
    h = await with_minimax(harness_factory)
    standard = (await h.create({**TEXT, "image": IMAGE})).json()
    pro = (await h.create({**TEXT, "image": IMAGE, "tier": "pro"})).json()
    assert (standard["provider"], standard["price_usd"]) == ("minimax", 0.28)
    assert (pro["provider"], pro["price_usd"]) == ("runapi", 0.45)  # MiniMax has no pro price


async def test_data_uri_images_are_never_sent_to_runapi_or_apiinone(
    harness_factory: Callable[..., Any],
) -> None:
    h = await with_minimax(harness_factory, knobs=Knobs(queue_s=0, complete_after_s=0))
    taken = (await h.create({**TEXT, "image": PNG})).json()
    assert taken["provider"] == "minimax"
    h.minimax.update_knobs({"create_fault": "http_503"})
    refused = await h.create({**TEXT, "image": PNG})
    assert (refused.status_code, refused.json()["code"]) == (502, "all_providers_failed")
    assert [a["provider"] for a in refused.json()["attempts"]] == ["minimax"]
    assert creates(h) == (2, 0, 0)


@pytest.mark.parametrize(
    ("code", "status", "problem", "expected_creates"),
    [
        (1002, 202, None, (1, 1, 0)),
        (1004, 202, None, (1, 1, 0)),
        (1008, 202, None, (1, 1, 0)),
        (1026, 422, "content_rejected", (1, 0, 0)),
        (2013, 502, "upstream_rejected", (1, 0, 0)),
        (1039, 502, "upstream_rejected", (1, 0, 0)),
    ],
    ids=["1002-failover", "1004-failover", "1008-failover", "1026-stop", "2013-stop", "1039-stop"],
)
async def test_each_minimax_business_error_fails_over_or_stops_as_specified(
    harness_factory: Callable[..., Any],
    code: int,
    status: int,
    problem: str | None,
    expected_creates: tuple[int, int, int],
) -> None:
    h = await with_minimax(harness_factory)
    answer = await h.create({"prompt": f"a kite [sandbox:code={code}]", "image": IMAGE})
    assert answer.status_code == status, answer.text
    body = answer.json()
    attempts = body["attempts"]
    assert attempts[0]["provider"] == "minimax"
    if problem is None:
        assert body["provider"] == "runapi"
        assert [a["outcome"] for a in attempts][-1] == "accepted"
    else:
        assert body["code"] == problem
        assert len(attempts) == 1
    if code == 1039:
        assert "1039" in attempts[0]["message"]
    assert creates(h) == expected_creates


async def test_the_challenge_minimax_sends_before_answering_the_create_is_echoed(
    harness_factory: Callable[..., Any],
) -> None:
    # The simulated MiniMax POSTs the challenge to the callback URL (this app) before it
    # answers the create, and refuses the create (2013) unless the challenge comes back: the
    # token must be valid from the moment the gateway sends it.
    h = await with_minimax(harness_factory, server={"public_url": "https://gw.example"})
    created = await h.create(TEXT)
    assert created.status_code == 202, created.text
    counters = h.minimax.counters
    assert (counters.challenges_sent, counters.challenges_echoed) == (1, 1)
    assert counters.status_calls == 0  # a challenge triggers no status read


def test_the_callback_url_given_to_resellers_is_outside_v1() -> None:
    url = callback_urls("https://gw.example/base/", "tok-123")
    assert url is not None
    assert url("minimax") == "https://gw.example/base/callbacks/minimax/tok-123"
    assert callback_urls(None, "tok-123") is None


async def test_callbacks_at_the_new_and_the_old_path_are_hints_and_unknown_tokens_404(
    harness_factory: Callable[..., Any], redis: Redis
) -> None:
    h = await with_minimax(
        harness_factory,
        knobs=Knobs(queue_s=5, complete_after_s=10),
        server={"public_url": "https://gw.example"},
        status={"poll_interval_s": 1},
    )
    created = (await h.create(TEXT)).json()
    keys = [k async for k in redis.scan_iter(f"{KEY_PREFIX}:*:callback:*")]  # every shard
    tokens = [k.decode().rsplit(":", 1)[1] for k in keys]
    owners = [await redis.get(Keys.callback(t)) for t in tokens]
    token = tokens[owners.index(created["id"].encode())]
    hint = await h.client.post(f"/callbacks/minimax/{token}", json={"status": "Success"})
    assert hint.status_code == 204
    assert h.minimax.counters.status_calls == 1
    old = await h.client.post(f"/v1/callbacks/minimax/{token}", json={"challenge": "again"})
    assert (old.status_code, old.json()) == (200, {"challenge": "again"})
    assert (
        await h.client.post("/callbacks/minimax/not-a-token", json={"challenge": "x"})
    ).status_code == 404
    assert (await h.client.post(f"/callbacks/runapi/{token}")).status_code == 404
    assert (await h.read(created["id"])).json()["status"] != "completed"  # the body is not trusted


async def test_providers_lists_models_modes_image_forms_and_prices_by_model(
    harness_factory: Callable[..., Any],
) -> None:
    h = await with_minimax(harness_factory)
    listing = (await h.client.get("/v1/providers", headers=h.headers())).json()
    by_name = {p["name"]: p for p in listing["data"]}
    minimax, runapi = by_name["minimax"], by_name["runapi"]
    assert minimax["models"] == ["hailuo-2.3", "hailuo-2.3-fast"]
    assert minimax["modes"] == {
        "hailuo-2.3": ["image_to_video", "text_to_video"],
        "hailuo-2.3-fast": ["image_to_video"],
    }
    assert minimax["image_forms"] == ["url", "data_uri"]
    assert minimax["prices_usd"] == {
        "standard": {"6s_768P": 0.28, "10s_768P": 0.56, "6s_1080P": 0.49}
    }
    assert minimax["prices_by_model_usd"]["hailuo-2.3-fast"]["standard"]["6s_768P"] == 0.19
    assert (runapi["models"], runapi["modes"], runapi["image_forms"]) == (
        ["hailuo-2.3"], {"hailuo-2.3": ["image_to_video"]}, ["url"],
    )  # fmt: skip
    assert runapi["prices_usd"]["pro"]["6s_1080P"] == 0.80
