"""MiniMax with real processes: the gateway, the simulated resellers (MiniMax among them) and
redis-server over loopback, counting the create calls each simulated provider received.

For a 6 s 768P standard request MiniMax (0.28) is the cheapest, then RunAPI (0.30), then API in
One (0.32); MiniMax alone serves text-to-video, Fast and data-URI images."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import (
    Gateway,
    Sandbox,
    gateway_config,
    minimax_provider,
    wait_final,
)

pytestmark = pytest.mark.e2e
IMAGE = "https://example.com/first-frame.png"
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwAB"
    "BAEAfbLI3wAAAABJRU5ErkJggg=="
)
PROVIDERS = ("minimax", "runapi", "apiinone")


def start(
    gateways: list[Gateway],
    sandbox: Sandbox,
    redis_url: str,
    tmp_path: Path,
    *,
    public: bool = False,
    **sections: Any,
) -> Gateway:
    providers = {"minimax": minimax_provider(sandbox), **sections.pop("providers", {})}
    config = gateway_config(sandbox, redis_url, tmp_path / "data", providers=providers, **sections)
    gateway = Gateway(config, tmp_path, name=f"mm{len(gateways)}")
    if public:  # the callback URL reaches this very gateway
        gateway.env["GATEWAY_SERVER__PUBLIC_URL"] = gateway.url
    gateways.append(gateway)
    return gateway.start()


def creates(sandbox: Sandbox) -> dict[str, int]:
    return {name: sandbox.stats(name)["create_calls"] for name in PROVIDERS}


def post(gateway: Gateway, body: dict[str, Any]) -> httpx.Response:
    with gateway.client() as client:
        return client.post("/v1/videos", json=body)


def test_text_to_video_is_served_by_minimax_and_completes(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gw = start(gateways, sandbox, redis_url, tmp_path)
    created = post(gw, {"prompt": "a lighthouse in a storm"})
    assert created.status_code == 202, created.text
    task = created.json()
    assert (task["provider"], task["mode"], task["price_usd"]) == ("minimax", "text_to_video", 0.28)
    with gw.client() as client:
        final = wait_final(client, task["id"])
    assert final["status"] == "completed"
    assert final["video_url"]
    assert creates(sandbox) == {"minimax": 1, "runapi": 0, "apiinone": 0}
    assert sandbox.stats("minimax")["file_calls"] >= 1


def test_fast_is_routed_by_price_among_the_accounts_that_serve_it(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    cheaper = minimax_provider(
        sandbox, prices_usd={"hailuo-2.3-fast": {"standard": {"6s_768P": 0.18}}}
    )
    gw = start(gateways, sandbox, redis_url, tmp_path, providers={"minimax_b": cheaper})
    fast = post(gw, {"prompt": "a kite", "model": "hailuo-2.3-fast", "image": IMAGE}).json()
    assert (fast["provider"], fast["model"], fast["price_usd"]) == (
        "minimax_b",
        "hailuo-2.3-fast",
        0.18,
    )
    no_image = post(gw, {"prompt": "a kite", "model": "hailuo-2.3-fast"})
    assert (no_image.status_code, no_image.json()["errors"][0]["field"]) == (422, "image")
    assert creates(sandbox) == {"minimax": 1, "runapi": 0, "apiinone": 0}


def test_data_uri_images_are_never_sent_to_runapi_or_apiinone(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gw = start(gateways, sandbox, redis_url, tmp_path)
    assert post(gw, {"prompt": "a kite", "image": PNG}).json()["provider"] == "minimax"
    sandbox.knobs("minimax", create_fault="http_429")  # 1002: would fail over, if anyone could
    refused = post(gw, {"prompt": "a kite", "image": PNG})
    assert (refused.status_code, refused.json()["code"]) == (502, "all_providers_failed")
    assert creates(sandbox) == {"minimax": 2, "runapi": 0, "apiinone": 0}
    assert sandbox.tasks("runapi") == sandbox.tasks("apiinone") == []


@pytest.mark.parametrize(
    ("code", "status", "outcome", "expected"),
    [
        (1002, 202, "rate_limited", {"minimax": 1, "runapi": 1, "apiinone": 0}),
        (1004, 202, "account_error", {"minimax": 1, "runapi": 1, "apiinone": 0}),
        (1008, 202, "account_error", {"minimax": 1, "runapi": 1, "apiinone": 0}),
        (1026, 422, "content_rejected", {"minimax": 1, "runapi": 0, "apiinone": 0}),
        (2013, 502, "upstream_rejected", {"minimax": 1, "runapi": 0, "apiinone": 0}),
        (1039, 502, "upstream_rejected", {"minimax": 1, "runapi": 0, "apiinone": 0}),
    ],
)
def test_each_http_200_business_error_fails_over_or_stops_as_specified(
    code: int,
    status: int,
    outcome: str,
    expected: dict[str, int],
    sandbox: Sandbox,
    redis_url: str,
    tmp_path: Path,
    gateways: list[Gateway],
) -> None:
    gw = start(gateways, sandbox, redis_url, tmp_path)
    sandbox.knobs("minimax", business_code=code)
    answer = post(gw, {"prompt": "a kite over dunes", "image": IMAGE})
    assert answer.status_code == status, answer.text
    attempts = answer.json()["attempts"]
    assert (attempts[0]["provider"], attempts[0]["outcome"]) == ("minimax", outcome)
    if status == 202:
        assert [a["provider"] for a in attempts] == ["minimax", "runapi"]
    else:
        assert len(attempts) == 1
    assert creates(sandbox) == expected
    assert sandbox.tasks("minimax") == []


def test_the_challenge_is_echoed_in_time_and_a_later_callback_triggers_a_status_read(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    # No background polling and no lookups: only MiniMax's completion callback can make the
    # gateway read the task's status.
    gw = start(
        gateways, sandbox, redis_url, tmp_path, public=True,
        status={"background_polling": False, "poll_interval_s": 1},
    )  # fmt: skip
    created = post(gw, {"prompt": "a lighthouse in a storm"})
    assert created.status_code == 202, created.text
    stats = sandbox.stats("minimax")
    # The simulated MiniMax waits at most 3 s for the echo, before answering the create.
    assert (stats["challenges_sent"], stats["challenges_echoed"]) == (1, 1)
    assert stats["status_calls"] == 0
    deadline = time.monotonic() + 10
    while sandbox.stats("minimax")["status_calls"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    stats = sandbox.stats("minimax")
    assert stats["callbacks_sent"] == 1
    assert stats["status_calls"] == 1
