"""API in One adapter: wire body, envelope, status and URL lookup, against respx-mocked HTTP."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import respx

from providers.apiinone import APIInOneProvider, envelope_failure, parse_error, to_wire
from providers.base import Duration, Provider, ProviderSettings, Resolution, TaskStatus, Tier
from providers.errors import (
    AccountError,
    ContentRejected,
    NotTaken,
    OutcomeUnknown,
    ProviderError,
    RequestRejected,
    TaskNotFound,
    UpstreamServerError,
)
from tests.unit.adapter_helpers import (
    APIINONE,
    IMAGE,
    KEY,
    VIDEO,
    answer,
    envelope,
    job,
    mockable,
    upstream,
)

CREATE = APIINONE.create
TASK_ID = APIINONE.task_id
STATUS = APIINONE.status
HTML_503 = "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"

COMBOS: list[tuple[Tier, Duration, Resolution, str, str]] = [
    ("standard", 6, "768P", "hailuo/2-3-image-to-video-standard", "6"),
    ("standard", 10, "768P", "hailuo/2-3-image-to-video-standard", "10"),
    ("standard", 6, "1080P", "hailuo/2-3-image-to-video-standard", "6"),
    ("pro", 6, "768P", "hailuo/2-3-image-to-video-pro", "6"),
    ("pro", 10, "768P", "hailuo/2-3-image-to-video-pro", "10"),
    ("pro", 6, "1080P", "hailuo/2-3-image-to-video-pro", "6"),
]

CREATED = APIINONE.task


@pytest.fixture
def settings() -> ProviderSettings:
    return APIINONE.settings()


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with upstream(APIINONE) as router:
        yield router


@pytest.fixture
async def provider(
    settings: ProviderSettings, mock: respx.MockRouter
) -> AsyncIterator[APIInOneProvider]:
    adapter = APIInOneProvider(settings, transport=mockable())
    yield adapter
    await adapter.aclose()


# --- the wire body ---------------------------------------------------------------------------


@pytest.mark.parametrize(("tier", "duration", "resolution", "model", "wire_duration"), COMBOS)
async def test_create_sends_documented_fields_for_each_tier_duration_and_resolution(
    provider: APIInOneProvider,
    mock: respx.MockRouter,
    tier: Tier,
    duration: Duration,
    resolution: Resolution,
    model: str,
    wire_duration: str,
) -> None:
    mock.post(CREATE).respond(200, json=CREATED)

    await provider.create(job(tier=tier, duration=duration, resolution=resolution))

    request = mock.calls.last.request
    assert json.loads(request.content) == {
        "model": model,
        "prompt": "a cat surfs a wave",
        "image": IMAGE,
        "duration": wire_duration,
        "resolution": resolution,
    }
    assert request.headers["Authorization"] == f"Bearer {KEY}"


def test_to_wire_sends_duration_as_string_and_callback_only_when_set() -> None:
    with_callback = to_wire(job(duration=10, callback_url="https://hooks.example/cb"))
    without = to_wire(job())

    assert with_callback["duration"] == "10"
    assert with_callback["callback_url"] == "https://hooks.example/cb"
    assert "callback_url" not in without
    assert not {"first_frame_image_url", "image_url", "duration_seconds"} & without.keys()


async def test_create_reads_the_task_id_from_the_envelope(
    provider: APIInOneProvider, mock: respx.MockRouter
) -> None:
    mock.post(CREATE).respond(200, json=CREATED)

    submitted = await provider.create(job())

    assert submitted.upstream_id == TASK_ID
    assert submitted.status is TaskStatus.IN_PROGRESS
    assert submitted.raw_status == "IN_PROGRESS"


def test_adapter_satisfies_the_provider_protocol(settings: ProviderSettings) -> None:
    adapter = APIInOneProvider(settings)
    assert isinstance(adapter, Provider)
    assert (adapter.kind, adapter.text_to_video) == ("apiinone", False)
    assert adapter.name == "aio-main"


# --- status ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("PENDING", TaskStatus.QUEUED),
        ("QUEUED", TaskStatus.QUEUED),
        ("SUBMITTED", TaskStatus.QUEUED),
        ("pending", TaskStatus.QUEUED),
        ("IN_PROGRESS", TaskStatus.IN_PROGRESS),
        ("PROCESSING", TaskStatus.IN_PROGRESS),
        ("RUNNING", TaskStatus.IN_PROGRESS),
        ("in_progress", TaskStatus.IN_PROGRESS),
        ("COMPLETED", TaskStatus.COMPLETED),
        ("SUCCESS", TaskStatus.COMPLETED),
        ("SUCCEEDED", TaskStatus.COMPLETED),
        ("completed", TaskStatus.COMPLETED),
        ("FAILED", TaskStatus.FAILED),
        ("ERROR", TaskStatus.FAILED),
        ("FAILURE", TaskStatus.FAILED),
        ("failed", TaskStatus.FAILED),
    ],
)
async def test_status_maps_each_documented_status_case_insensitively(
    provider: APIInOneProvider, mock: respx.MockRouter, raw: str, expected: TaskStatus
) -> None:
    data = {"task_id": TASK_ID, "status": raw, "output": {"video_url": VIDEO}, "error": "boom"}
    mock.get(STATUS).respond(200, json=envelope(data))

    status = await provider.status(TASK_ID)

    assert status.status is expected
    assert status.raw_status == raw
    assert (status.video_url == VIDEO) is (expected is TaskStatus.COMPLETED)


async def test_status_of_unknown_word_is_in_progress_and_logged(
    provider: APIInOneProvider, mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    mock.get(STATUS).respond(200, json=envelope({"task_id": TASK_ID, "status": "RENDERING"}))

    with caplog.at_level(logging.WARNING, logger="providers.apiinone"):
        status = await provider.status(TASK_ID)

    assert status.status is TaskStatus.IN_PROGRESS
    assert "RENDERING" in caplog.text


@pytest.mark.parametrize(
    "data",
    [
        {"output": {"video_url": VIDEO}},
        {"video_url": VIDEO},
        {"result": {"video_url": VIDEO}},
        {"result": {"urls": [VIDEO, "https://cdn.example/other.mp4"]}},
        {"resultUrls": [VIDEO]},
    ],
    ids=["output.video_url", "video_url", "result.video_url", "result.urls", "resultUrls"],
)
async def test_status_finds_the_video_url_in_each_known_location(
    provider: APIInOneProvider, mock: respx.MockRouter, data: dict[str, object]
) -> None:
    mock.get(STATUS).respond(200, json=envelope({"task_id": TASK_ID, "status": "SUCCESS", **data}))

    status = await provider.status(TASK_ID)

    assert status.status is TaskStatus.COMPLETED
    assert status.video_url == VIDEO


async def test_status_prefers_output_video_url_over_later_locations(
    provider: APIInOneProvider, mock: respx.MockRouter
) -> None:
    data = {
        "status": "COMPLETED",
        "resultUrls": ["https://cdn.example/late.mp4"],
        "video_url": "https://cdn.example/second.mp4",
        "output": {"video_url": VIDEO},
    }
    mock.get(STATUS).respond(200, json=envelope(data))

    status = await provider.status(TASK_ID)

    assert status.video_url == VIDEO


async def test_status_completed_without_url_stays_in_progress_and_logs_keys_not_values(
    provider: APIInOneProvider, mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    data = {"task_id": TASK_ID, "status": "COMPLETED", "media": {"mp4": VIDEO}, "result": None}
    mock.get(STATUS).respond(200, json=envelope(data))

    with caplog.at_level(logging.WARNING, logger="providers.apiinone"):
        status = await provider.status(TASK_ID)

    assert status.status is TaskStatus.IN_PROGRESS
    assert status.raw_status == "COMPLETED"
    assert status.video_url is None
    assert "media: {mp4}" in caplog.text
    assert VIDEO not in caplog.text
    assert TASK_ID not in caplog.text


@pytest.mark.parametrize(
    ("data", "code", "message"),
    [
        ({"error": "render crashed"}, "generation_failed", "render crashed"),
        (
            {"error": {"code": "E1", "message": "GPU fell over"}},
            "generation_failed",
            "GPU fell over",
        ),
        ({"error_message": "NSFW image detected"}, "content_rejected", "NSFW image detected"),
        ({"fail_reason": "blocked by moderation"}, "content_rejected", "blocked by moderation"),
        ({"error": {"code": "sensitive_content", "message": "no"}}, "content_rejected", "no"),
        ({}, "generation_failed", None),
    ],
)
async def test_status_failed_carries_the_reason_and_flags_content_refusals(
    provider: APIInOneProvider,
    mock: respx.MockRouter,
    data: dict[str, object],
    code: str,
    message: str | None,
) -> None:
    mock.get(STATUS).respond(200, json=envelope({"status": "FAILED", **data}))

    status = await provider.status(TASK_ID)

    assert status.status is TaskStatus.FAILED
    assert status.error_code == code
    assert status.error_message == message


@pytest.mark.parametrize("body", [envelope(None), envelope({"task_id": TASK_ID}), {"data": []}])
async def test_status_answer_without_a_status_is_outcome_unknown(
    provider: APIInOneProvider, mock: respx.MockRouter, body: object
) -> None:
    mock.get(STATUS).respond(200, json=body)

    with pytest.raises(OutcomeUnknown):
        await provider.status(TASK_ID)


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("http_status", "body", "expected", "failover"),
    [
        (400, envelope(None, 400, "image is required"), RequestRejected, False),
        (422, envelope(None, 422, "duration must be 6 or 10"), RequestRejected, False),
        (422, envelope(None, 422, "sensitive content detected in prompt"), ContentRejected, False),
        (400, envelope(None, 400, "Image blocked by safety filter"), ContentRejected, False),
        (401, envelope(None, 401, "Invalid API key"), AccountError, True),
        (403, envelope(None, 403, "Forbidden"), AccountError, True),
        (402, envelope(None, 402, "Insufficient credits"), AccountError, True),
        (500, envelope(None, 500, "Internal error"), UpstreamServerError, True),
        (502, "<html><body>502 Bad Gateway</body></html>", UpstreamServerError, True),
        (503, HTML_503, UpstreamServerError, True),
    ],
)
async def test_create_error_envelopes_map_to_the_error_tree(
    provider: APIInOneProvider,
    mock: respx.MockRouter,
    http_status: int,
    body: object,
    expected: type[ProviderError],
    failover: bool,
) -> None:
    answer(mock.post(CREATE), http_status, body)

    with pytest.raises(ProviderError) as caught:
        await provider.create(job())

    assert type(caught.value) is expected
    assert caught.value.failover is failover
    assert isinstance(caught.value, NotTaken)
    if isinstance(body, dict):
        assert caught.value.message == body["message"]


@pytest.mark.parametrize(
    ("http_status", "code", "message", "expected", "reported"),
    [
        (200, 402, "Insufficient credits", AccountError, 402),
        (200, 401, "Invalid API key", AccountError, 401),
        (200, 422, "sensitive content detected in prompt", ContentRejected, 422),
        (200, 400, "prompt is required", RequestRejected, 400),
        (200, 500, "Internal error", UpstreamServerError, 500),
        (500, 200, "success", UpstreamServerError, 500),
        (400, 402, "Insufficient credits", AccountError, 402),
    ],
)
async def test_create_trusts_whichever_of_http_and_envelope_reports_the_failure(
    provider: APIInOneProvider,
    mock: respx.MockRouter,
    http_status: int,
    code: int,
    message: str,
    expected: type[ProviderError],
    reported: int,
) -> None:
    mock.post(CREATE).respond(http_status, json=envelope(None, code, message))

    with pytest.raises(ProviderError) as caught:
        await provider.create(job())

    assert type(caught.value) is expected
    assert caught.value.http_status == reported


async def test_create_on_200_with_envelope_402_is_account_error_and_fails_over(
    provider: APIInOneProvider, mock: respx.MockRouter
) -> None:
    mock.post(CREATE).respond(200, json=envelope(None, 402, "Insufficient credits"))

    with pytest.raises(AccountError) as caught:
        await provider.create(job())

    assert caught.value.failover is True
    assert caught.value.upstream_code == "402"
    assert caught.value.message == "Insufficient credits"


@pytest.mark.parametrize(
    ("http_status", "code"), [(404, 404), (200, 404)], ids=["http-404", "envelope-404"]
)
async def test_status_on_404_is_task_not_found(
    provider: APIInOneProvider, mock: respx.MockRouter, http_status: int, code: int
) -> None:
    mock.get(STATUS).respond(http_status, json=envelope(None, code, "task not found"))

    with pytest.raises(TaskNotFound) as caught:
        await provider.status(TASK_ID)

    assert caught.value.failover is False


# --- pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("http_status", "body", "expected"),
    [
        (200, envelope({"task_id": "x"}), None),
        (200, {"code": "402", "message": "no credits"}, 402),
        (200, {"code": 0, "data": {"task_id": "x"}}, None),
        (200, None, None),
        (503, None, 503),
        (500, envelope(None, 200), 500),
        (200, {"code": True}, None),
    ],
)
def test_envelope_failure_reports_the_failing_status(
    http_status: int, body: object, expected: int | None
) -> None:
    assert envelope_failure(http_status, body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (envelope(None, 402, "Insufficient credits"), ("Insufficient credits", "402")),
        ({"error": {"code": "bad_input", "message": "nope"}}, ("nope", "bad_input")),
        ({"error": "plain"}, ("plain", None)),
        (envelope(None, 200, "success"), (None, "200")),
        ("<html/>", (None, None)),
    ],
)
def test_parse_error_reads_the_envelope_and_fallback_shapes(
    body: object, expected: tuple[str | None, str | None]
) -> None:
    assert parse_error(body) == expected
