"""MiniMax adapter: wire body, HTTP-200 business errors, query + files/retrieve, against respx."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import respx
from pydantic import SecretStr

from providers.base import Duration, Provider, ProviderSettings, Resolution, TaskStatus
from providers.errors import (
    AccountError,
    ContentRejected,
    OutcomeUnknown,
    ProviderError,
    RateLimited,
    RequestRejected,
    UpstreamServerError,
)
from providers.minimax import MiniMaxProvider, failed_status, to_wire
from tests.unit.adapter_helpers import IMAGE, KEY, VIDEO, job, mockable

BASE = "https://minimax.test"
CREATE = "/v1/video_generation"
QUERY = "/v1/query/video_generation"
FILES = "/v1/files/retrieve"
TASK_ID = "106916112212032"
FILE_ID = "205258526306433"
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwAB"
    "BAEAfbLI3wAAAABJRU5ErkJggg=="
)
OK = {"status_code": 0, "status_msg": "success"}


def business(code: int, message: str) -> dict[str, object]:
    return {"task_id": "", "base_resp": {"status_code": code, "status_msg": message}}


@pytest.fixture
def settings() -> ProviderSettings:
    return ProviderSettings(name="mm-main", base_url=BASE, api_key=SecretStr(KEY))


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def provider(
    settings: ProviderSettings, mock: respx.MockRouter
) -> AsyncIterator[MiniMaxProvider]:
    adapter = MiniMaxProvider(settings, transport=mockable())
    yield adapter
    await adapter.aclose()


# --- the wire body ---------------------------------------------------------------------------


@pytest.mark.parametrize(("duration", "resolution"), [(6, "768P"), (10, "768P"), (6, "1080P")])
async def test_create_sends_image_to_video_with_documented_fields(
    provider: MiniMaxProvider, mock: respx.MockRouter, duration: Duration, resolution: Resolution
) -> None:
    mock.post(CREATE).respond(200, json={"task_id": TASK_ID, "base_resp": OK})

    submitted = await provider.create(job(duration=duration, resolution=resolution))

    request = mock.calls.last.request
    assert json.loads(request.content) == {
        "model": "MiniMax-Hailuo-2.3",
        "prompt": "a cat surfs a wave",
        "first_frame_image": IMAGE,
        "duration": duration,
        "resolution": resolution,
    }
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert submitted.upstream_id == TASK_ID
    assert submitted.status is TaskStatus.QUEUED


async def test_text_to_video_sends_no_first_frame_image(
    provider: MiniMaxProvider, mock: respx.MockRouter
) -> None:
    mock.post(CREATE).respond(200, json={"task_id": TASK_ID, "base_resp": OK})

    await provider.create(job(image=None))

    body = json.loads(mock.calls.last.request.content)
    assert "first_frame_image" not in body
    assert body["model"] == "MiniMax-Hailuo-2.3"


async def test_a_data_uri_image_is_sent_as_it_is(
    provider: MiniMaxProvider, mock: respx.MockRouter
) -> None:
    mock.post(CREATE).respond(200, json={"task_id": TASK_ID, "base_resp": OK})

    await provider.create(job(image=PNG))

    assert json.loads(mock.calls.last.request.content)["first_frame_image"] == PNG


def test_fast_is_sent_as_minimax_fast_model_with_its_image_and_callback() -> None:
    wire = to_wire(job(model="hailuo-2.3-fast", callback_url="https://gw.example/callbacks/m/t"))

    assert wire["model"] == "MiniMax-Hailuo-2.3-Fast"
    assert wire["first_frame_image"] == IMAGE
    assert wire["callback_url"] == "https://gw.example/callbacks/m/t"
    assert "callback_url" not in to_wire(job())


async def test_fast_without_an_image_is_refused_before_any_call(
    provider: MiniMaxProvider, mock: respx.MockRouter
) -> None:
    route = mock.post(CREATE)

    with pytest.raises(RequestRejected, match="image-to-video only"):
        await provider.create(job(model="hailuo-2.3-fast", image=None))

    assert route.call_count == 0


def test_adapter_satisfies_the_provider_protocol(settings: ProviderSettings) -> None:
    adapter = MiniMaxProvider(settings)
    assert isinstance(adapter, Provider)
    assert (adapter.kind, adapter.text_to_video, adapter.data_uri_images) == (
        "minimax", True, True,
    )  # fmt: skip
    assert adapter.models == ("hailuo-2.3", "hailuo-2.3-fast")


# --- business errors under HTTP 200 ---------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "error", "failover"),
    [
        (1002, "rate limit exceeded", RateLimited, True),
        (1004, "authorization failure, check your api key", AccountError, True),
        (1008, "insufficient balance", AccountError, True),
        (1026, "input new_sensitive", ContentRejected, False),
        (2013, "invalid params, duration", RequestRejected, False),
        (1039, "token limit", RequestRejected, False),
    ],
    ids=["1002-rate", "1004-auth", "1008-balance", "1026-content", "2013-params", "1039-other"],
)
async def test_create_maps_each_business_error_under_http_200(
    provider: MiniMaxProvider,
    mock: respx.MockRouter,
    code: int,
    message: str,
    error: type[ProviderError],
    failover: bool,
) -> None:
    mock.post(CREATE).respond(200, json=business(code, message))

    with pytest.raises(error) as caught:
        await provider.create(job())

    assert type(caught.value) is error
    assert caught.value.failover is failover
    assert caught.value.upstream_code == str(code)
    assert message in caught.value.message


async def test_an_undocumented_business_code_is_reported_with_its_code(
    provider: MiniMaxProvider, mock: respx.MockRouter
) -> None:
    mock.post(CREATE).respond(200, json=business(1039, "token limit"))

    with pytest.raises(RequestRejected) as caught:
        await provider.create(job())

    assert "1039" in caught.value.message


async def test_invalid_params_mentioning_content_is_still_an_upstream_rejection(
    provider: MiniMaxProvider, mock: respx.MockRouter
) -> None:
    mock.post(CREATE).respond(200, json=business(2013, "invalid params: content too long"))

    with pytest.raises(RequestRejected):
        await provider.create(job())


def test_failed_status_trusts_an_http_failure_over_a_success_body() -> None:
    assert failed_status(503, {"base_resp": OK}) == 503
    assert failed_status(200, {"base_resp": OK}) is None
    assert failed_status(200, {"task_id": TASK_ID}) is None
    assert failed_status(200, business(1008, "x")) == 402
    assert failed_status(200, business(4242, "x")) == 400


@pytest.mark.parametrize(
    ("http_status", "body", "error"),
    [
        (
            500,
            {"base_resp": {"status_code": 1000, "status_msg": "unknown error"}},
            UpstreamServerError,
        ),
        (502, "<html><body>502 Bad Gateway</body></html>", UpstreamServerError),
        (429, {"base_resp": {"status_code": 1002, "status_msg": "rate limit"}}, RateLimited),
        (200, "<html>not json</html>", OutcomeUnknown),
        (200, {"base_resp": OK}, OutcomeUnknown),
    ],
    ids=["http-500", "html-502", "http-429", "200-html", "200-no-task-id"],
)
async def test_create_maps_http_failures_and_unreadable_answers(
    provider: MiniMaxProvider,
    mock: respx.MockRouter,
    http_status: int,
    body: object,
    error: type[ProviderError],
) -> None:
    route = mock.post(CREATE)
    if isinstance(body, str):
        route.respond(http_status, text=body, headers={"Content-Type": "text/html"})
    else:
        route.respond(http_status, json=body)

    with pytest.raises(error):
        await provider.create(job())


# --- status: query, then files/retrieve ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Preparing", TaskStatus.QUEUED),
        ("Queueing", TaskStatus.QUEUED),
        ("Processing", TaskStatus.IN_PROGRESS),
        ("Fail", TaskStatus.FAILED),
        ("Rendering", TaskStatus.IN_PROGRESS),
    ],
)
async def test_status_maps_each_documented_word(
    provider: MiniMaxProvider, mock: respx.MockRouter, raw: str, expected: TaskStatus
) -> None:
    mock.get(QUERY, params={"task_id": TASK_ID}).respond(
        200, json={"task_id": TASK_ID, "status": raw, "base_resp": OK}
    )
    files = mock.get(FILES)

    status = await provider.status(TASK_ID)

    assert status.status is expected
    assert status.raw_status == raw
    assert files.call_count == 0


async def test_success_reads_the_download_url_from_files_retrieve(
    provider: MiniMaxProvider, mock: respx.MockRouter
) -> None:
    mock.get(QUERY, params={"task_id": TASK_ID}).respond(
        200, json={"task_id": TASK_ID, "status": "Success", "file_id": FILE_ID, "base_resp": OK}
    )
    files = mock.get(FILES, params={"file_id": FILE_ID}).respond(
        200, json={"file": {"file_id": FILE_ID, "download_url": VIDEO}, "base_resp": OK}
    )

    status = await provider.status(TASK_ID)

    assert status.status is TaskStatus.COMPLETED
    assert status.video_url == VIDEO
    assert files.call_count == 1
    assert files.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"


async def test_success_without_a_file_id_stays_in_progress_and_is_logged(
    provider: MiniMaxProvider, mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    mock.get(QUERY).respond(200, json={"task_id": TASK_ID, "status": "Success", "base_resp": OK})

    with caplog.at_level(logging.WARNING, logger="providers.minimax"):
        status = await provider.status(TASK_ID)

    assert status.status is TaskStatus.IN_PROGRESS
    assert "file_id" in caplog.text


async def test_a_failed_files_retrieve_fails_the_status_read(
    provider: MiniMaxProvider, mock: respx.MockRouter
) -> None:
    mock.get(QUERY).respond(
        200, json={"task_id": TASK_ID, "status": "Success", "file_id": FILE_ID, "base_resp": OK}
    )
    mock.get(FILES).respond(200, json={"base_resp": {"status_code": 1004, "status_msg": "auth"}})

    with pytest.raises(AccountError):
        await provider.status(TASK_ID)


async def test_a_files_answer_without_a_url_is_unreadable(
    provider: MiniMaxProvider, mock: respx.MockRouter
) -> None:
    mock.get(QUERY).respond(
        200, json={"task_id": TASK_ID, "status": "Success", "file_id": FILE_ID, "base_resp": OK}
    )
    mock.get(FILES).respond(200, json={"file": {"file_id": FILE_ID}, "base_resp": OK})

    with pytest.raises(OutcomeUnknown, match="download_url"):
        await provider.status(TASK_ID)


async def test_a_failed_generation_mentioning_sensitive_content_is_a_content_refusal(
    provider: MiniMaxProvider, mock: respx.MockRouter
) -> None:
    mock.get(QUERY).respond(
        200,
        json={
            "task_id": TASK_ID,
            "status": "Fail",
            "error_message": "output sensitive",
            "base_resp": OK,
        },
    )

    status = await provider.status(TASK_ID)

    assert (status.status, status.error_code) == (TaskStatus.FAILED, "content_rejected")


async def test_a_business_error_on_the_query_is_mapped_like_on_create(
    provider: MiniMaxProvider, mock: respx.MockRouter
) -> None:
    mock.get(QUERY).respond(200, json=business(1002, "rate limit"))

    with pytest.raises(RateLimited):
        await provider.status(TASK_ID)
