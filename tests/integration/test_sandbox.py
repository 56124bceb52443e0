"""The simulated resellers over real HTTP: ``python -m providers.sandbox`` as a subprocess.

Each test resets the sandbox first (``POST /_sandbox/reset``) and turns the knobs it needs.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from providers.sandbox.engine import FAILURE_MESSAGE
from providers.sandbox.ready import format_line, parse_ready_line
from providers.sandbox.server import Sandbox, SandboxConfig
from tests.sandbox_process import (
    AIO_CREATE,
    APIINONE_KEY,
    FAST,
    IMAGE,
    RUNAPI_CREATE,
    RUNAPI_KEY,
    Running,
    aio_body,
    auth,
    counters,
    poll_statuses,
    runapi_body,
    set_knobs,
    start_sandbox,
    stop_sandbox,
)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Running]:
    running = start_sandbox("--log-level=error")
    yield running
    stop_sandbox(running)


@pytest.fixture
def runapi(sandbox: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.runapi_url, timeout=5, headers=auth(RUNAPI_KEY)) as client:
        client.post("/_sandbox/reset").raise_for_status()
        yield client


@pytest.fixture
def aio(sandbox: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.apiinone_url, timeout=5, headers=auth(APIINONE_KEY)) as c:
        c.post("/_sandbox/reset").raise_for_status()
        yield c


# --- progression -------------------------------------------------------------------------


def test_runapi_task_goes_pending_processing_completed_with_a_video(runapi: httpx.Client) -> None:
    set_knobs(runapi, **FAST)
    created = runapi.post(RUNAPI_CREATE, json=runapi_body())
    assert created.status_code == 200
    assert created.json() == {"id": created.json()["id"], "status": "pending"}

    seen = poll_statuses(runapi, f"{RUNAPI_CREATE}/{created.json()['id']}")
    statuses = [s["status"] for s in seen]
    assert statuses[0] == "pending"
    assert "processing" in statuses
    final = seen[-1]
    assert final["status"] == "completed"
    assert final["error"] is None
    assert final["usage"]["cost_cents"] == 30
    video = final["videos"][0]["url"]
    assert video == f"{runapi.base_url}/files/{created.json()['id']}.mp4"
    assert httpx.get(video).content[4:8] == b"ftyp"


def test_runapi_serves_status_on_the_short_path_too(runapi: httpx.Client) -> None:
    task_id = runapi.post(RUNAPI_CREATE, json=runapi_body()).json()["id"]
    short = runapi.get(f"/api/v1/hailuo/{task_id}")
    assert short.status_code == 200
    assert short.json()["id"] == task_id


def test_apiinone_task_goes_pending_in_progress_completed_with_a_video(aio: httpx.Client) -> None:
    set_knobs(aio, **FAST)
    created = aio.post(AIO_CREATE, json=aio_body(model="hailuo-2-3", callback_url=IMAGE))
    assert created.status_code == 200
    envelope = created.json()
    assert (envelope["code"], envelope["message"]) == (200, "success")
    assert envelope["data"]["status"] == "IN_PROGRESS"
    task_id = envelope["data"]["task_id"]
    assert task_id.endswith("_hailuo")

    seen = poll_statuses(aio, f"/api/v1/tasks/{task_id}")
    statuses = [s["data"]["status"] for s in seen]
    assert statuses[0] == "PENDING"
    assert "IN_PROGRESS" in statuses
    final = seen[-1]["data"]
    assert final["status"] == "COMPLETED"
    assert final["output"]["video_url"] == f"{aio.base_url}/files/{task_id}.mp4"
    assert final["error"] is None


def test_fail_marker_ends_failed_with_the_render_error(
    runapi: httpx.Client, aio: httpx.Client
) -> None:
    set_knobs(runapi, **FAST)
    set_knobs(aio, **FAST)
    prompt = "a fox [sandbox:fail]"
    run_id = runapi.post(RUNAPI_CREATE, json=runapi_body(prompt=prompt)).json()["id"]
    aio_id = aio.post(AIO_CREATE, json=aio_body(prompt=prompt)).json()["data"]["task_id"]

    run_final = poll_statuses(runapi, f"{RUNAPI_CREATE}/{run_id}")[-1]
    aio_final = poll_statuses(aio, f"/api/v1/tasks/{aio_id}")[-1]["data"]
    assert (run_final["status"], run_final["error"], run_final["videos"]) == (
        "failed",
        FAILURE_MESSAGE,
        [],
    )
    assert run_final["usage"]["cost_cents"] == 0
    assert (aio_final["status"], aio_final["error"], aio_final["output"]) == (
        "FAILED",
        FAILURE_MESSAGE,
        None,
    )


def test_failed_outcome_knob_fails_every_task(runapi: httpx.Client) -> None:
    set_knobs(runapi, task_outcome="failed", queue_s=0, complete_after_s=0)
    task_id = runapi.post(RUNAPI_CREATE, json=runapi_body()).json()["id"]
    assert runapi.get(f"{RUNAPI_CREATE}/{task_id}").json()["status"] == "failed"


def test_slow_marker_never_completes(aio: httpx.Client) -> None:
    set_knobs(aio, queue_s=0, complete_after_s=0)
    created = aio.post(AIO_CREATE, json=aio_body(prompt="[sandbox:slow] a fox"))
    time.sleep(0.1)
    status = aio.get(f"/api/v1/tasks/{created.json()['data']['task_id']}").json()["data"]
    assert status["status"] == "IN_PROGRESS"
    assert status["output"] is None


def test_unknown_task_is_404_in_each_resellers_format(
    runapi: httpx.Client, aio: httpx.Client
) -> None:
    run_answer = runapi.get(f"{RUNAPI_CREATE}/no-such-task")
    aio_answer = aio.get("/api/v1/tasks/no-such-task")
    assert run_answer.status_code == 404
    assert run_answer.json()["error"]["code"] == "not_found"
    assert aio_answer.status_code == 404
    assert aio_answer.json()["code"] == 404
    assert aio_answer.json()["data"] is None


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"image_url": IMAGE}, "image_url"),
        ({"duration": "6"}, "duration"),
        ({"resolution": "768P"}, "resolution"),
        ({"prompt_optimizer": True}, "prompt_optimizer"),
        ({"last_frame_image_url": IMAGE}, "last_frame_image_url"),
        ({"seed": 7}, "seed"),
        ({"duration_seconds": "6"}, "duration_seconds"),
        ({"duration_seconds": 8}, "duration_seconds"),
        ({"output_resolution": "768P"}, "output_resolution"),
        ({"duration_seconds": 10, "output_resolution": "1080p"}, "output_resolution"),
        ({"model": "hailuo-02-standard"}, "model"),
        ({"prompt": "x" * 5001}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"first_frame_image_url": None}, "first_frame_image_url"),
    ],
)
def test_runapi_refuses_invalid_bodies_naming_the_field(
    runapi: httpx.Client, fields: dict[str, Any], field: str
) -> None:
    answer = runapi.post(RUNAPI_CREATE, json=runapi_body(**fields))
    assert answer.status_code == 422
    assert answer.json()["error"] == "Validation failed"
    assert list(answer.json()["errors"]) == [field]
    assert counters(runapi)["accepted_creates"] == 0


def test_runapi_accepts_pro_at_1080p_for_6_seconds(runapi: httpx.Client) -> None:
    body = runapi_body(model="hailuo-2.3-image-to-video-pro", output_resolution="1080p")
    assert runapi.post(RUNAPI_CREATE, json=body).status_code == 200


def test_runapi_charges_its_balance_and_refuses_with_402_what_it_cannot_cover(
    runapi: httpx.Client,
) -> None:
    assert runapi.get("/api/v1/me/balance").json()["balance_cents"] > 10_000  # unlimited
    set_knobs(runapi, balance_cents=40)
    assert runapi.post(RUNAPI_CREATE, json=runapi_body()).status_code == 200  # 30 cents
    refused = runapi.post(RUNAPI_CREATE, json=runapi_body())
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "insufficient_credits"
    balance = runapi.get("/api/v1/me/balance").json()
    assert (balance["balance_cents"], balance["spent_cents_today"]) == (10, 30)
    assert counters(runapi)["accepted_creates"] == 1
    assert runapi.get("/api/v1/me/balance", headers=auth("wrong")).status_code == 401
    runapi.post("/_sandbox/reset").raise_for_status()
    assert runapi.get("/api/v1/me/balance").json()["balance_cents"] > 10_000


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"duration": 6}, "duration"),
        ({"resolution": "768p"}, "resolution"),
        ({"duration": "10", "resolution": "1080P"}, "resolution"),
        ({"model": "hailuo-2.3-image-to-video-standard"}, "model"),
        ({"image": None}, "image"),
        ({"prompt": None}, "prompt"),
        ({"image_url": IMAGE}, "image_url"),
    ],
)
def test_apiinone_refuses_invalid_bodies_naming_the_field(
    aio: httpx.Client, fields: dict[str, Any], field: str
) -> None:
    answer = aio.post(AIO_CREATE, json=aio_body(**fields))
    assert answer.status_code == 422
    assert answer.json()["code"] == 422
    assert answer.json()["data"] is None
    assert answer.json()["message"].startswith(f"invalid field: {field} ")


# --- auth and content --------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, auth("sk-wrong"), {"Authorization": RUNAPI_KEY}])
def test_runapi_refuses_a_missing_or_wrong_key(
    runapi: httpx.Client, headers: dict[str, str]
) -> None:
    runapi.headers.pop("Authorization")
    create = runapi.post(RUNAPI_CREATE, json=runapi_body(), headers=headers)
    status = runapi.get(f"{RUNAPI_CREATE}/any", headers=headers)
    unauthorized = {"error": {"code": "unauthorized", "message": "Invalid API key"}}
    assert (create.status_code, create.json()) == (401, unauthorized)
    assert (status.status_code, status.json()) == (401, unauthorized)


def test_apiinone_refuses_a_wrong_key(aio: httpx.Client) -> None:
    create = aio.post(AIO_CREATE, json=aio_body(), headers=auth(RUNAPI_KEY))
    status = aio.get("/api/v1/tasks/any", headers=auth(RUNAPI_KEY))
    assert create.status_code == status.status_code == 401
    assert create.json() == {"code": 401, "message": "Invalid API key", "data": None}


def test_content_marker_is_refused_at_create(runapi: httpx.Client, aio: httpx.Client) -> None:
    prompt = "a fox [sandbox:content]"
    run_answer = runapi.post(RUNAPI_CREATE, json=runapi_body(prompt=prompt))
    aio_answer = aio.post(AIO_CREATE, json=aio_body(prompt=prompt))
    assert run_answer.status_code == 422
    assert run_answer.json()["error"] == {
        "code": "content_policy_violation",
        "message": "prompt rejected by safety checker",
    }
    assert aio_answer.status_code == 422
    assert aio_answer.json() == {
        "code": 422,
        "message": "sensitive content detected in prompt",
        "data": None,
    }


# --- fault knobs -------------------------------------------------------------------------

RUNAPI_FAULTS = [
    ("http_500", 500, "internal_error"),
    ("http_503", 503, "service_unavailable"),
    ("http_429", 429, "rate_limited"),
    ("http_402", 402, "insufficient_credits"),
    ("http_401", 401, "unauthorized"),
    ("http_403", 403, "forbidden"),
    ("content", 422, "content_policy_violation"),
]


@pytest.mark.parametrize(("fault", "status", "code"), RUNAPI_FAULTS)
def test_runapi_create_fault_answers_its_documented_error(
    runapi: httpx.Client, fault: str, status: int, code: str
) -> None:
    set_knobs(runapi, create_fault=fault)
    answer = runapi.post(RUNAPI_CREATE, json=runapi_body())
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code
    assert counters(runapi) == {
        "create_calls": 1,
        "accepted_creates": 0,
        "status_calls": 0,
        "balance_calls": 0,
    }


AIO_FAULTS = [
    ("http_500", 500),
    ("http_503", 503),
    ("http_402", 402),
    ("http_401", 401),
    ("http_403", 403),
    ("http_400", 400),
    ("http_429", 429),
    ("content", 422),
]


@pytest.mark.parametrize(("fault", "status"), AIO_FAULTS)
def test_apiinone_create_fault_answers_its_envelope(
    aio: httpx.Client, fault: str, status: int
) -> None:
    set_knobs(aio, create_fault=fault)
    answer = aio.post(AIO_CREATE, json=aio_body())
    assert answer.status_code == status
    assert answer.json()["code"] == status
    assert answer.json()["data"] is None
    if fault == "http_402":
        assert answer.json()["message"] == "Insufficient credits"


def test_bad_request_fault_answers_a_plain_error_string(runapi: httpx.Client) -> None:
    set_knobs(runapi, create_fault="http_400")
    answer = runapi.post(RUNAPI_CREATE, json=runapi_body())
    assert (answer.status_code, answer.json()) == (400, {"error": "Bad request"})


def test_html_502_fault_answers_an_html_page(runapi: httpx.Client, aio: httpx.Client) -> None:
    for client, path, body in ((runapi, RUNAPI_CREATE, runapi_body()), (aio, AIO_CREATE, {})):
        set_knobs(client, create_fault="html_502")
        answer = client.post(path, json=body)
        assert answer.status_code == 502
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.text.lstrip().lower().startswith(("<html", "<!doctype html"))


def test_429_carries_the_retry_after_knob(runapi: httpx.Client, aio: httpx.Client) -> None:
    set_knobs(runapi, create_fault="http_429", retry_after="7")
    set_knobs(aio, create_fault="http_429")
    assert runapi.post(RUNAPI_CREATE, json=runapi_body()).headers["retry-after"] == "7"
    assert aio.post(AIO_CREATE, json=aio_body()).headers["retry-after"] == "2"
    set_knobs(runapi, retry_after=None)
    assert "retry-after" not in runapi.post(RUNAPI_CREATE, json=runapi_body()).headers


@pytest.mark.parametrize("reseller", ["runapi", "apiinone"])
def test_drop_closes_the_connection_without_an_answer(
    runapi: httpx.Client, aio: httpx.Client, reseller: str
) -> None:
    client, path = (runapi, RUNAPI_CREATE) if reseller == "runapi" else (aio, AIO_CREATE)
    set_knobs(client, create_fault="drop")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post(path, json=runapi_body() if reseller == "runapi" else aio_body())
    assert counters(client)["create_calls"] == 1
    assert counters(client)["accepted_creates"] == 0


def test_hang_outlasts_a_short_client_timeout_and_creates_nothing(aio: httpx.Client) -> None:
    set_knobs(aio, create_fault="hang", hang_s=5)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        aio.post(AIO_CREATE, json=aio_body(), timeout=0.3)
    assert time.monotonic() - started < 2
    time.sleep(0.1)  # the sandbox notices the hang-up
    assert counters(aio) == {
        "create_calls": 1,
        "accepted_creates": 0,
        "status_calls": 0,
        "balance_calls": 0,
    }


def test_hang_answers_normally_after_hang_s(runapi: httpx.Client) -> None:
    set_knobs(runapi, create_fault="hang", hang_s=0.3)
    started = time.monotonic()
    answer = runapi.post(RUNAPI_CREATE, json=runapi_body())
    assert answer.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_status_faults_answer_500_or_hang(runapi: httpx.Client, aio: httpx.Client) -> None:
    run_id = runapi.post(RUNAPI_CREATE, json=runapi_body()).json()["id"]
    set_knobs(runapi, status_fault="http_500")
    set_knobs(aio, status_fault="hang", hang_s=5)
    failed = runapi.get(f"{RUNAPI_CREATE}/{run_id}")
    assert (failed.status_code, failed.json()["error"]["code"]) == (500, "internal_error")
    with pytest.raises(httpx.ReadTimeout):
        aio.get("/api/v1/tasks/any", timeout=0.3)


def test_latency_knob_delays_every_answer(runapi: httpx.Client) -> None:
    set_knobs(runapi, latency_ms=250)
    started = time.monotonic()
    task_id = runapi.post(RUNAPI_CREATE, json=runapi_body()).json()["id"]
    runapi.get(f"{RUNAPI_CREATE}/{task_id}")
    assert time.monotonic() - started >= 0.5


# --- control endpoints -------------------------------------------------------------------


def test_counters_count_creates_accepted_creates_and_status_calls(runapi: httpx.Client) -> None:
    task_id = runapi.post(RUNAPI_CREATE, json=runapi_body()).json()["id"]
    runapi.post(RUNAPI_CREATE, json=runapi_body(duration_seconds="6"))
    runapi.get(f"{RUNAPI_CREATE}/{task_id}")
    runapi.get(f"/api/v1/hailuo/{task_id}")
    runapi.get(f"{RUNAPI_CREATE}/missing")
    stats = runapi.get("/_sandbox/stats").json()
    assert counters(runapi) == {
        "create_calls": 2,
        "accepted_creates": 1,
        "status_calls": 3,
        "balance_calls": 0,
    }
    assert (stats["reseller"], stats["tasks"]) == ("runapi", 1)


def test_tasks_lists_every_accepted_task_id_oldest_first(runapi: httpx.Client) -> None:
    first = runapi.post(RUNAPI_CREATE, json=runapi_body()).json()["id"]
    set_knobs(runapi, create_fault="http_500")
    assert runapi.post(RUNAPI_CREATE, json=runapi_body()).status_code == 500
    set_knobs(runapi, create_fault="none")
    refused = runapi.post(RUNAPI_CREATE, json=runapi_body(duration_seconds="6"))
    second = runapi.post(RUNAPI_CREATE, json=runapi_body()).json()["id"]
    assert refused.status_code == 422  # a string duration: refused, nothing billed
    assert runapi.get("/_sandbox/tasks").json() == {"reseller": "runapi", "tasks": [first, second]}
    runapi.post("/_sandbox/reset").raise_for_status()
    assert runapi.get("/_sandbox/tasks").json()["tasks"] == []


def test_reset_restores_knobs_and_forgets_tasks_and_counters(aio: httpx.Client) -> None:
    task_id = aio.post(AIO_CREATE, json=aio_body()).json()["data"]["task_id"]
    set_knobs(aio, create_fault="http_500", latency_ms=5)
    stats = aio.post("/_sandbox/reset").json()
    assert stats["knobs"]["create_fault"] == "none"
    assert stats["knobs"]["latency_ms"] == 0
    assert set(stats["counters"].values()) == {0}
    assert counters(aio) == {
        "create_calls": 0,
        "accepted_creates": 0,
        "status_calls": 0,
        "balance_calls": 0,
    }
    assert aio.get(f"/api/v1/tasks/{task_id}").status_code == 404


def test_knobs_update_is_partial_and_validated(runapi: httpx.Client) -> None:
    assert runapi.put("/_sandbox/knobs", json={"queue_s": 0.1}).json()["queue_s"] == 0.1
    refused = runapi.put("/_sandbox/knobs", json={"create_fault": "explode", "queue_s": 9})
    unknown = runapi.put("/_sandbox/knobs", json={"no_such_knob": 1})
    assert (refused.status_code, unknown.status_code) == (400, 400)
    knobs = runapi.get("/_sandbox/stats").json()["knobs"]
    assert (knobs["queue_s"], knobs["create_fault"]) == (0.1, "none")


def test_health_needs_no_key(sandbox: Running) -> None:
    answer = httpx.get(f"{sandbox.apiinone_url}/_sandbox/health")
    assert answer.json() == {"status": "ok", "reseller": "apiinone"}


# --- running it --------------------------------------------------------------------------


def test_sigterm_stops_the_sandbox_cleanly_even_with_a_request_hanging() -> None:
    running = start_sandbox("--log-level=error")
    with httpx.Client(base_url=running.runapi_url) as control:
        set_knobs(control, create_fault="hang", hang_s=60)
        host, port = running.runapi_url.removeprefix("http://").split(":")
        body = json.dumps(runapi_body()).encode()
        head = (
            f"POST {RUNAPI_CREATE} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {RUNAPI_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        with socket.create_connection((host, int(port))) as hung:
            hung.sendall(head.encode() + body)
            while counters(control)["create_calls"] == 0:
                time.sleep(0.02)
            started = time.monotonic()
            assert stop_sandbox(running) == 0
    assert time.monotonic() - started < 5


async def test_sandbox_runs_in_process_and_drops_connections_on_the_stock_loop() -> None:
    async with Sandbox(SandboxConfig()) as sandbox, httpx.AsyncClient() as client:
        runapi_url = sandbox.runapi.url
        created = await client.post(
            f"{runapi_url}{RUNAPI_CREATE}",
            json=runapi_body(),
            headers=auth(sandbox.config.runapi_key),
        )
        assert created.status_code == 200
        assert sandbox.runapi.state.counters.accepted_creates == 1
        sandbox.apiinone.state.update_knobs({"create_fault": "drop"})
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await client.post(f"{sandbox.apiinone.url}{AIO_CREATE}", json=aio_body())
    assert sandbox.ready_line.startswith("SANDBOX READY runapi=http://127.0.0.1:")


def test_ready_line_is_read_back_by_the_processes_that_start_the_sandbox() -> None:
    line = format_line("http://127.0.0.1:1", "http://127.0.0.1:2")
    assert parse_ready_line(line + "\n") == ("http://127.0.0.1:1", "http://127.0.0.1:2")
    assert parse_ready_line("Traceback (most recent call last):") is None
    assert parse_ready_line("SANDBOX READY runapi=http://127.0.0.1:1") is None
