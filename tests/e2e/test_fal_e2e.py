"""fal.ai through the gateway, with real processes: the simulated fal queue, the gateway, Redis.

fal is the cheapest here for a standard 6 s 768P request (0.28, RunAPI 0.30, API in One 0.32),
so it is tried first; RunAPI is the fallback. Each simulated reseller counts the creates it
received and lists the Authorization headers it saw, so a test proves where the fal key went.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Gateway, Sandbox, gateway_config, wait_final
from tests.sandbox_process import FAL_KEY
from tests.scrape import Scrape

pytestmark = pytest.mark.e2e
IMAGE = "https://example.com/first-frame.png"
DATA_URI = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
FAL_AUTH = f"Key {FAL_KEY}"


def fal_provider(sandbox: Sandbox, **overrides: Any) -> dict[str, Any]:
    return {
        "kind": "fal",
        "base_url": sandbox.fal,
        "api_key_env": "FAL_KEY",
        "timeout_s": 1.5,
        "prices_usd": {
            "hailuo-2.3": {"standard": {"6s_768P": 0.28, "10s_768P": 0.56, "6s_1080P": 0.49}},
            "hailuo-2.3-fast": {"standard": {"6s_768P": 0.19, "10s_768P": 0.32, "6s_1080P": 0.33}},
        },
        **overrides,
    }


def start(
    gateways: list[Gateway],
    tmp_path: Path,
    sandbox: Sandbox,
    redis_url: str,
    *,
    fal: dict[str, Any] | None = None,
    public: bool = False,
    **sections: Any,
) -> Gateway:
    config = gateway_config(
        sandbox,
        redis_url,
        tmp_path / "data",
        providers={"fal": fal or fal_provider(sandbox)},
        **sections,
    )
    gateway = Gateway(config, tmp_path, name=f"fal{len(gateways)}")
    if public:  # the callback URL reaches this very gateway
        gateway.env["GATEWAY_SERVER__PUBLIC_URL"] = gateway.url
    gateways.append(gateway)
    return gateway.start()


def create(gateway: Gateway, **fields: Any) -> httpx.Response:
    body = {"prompt": "a kite over dunes", "image": IMAGE, **fields}
    with gateway.client() as client:
        return client.post("/v1/videos", json={k: v for k, v in body.items() if v is not None})


def creates(sandbox: Sandbox) -> dict[str, int]:
    return {name: sandbox.stats(name)["create_calls"] for name in ("fal", "runapi", "apiinone")}


def test_text_to_video_goes_to_fal_and_completes_through_its_returned_urls(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gateway = start(gateways, tmp_path, sandbox, redis_url)

    response = create(gateway, image=None)

    assert response.status_code == 202, response.text
    task = response.json()
    assert (task["provider"], task["mode"]) == ("fal", "text_to_video")
    assert task["provider_task_id"].startswith("/fal-ai/minimax/requests/")
    with gateway.client() as client:
        final = wait_final(client, task["id"])
    assert final["status"] == "completed"
    # The reseller's own link (``video_url`` too while no stored copy is made).
    assert final.get("upstream_video_url", final["video_url"]).startswith(f"{sandbox.fal}/files/")
    assert creates(sandbox) == {"fal": 1, "runapi": 0, "apiinone": 0}
    assert sandbox.stats("fal")["status_calls"] >= 2  # the status URL, then the response URL
    assert sandbox.authorizations("fal") == [FAL_AUTH]


def test_a_data_uri_image_goes_to_fal_even_when_it_is_the_dearest(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    dear = fal_provider(sandbox, prices_usd={"standard": {"6s_768P": 0.99}})
    gateway = start(gateways, tmp_path, sandbox, redis_url, fal=dear)

    response = create(gateway, image=DATA_URI)

    assert response.status_code == 202, response.text
    assert response.json()["provider"] == "fal"
    assert creates(sandbox) == {"fal": 1, "runapi": 0, "apiinone": 0}


@pytest.mark.parametrize(("resolution", "price"), [("768P", 0.19), ("1080P", 0.33)])
def test_fast_with_a_data_uri_goes_to_fal_priced_by_model(
    resolution: str,
    price: float,
    sandbox: Sandbox,
    redis_url: str,
    tmp_path: Path,
    gateways: list[Gateway],
) -> None:
    gateway = start(gateways, tmp_path, sandbox, redis_url)

    response = create(gateway, model="hailuo-2.3-fast", image=DATA_URI, resolution=resolution)

    assert response.status_code == 202, response.text
    task = response.json()
    assert (task["provider"], task["model"], task["price_usd"]) == ("fal", "hailuo-2.3-fast", price)
    with gateway.client() as client:
        assert wait_final(client, task["id"])["status"] == "completed"
    assert creates(sandbox) == {"fal": 1, "runapi": 0, "apiinone": 0}


def test_fals_webhook_makes_the_gateway_read_the_task(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    # No background polling and no lookups: only fal's webhook can make the gateway read it.
    gateway = start(
        gateways, tmp_path, sandbox, redis_url, public=True,
        status={"background_polling": False, "poll_interval_s": 1},
    )  # fmt: skip

    response = create(gateway, image=None)

    assert response.status_code == 202, response.text
    assert sandbox.stats("fal")["status_calls"] == 0
    deadline = time.monotonic() + 10
    while sandbox.stats("fal")["status_calls"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    stats = sandbox.stats("fal")
    assert stats["callbacks_sent"] == 1
    assert stats["status_calls"] == 2  # one read: the status URL, then the response URL
    # The read saw fal's result; the video copy that precedes "completed" takes a moment more.
    deadline = time.monotonic() + 5
    with gateway.client() as client:
        task = client.get(f"/v1/videos/{response.json()['id']}").json()
        while task["status"] != "completed" and time.monotonic() < deadline:
            time.sleep(0.05)
            task = client.get(f"/v1/videos/{response.json()['id']}").json()
    assert task["status"] == "completed"
    assert sandbox.stats("fal")["status_calls"] == 2  # the lookups asked fal nothing


@pytest.mark.parametrize("failover_on_timeout", [False, True])
def test_a_status_url_on_another_host_is_a_taken_task_never_followed_nor_sent_elsewhere(
    failover_on_timeout: bool,
    sandbox: Sandbox,
    redis_url: str,
    tmp_path: Path,
    gateways: list[Gateway],
) -> None:
    gateway = start(
        gateways, tmp_path, sandbox, redis_url,
        routing={"failover_on_timeout": failover_on_timeout},
    )  # fmt: skip
    sandbox.knobs("fal", url_base=sandbox.runapi)  # another origin, and a server that records

    response = create(gateway)

    assert response.status_code == 504, response.text
    problem = response.json()
    assert problem["code"] == "upstream_outcome_unknown"
    assert [(a["provider"], a["outcome"]) for a in problem["attempts"]] == [
        ("fal", "outcome_unknown")
    ]
    assert creates(sandbox) == {"fal": 1, "runapi": 0, "apiinone": 0}
    assert sandbox.stats("fal")["accepted_creates"] == 1  # fal took it: it may bill it
    time.sleep(1.5)  # a background poll, if there were one, would have gone out by now
    assert FAL_AUTH not in sandbox.authorizations("runapi")
    assert sandbox.authorizations("runapi") == []
    assert sandbox.authorizations("fal") == [FAL_AUTH]
    assert FAL_KEY not in gateway.logs()
    scrape = Scrape(httpx.get(f"{gateway.url}/metrics").text)
    assert scrape.value("gateway_spend_at_risk_usd_total", provider="fal") == 0.28
    assert scrape.value("gateway_ambiguous_submits_total", provider="fal") == 1


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        ("http_500", "upstream_unavailable"),
        ("html_502", "upstream_unavailable"),
        ("http_503", "upstream_unavailable"),
        ("http_429", "rate_limited"),
        ("http_401", "account_error"),
        ("http_402", "account_error"),
        ("http_403", "account_error"),
    ],
)
def test_fal_answers_proving_no_task_fail_over_exactly_once(
    fault: str,
    outcome: str,
    sandbox: Sandbox,
    redis_url: str,
    tmp_path: Path,
    gateways: list[Gateway],
) -> None:
    gateway = start(gateways, tmp_path, sandbox, redis_url)
    sandbox.knobs("fal", create_fault=fault)

    response = create(gateway)

    assert response.status_code == 202, response.text
    assert [(a["provider"], a["outcome"]) for a in response.json()["attempts"]] == [
        ("fal", outcome),
        ("runapi", "accepted"),
    ]
    assert creates(sandbox) == {"fal": 1, "runapi": 1, "apiinone": 0}
    assert sandbox.stats("fal")["accepted_creates"] == 0


def test_a_fal_submit_without_an_answer_is_outcome_unknown_and_not_failed_over(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gateway = start(gateways, tmp_path, sandbox, redis_url)
    sandbox.knobs("fal", create_fault="drop")

    response = create(gateway)

    assert response.status_code == 504, response.text
    assert response.json()["code"] == "upstream_outcome_unknown"
    assert creates(sandbox) == {"fal": 1, "runapi": 0, "apiinone": 0}


def test_a_content_refusal_in_fals_result_fails_the_task_without_resubmission(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gateway = start(gateways, tmp_path, sandbox, redis_url)

    response = create(gateway, prompt="a kite over dunes [sandbox:content]")

    assert response.status_code == 202, response.text
    with gateway.client() as client:
        final = wait_final(client, response.json()["id"])
    assert final["status"] == "failed"
    assert final["error"]["code"] == "content_rejected"
    assert creates(sandbox) == {"fal": 1, "runapi": 0, "apiinone": 0}


def test_a_failed_fal_generation_is_resubmitted_once_to_the_next_provider(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gateway = start(gateways, tmp_path, sandbox, redis_url)
    sandbox.knobs("fal", task_outcome="failed")

    response = create(gateway)

    assert response.status_code == 202, response.text
    with gateway.client() as client:
        final = wait_final(client, response.json()["id"], timeout_s=15)
    assert final["status"] == "completed"
    assert final["provider"] == "runapi"
    assert [(a["provider"], a["outcome"]) for a in final["attempts"]][:2] == [
        ("fal", "accepted"),
        ("fal", "generation_failed"),
    ]
    assert creates(sandbox) == {"fal": 1, "runapi": 1, "apiinone": 0}


def test_a_restarted_gateway_follows_a_fal_task_with_nothing_but_its_stored_id(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    sandbox.knobs("fal", queue_s=1.5, complete_after_s=2.5)
    first = start(gateways, tmp_path, sandbox, redis_url)
    response = create(first, image=None)
    assert response.status_code == 202, response.text
    first.stop()

    second = start(gateways, tmp_path, sandbox, redis_url)
    with second.client() as client:
        final = wait_final(client, response.json()["id"])

    assert final["status"] == "completed"
    assert creates(sandbox) == {"fal": 1, "runapi": 0, "apiinone": 0}
    assert sandbox.authorizations("fal") == [FAL_AUTH]
