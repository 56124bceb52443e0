"""The simulated MiniMax over real HTTP: wire format, HTTP-200 business errors, progression,
files/retrieve and the callback handshake."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from providers.sandbox.minimax import FILE_PREFIX
from tests.sandbox_process import (
    FAST,
    IMAGE,
    MINIMAX_KEY,
    Running,
    auth,
    counters,
    set_knobs,
    start_sandbox,
    stop_sandbox,
)

CREATE = "/v1/video_generation"
QUERY = "/v1/query/video_generation"
FILES = "/v1/files/retrieve"
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwAB"
    "BAEAfbLI3wAAAABJRU5ErkJggg=="
)


def body(**fields: Any) -> dict[str, Any]:
    base = {
        "model": "MiniMax-Hailuo-2.3",
        "prompt": "a red fox in snow",
        "duration": 6,
        "resolution": "768P",
    }
    return {k: v for k, v in {**base, **fields}.items() if v is not None}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Running]:
    running = start_sandbox("--log-level=error")
    yield running
    stop_sandbox(running)


@pytest.fixture
def minimax(sandbox: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.minimax_url, timeout=5, headers=auth(MINIMAX_KEY)) as c:
        c.post("/_sandbox/reset").raise_for_status()
        yield c


def code_of(answer: httpx.Response) -> int:
    assert answer.status_code == 200, answer.text
    code: int = answer.json()["base_resp"]["status_code"]
    return code


def test_text_to_video_goes_queueing_processing_success_then_files_retrieve_gives_the_url(
    minimax: httpx.Client,
) -> None:
    set_knobs(minimax, **FAST)
    created = minimax.post(CREATE, json=body())
    assert code_of(created) == 0
    task_id = created.json()["task_id"]
    seen: list[str] = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        status = minimax.get(QUERY, params={"task_id": task_id}).json()
        seen.append(status["status"])
        if status["status"] in ("Success", "Fail"):
            break
        time.sleep(0.05)
    assert seen[0] in ("Preparing", "Queueing")
    assert "Processing" in seen
    assert seen[-1] == "Success"
    assert status["file_id"] == FILE_PREFIX + task_id
    file = minimax.get(FILES, params={"file_id": status["file_id"]})
    assert code_of(file) == 0
    video = httpx.get(file.json()["file"]["download_url"])
    assert video.headers["content-type"] == "video/mp4"
    assert counters(minimax, every=True)["file_calls"] == 1


@pytest.mark.parametrize("image", [IMAGE, PNG], ids=["url", "data-uri"])
def test_fast_takes_a_first_frame_as_url_or_data_uri(minimax: httpx.Client, image: str) -> None:
    created = minimax.post(
        CREATE, json=body(model="MiniMax-Hailuo-2.3-Fast", first_frame_image=image)
    )
    assert code_of(created) == 0


@pytest.mark.parametrize(
    ("knob", "code"),
    [
        ({"create_fault": "http_429"}, 1002),
        ({"create_fault": "http_401"}, 1004),
        ({"create_fault": "http_402"}, 1008),
        ({"create_fault": "content"}, 1026),
        ({"create_fault": "http_400"}, 2013),
        ({"business_code": 1039}, 1039),
    ],
    ids=["1002", "1004", "1008", "1026", "2013", "1039"],
)
def test_each_business_error_is_http_200_with_its_code_and_creates_nothing(
    minimax: httpx.Client, knob: dict[str, Any], code: int
) -> None:
    set_knobs(minimax, **knob)
    assert code_of(minimax.post(CREATE, json=body())) == code
    assert counters(minimax) == {
        "create_calls": 1,
        "accepted_creates": 0,
        "status_calls": 0,
        "balance_calls": 0,
    }


def test_a_prompt_marker_picks_one_tasks_business_error(minimax: httpx.Client) -> None:
    assert code_of(minimax.post(CREATE, json=body(prompt="x [sandbox:code=1008]"))) == 1008
    assert code_of(minimax.post(CREATE, json=body(prompt="x [sandbox:content]"))) == 1026
    assert code_of(minimax.post(CREATE, json=body())) == 0


def test_a_wrong_key_is_1004_under_http_200(minimax: httpx.Client) -> None:
    answer = minimax.post(CREATE, json=body(), headers=auth("wrong"))
    assert code_of(answer) == 1004


@pytest.mark.parametrize(
    "wire",
    [
        body(model="MiniMax-Hailuo-2.3-Fast"),
        body(duration=10, resolution="1080P"),
        body(duration="6"),
        body(tier="pro"),
        body(model="MiniMax-Hailuo-02"),
    ],
    ids=["fast-without-image", "10s-1080P", "string-duration", "unknown-field", "other-model"],
)
def test_an_invalid_body_is_2013(minimax: httpx.Client, wire: dict[str, Any]) -> None:
    assert code_of(minimax.post(CREATE, json=wire)) == 2013


def test_edge_faults_stay_real_http_errors(minimax: httpx.Client) -> None:
    set_knobs(minimax, create_fault="http_503")
    assert minimax.post(CREATE, json=body()).status_code == 503
    set_knobs(minimax, create_fault="html_502")
    assert minimax.post(CREATE, json=body()).status_code == 502


class _Receiver(BaseHTTPRequestHandler):
    """Echoes a challenge (unless told not to) and keeps every body it got."""

    echo = True
    bodies: list[dict[str, Any]]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        payload = json.loads(self.rfile.read(length))
        self.server.bodies.append(payload)  # type: ignore[attr-defined]
        echo = self.server.echo  # type: ignore[attr-defined]
        answer = {"challenge": payload["challenge"]} if "challenge" in payload and echo else {}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.bodies = []  # type: ignore[attr-defined]
    server.echo = True  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_callback_url_gets_the_challenge_before_the_create_answers_then_one_status(
    minimax: httpx.Client, receiver: ThreadingHTTPServer
) -> None:
    set_knobs(minimax, **FAST)
    url = f"http://127.0.0.1:{receiver.server_address[1]}/cb"
    created = minimax.post(CREATE, json=body(callback_url=url))
    bodies: list[dict[str, Any]] = receiver.bodies  # type: ignore[attr-defined]
    assert code_of(created) == 0
    assert list(bodies[0]) == ["challenge"]  # it came before the create answered
    deadline = time.monotonic() + 3
    while len(bodies) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bodies[1]["task_id"] == created.json()["task_id"]
    assert bodies[1]["status"] == "Success"
    seen = counters(minimax, every=True)
    assert (seen["challenges_sent"], seen["challenges_echoed"], seen["callbacks_sent"]) == (1, 1, 1)


def test_a_callback_url_that_does_not_echo_fails_the_create(
    minimax: httpx.Client, receiver: ThreadingHTTPServer
) -> None:
    receiver.echo = False  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{receiver.server_address[1]}/cb"
    assert code_of(minimax.post(CREATE, json=body(callback_url=url))) == 2013
    assert counters(minimax)["accepted_creates"] == 0
