"""The simulated fal.ai queue over real HTTP: ``python -m providers.sandbox`` as a subprocess."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from providers.sandbox.engine import FAILURE_MESSAGE, Knobs
from providers.sandbox.server import Sandbox, SandboxConfig
from tests.sandbox_process import FAL_KEY, IMAGE, Running, start_sandbox, stop_sandbox

I2V = "/fal-ai/minimax/hailuo-2.3/standard/image-to-video"
PRO_I2V = "/fal-ai/minimax/hailuo-2.3/pro/image-to-video"
T2V = "/fal-ai/minimax/hailuo-2.3/standard/text-to-video"
FAST = {"queue_s": 0.2, "complete_after_s": 0.5}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Running]:
    running = start_sandbox("--log-level=error")
    yield running
    stop_sandbox(running)


@pytest.fixture
def fal(sandbox: Running) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Key {FAL_KEY}"}
    with httpx.Client(base_url=sandbox.fal_url, timeout=5, headers=headers) as client:
        client.post("/_sandbox/reset").raise_for_status()
        yield client


def knobs(client: httpx.Client, **values: Any) -> None:
    client.put("/_sandbox/knobs", json=values).raise_for_status()


def submit(client: httpx.Client, path: str = I2V, **fields: Any) -> dict[str, Any]:
    body = {"prompt": "a red fox in snow", "image_url": IMAGE, "duration": "6", **fields}
    answer = client.post(path, json={k: v for k, v in body.items() if v is not None})
    assert answer.status_code == 200, answer.text
    created: dict[str, Any] = answer.json()
    return created


def until_final(client: httpx.Client, status_url: str, timeout_s: float = 3.0) -> list[str]:
    """Every queue word until ``COMPLETED``."""
    words: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        words.append(client.get(status_url).json()["status"])
        if words[-1] == "COMPLETED":
            break
        time.sleep(0.05)
    return words


def test_a_task_goes_in_queue_in_progress_completed_and_the_result_holds_the_video(
    fal: httpx.Client, sandbox: Running
) -> None:
    knobs(fal, **FAST)
    created = submit(fal)
    request_id = created["request_id"]

    assert created["status_url"] == f"{sandbox.fal_url}/fal-ai/minimax/requests/{request_id}/status"
    assert created["response_url"] == f"{sandbox.fal_url}/fal-ai/minimax/requests/{request_id}"
    words = until_final(fal, created["status_url"])
    assert words[0] == "IN_QUEUE"
    assert "IN_PROGRESS" in words
    assert words[-1] == "COMPLETED"
    video = fal.get(created["response_url"]).json()["video"]["url"]
    assert httpx.get(video).content[4:8] == b"ftyp"


def test_the_result_before_the_end_is_400_still_in_progress(fal: httpx.Client) -> None:
    knobs(fal, queue_s=5, complete_after_s=10)
    created = submit(fal)

    answer = fal.get(created["response_url"])

    assert answer.status_code == 400
    assert "in progress" in answer.json()["detail"]


@pytest.mark.parametrize(
    "authorization", [f"Bearer {FAL_KEY}", "Key wrong-key", None], ids=["bearer", "wrong", "none"]
)
def test_only_the_key_scheme_with_the_right_key_is_let_in(
    fal: httpx.Client, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    body = {"prompt": "p", "image_url": IMAGE}

    answer = httpx.post(f"{fal.base_url}{I2V}", json=body, headers=headers)

    assert answer.status_code == 401
    assert fal.get("/_sandbox/stats").json()["counters"]["accepted_creates"] == 0


def test_every_authorization_header_received_is_recorded_until_reset(fal: httpx.Client) -> None:
    submit(fal)
    httpx.get(f"{fal.base_url}/fal-ai/minimax/requests/x/status", headers={"Authorization": "a"})

    seen = fal.get("/_sandbox/stats").json()["authorizations"]
    fal.post("/_sandbox/reset").raise_for_status()

    assert seen == [f"Key {FAL_KEY}", "a"]
    assert fal.get("/_sandbox/stats").json()["authorizations"] == []


@pytest.mark.parametrize(
    ("path", "fields", "message"),
    [
        (PRO_I2V, {"duration": "6"}, "duration"),  # fal's 1080P endpoints take no duration
        (I2V, {"image_url": None}, "image_url"),
        (T2V, {}, "image_url"),
        (I2V, {"duration": 6}, "duration"),
    ],
)
def test_invalid_inputs_are_queued_and_refused_in_the_result(
    fal: httpx.Client, path: str, fields: dict[str, Any], message: str
) -> None:
    knobs(fal, queue_s=0, complete_after_s=0)
    created = submit(fal, path, **fields)

    assert fal.get(created["status_url"]).json()["status"] == "COMPLETED"
    answer = fal.get(created["response_url"])
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", message]


def test_a_content_refusal_is_a_model_error_in_the_result(fal: httpx.Client) -> None:
    knobs(fal, queue_s=0, complete_after_s=0)
    created = submit(fal, prompt="a fox [sandbox:content]")

    answer = fal.get(created["response_url"])

    assert answer.status_code == 422
    assert answer.json()["detail"][0]["type"] == "content_policy_violation"


def test_a_failed_generation_is_a_request_error_in_the_result(fal: httpx.Client) -> None:
    knobs(fal, queue_s=0, complete_after_s=0)
    created = submit(fal, prompt="a fox [sandbox:fail]")

    answer = fal.get(created["response_url"])

    assert answer.status_code == 500
    assert answer.headers["X-Fal-Error-Type"] == "runner_server_error"
    assert answer.json() == {"detail": FAILURE_MESSAGE, "error_type": "runner_server_error"}


def test_a_data_uri_image_is_taken(fal: httpx.Client) -> None:
    knobs(fal, queue_s=0, complete_after_s=0)
    created = submit(fal, image_url="data:image/png;base64,iVBORw0KGgo=")

    assert fal.get(created["response_url"]).status_code == 200


def test_the_url_base_knob_announces_urls_on_another_origin(fal: httpx.Client) -> None:
    knobs(fal, url_base="http://127.0.0.1:9")

    created = submit(fal)

    assert created["status_url"].startswith("http://127.0.0.1:9/fal-ai/minimax/requests/")
    assert created["response_url"].startswith("http://127.0.0.1:9/")


@pytest.mark.parametrize(
    "path",
    ["/fal-ai/minimax/hailuo-2.3-fast/standard/text-to-video", "/fal-ai/minimax/hailuo-9/pro/x"],
)
def test_an_endpoint_fal_does_not_have_is_404(fal: httpx.Client, path: str) -> None:
    answer = fal.post(path, json={"prompt": "p"})

    assert answer.status_code == 404


@pytest.mark.parametrize(
    ("fault", "status"),
    [("http_429", 429), ("html_502", 502), ("http_403", 403), ("http_402", 402), ("http_500", 500)],
)
def test_create_faults_answer_before_anything_is_queued(
    fal: httpx.Client, fault: str, status: int
) -> None:
    knobs(fal, create_fault=fault)

    answer = fal.post(I2V, json={"prompt": "p", "image_url": IMAGE})

    assert answer.status_code == status
    assert fal.get("/_sandbox/tasks").json()["tasks"] == []
    if fault == "http_429":
        assert answer.headers["Retry-After"] == "2"


def test_status_of_an_unknown_request_is_404(fal: httpx.Client) -> None:
    assert fal.get("/fal-ai/minimax/requests/nope/status").status_code == 404
    assert fal.get("/fal-ai/minimax/requests/nope").status_code == 404


@pytest.mark.parametrize(
    ("prompt", "status", "payload_key"),
    [("a fox", "OK", "video"), ("a fox [sandbox:content]", "ERROR", "detail")],
)
async def test_a_fal_webhook_on_the_submit_receives_the_finished_run_once(
    prompt: str, status: str, payload_key: str
) -> None:
    received: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(200)

    knobs_ = Knobs(queue_s=0, complete_after_s=0.2)
    async with Sandbox(SandboxConfig(knobs=knobs_)) as sandbox, httpx.AsyncClient() as client:
        sandbox.fal.state.outbound = httpx.MockTransport(receiver)
        hook = "https://gw.example/callbacks/fal/tok"
        answer = await client.post(
            f"{sandbox.fal.url}{I2V}",
            params={"fal_webhook": hook},
            json={"prompt": prompt, "image_url": IMAGE},
            headers={"Authorization": f"Key {sandbox.config.fal_key}"},
        )
        assert answer.status_code == 200
        assert received == []  # not before the run ends
        await asyncio.sleep(0.6)

    assert [str(r.url) for r in received] == [hook]
    body = json.loads(received[0].content)
    assert (body["request_id"], body["status"]) == (answer.json()["request_id"], status)
    assert payload_key in body["payload"]
    assert sandbox.fal.state.counters.callbacks_sent == 1
