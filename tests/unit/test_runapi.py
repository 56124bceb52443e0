"""RunAPI adapter: wire body, status mapping and error mapping, against respx-mocked HTTP."""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx
from pydantic import SecretStr

from providers.base import (
    Duration,
    Provider,
    ProviderSettings,
    Resolution,
    TaskStatus,
    Tier,
    VideoJob,
)
from providers.errors import (
    AccountError,
    ContentRejected,
    OutcomeUnknown,
    ProviderError,
    RateLimited,
    RequestRejected,
    TaskNotFound,
    Unreachable,
    UpstreamServerError,
)
from providers.runapi import RunAPIProvider, parse_error, to_wire

BASE = "https://runapi.test"
KEY = "test-key-not-secret"
CREATE = "/api/v1/hailuo/image_to_video"
TASK_ID = "6f1c2a9e-0000-4000-8000-000000000001"
STATUS = f"{CREATE}/{TASK_ID}"
IMAGE = "https://img.example/first.png"
VIDEO = "https://cdn.example/out.mp4"
LEGACY_FIELDS = ("image_url", "duration", "resolution", "prompt_optimizer", "last_frame_image_url")
HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>"

COMBOS: list[tuple[Tier, Duration, Resolution, str, str]] = [
    ("standard", 6, "768P", "hailuo-2.3-image-to-video-standard", "768p"),
    ("standard", 10, "768P", "hailuo-2.3-image-to-video-standard", "768p"),
    ("standard", 6, "1080P", "hailuo-2.3-image-to-video-standard", "1080p"),
    ("pro", 6, "768P", "hailuo-2.3-image-to-video-pro", "768p"),
    ("pro", 10, "768P", "hailuo-2.3-image-to-video-pro", "768p"),
    ("pro", 6, "1080P", "hailuo-2.3-image-to-video-pro", "1080p"),
]


def job(**overrides: object) -> VideoJob:
    fields: dict[str, object] = {"prompt": "a cat surfs a wave", "image": IMAGE}
    fields.update(overrides)
    return VideoJob.model_validate(fields)


@pytest.fixture
def settings() -> ProviderSettings:
    return ProviderSettings(name="runapi-main", base_url=BASE, api_key=SecretStr(KEY))


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def provider(
    settings: ProviderSettings, mock: respx.MockRouter
) -> AsyncIterator[RunAPIProvider]:
    adapter = RunAPIProvider(settings)
    yield adapter
    await adapter.aclose()


def sent_json(mock: respx.MockRouter) -> object:
    return json.loads(mock.calls.last.request.content)


# --- the wire body ---------------------------------------------------------------------------


@pytest.mark.parametrize(("tier", "duration", "resolution", "model", "wire_res"), COMBOS)
async def test_create_sends_current_field_names_for_each_tier_duration_and_resolution(
    provider: RunAPIProvider,
    mock: respx.MockRouter,
    tier: Tier,
    duration: Duration,
    resolution: Resolution,
    model: str,
    wire_res: str,
) -> None:
    mock.post(CREATE).respond(200, json={"id": TASK_ID, "status": "pending"})

    await provider.create(job(tier=tier, duration=duration, resolution=resolution))

    body = sent_json(mock)
    assert body == {
        "model": model,
        "prompt": "a cat surfs a wave",
        "first_frame_image_url": IMAGE,
        "duration_seconds": duration,
        "output_resolution": wire_res,
    }
    assert isinstance(body, dict)
    assert not set(LEGACY_FIELDS) & body.keys()
    assert type(body["duration_seconds"]) is int


async def test_create_authenticates_with_bearer_key(
    provider: RunAPIProvider, mock: respx.MockRouter
) -> None:
    mock.post(CREATE).respond(200, json={"id": TASK_ID, "status": "pending"})

    await provider.create(job())

    assert mock.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"


def test_to_wire_includes_callback_url_only_when_set() -> None:
    with_callback = to_wire(job(callback_url="https://hooks.example/cb"))
    without = to_wire(job())

    assert with_callback["callback_url"] == "https://hooks.example/cb"
    assert "callback_url" not in without
    assert None not in without.values()


def test_to_wire_refuses_a_text_to_video_job() -> None:
    with pytest.raises(ValueError, match="image"):
        to_wire(job(image=None))


async def test_create_of_text_to_video_job_is_rejected_without_any_http_call(
    provider: RunAPIProvider, mock: respx.MockRouter
) -> None:
    route = mock.post(CREATE).respond(200, json={"id": TASK_ID, "status": "pending"})

    with pytest.raises(RequestRejected) as caught:
        await provider.create(job(image=None))

    assert not route.called
    assert caught.value.failover is False


async def test_create_returns_the_upstream_id_and_maps_pending_to_queued(
    provider: RunAPIProvider, mock: respx.MockRouter
) -> None:
    mock.post(CREATE).respond(201, json={"id": TASK_ID, "status": "pending"})

    submitted = await provider.create(job())

    assert submitted.upstream_id == TASK_ID
    assert submitted.status is TaskStatus.QUEUED
    assert submitted.raw_status == "pending"


def test_adapter_satisfies_the_provider_protocol(settings: ProviderSettings) -> None:
    adapter = RunAPIProvider(settings)
    assert isinstance(adapter, Provider)
    assert (adapter.kind, adapter.models, adapter.text_to_video) == (
        "runapi",
        ("hailuo-2.3",),
        False,
    )
    assert adapter.name == "runapi-main"


# --- status ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("pending", TaskStatus.QUEUED),
        ("PENDING", TaskStatus.QUEUED),
        ("processing", TaskStatus.IN_PROGRESS),
        ("running", TaskStatus.IN_PROGRESS),
        ("Processing", TaskStatus.IN_PROGRESS),
        ("completed", TaskStatus.COMPLETED),
        ("succeeded", TaskStatus.COMPLETED),
        ("SUCCESS", TaskStatus.COMPLETED),
        ("failed", TaskStatus.FAILED),
        ("FAILED", TaskStatus.FAILED),
    ],
)
async def test_status_maps_each_documented_status_case_insensitively(
    provider: RunAPIProvider, mock: respx.MockRouter, raw: str, expected: TaskStatus
) -> None:
    mock.get(STATUS).respond(
        200, json={"id": TASK_ID, "status": raw, "videos": [{"url": VIDEO}], "error": "boom"}
    )

    status = await provider.status(TASK_ID)

    assert status.status is expected
    assert status.raw_status == raw
    assert (status.video_url == VIDEO) is (expected is TaskStatus.COMPLETED)


async def test_status_of_unknown_word_is_in_progress_and_logged(
    provider: RunAPIProvider, mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    mock.get(STATUS).respond(200, json={"id": TASK_ID, "status": "warming_up"})

    with caplog.at_level(logging.WARNING, logger="providers.runapi"):
        status = await provider.status(TASK_ID)

    assert status.status is TaskStatus.IN_PROGRESS
    assert status.raw_status == "warming_up"
    assert "warming_up" in caplog.text


@pytest.mark.parametrize(
    "videos", [None, [], [{"url": None}], [{"thumbnail": VIDEO}], ["not-an-object"], "odd"]
)
async def test_status_completed_without_video_url_stays_in_progress_and_logs_shape(
    provider: RunAPIProvider,
    mock: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    videos: object,
) -> None:
    mock.get(STATUS).respond(200, json={"id": TASK_ID, "status": "completed", "videos": videos})

    with caplog.at_level(logging.WARNING, logger="providers.runapi"):
        status = await provider.status(TASK_ID)

    assert status.status is TaskStatus.IN_PROGRESS
    assert status.video_url is None
    assert "videos" in caplog.text
    assert TASK_ID not in caplog.text
    assert VIDEO not in caplog.text


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        ("upstream render crashed", "generation_failed", "upstream render crashed"),
        (
            {"code": "render_error", "message": "GPU fell over"},
            "generation_failed",
            "GPU fell over",
        ),
        (
            "prompt rejected by safety checker",
            "content_rejected",
            "prompt rejected by safety checker",
        ),
        (
            {"code": "content_policy_violation", "message": "rejected"},
            "content_rejected",
            "rejected",
        ),
        (None, "generation_failed", None),
    ],
)
async def test_status_failed_carries_the_reason_and_flags_content_refusals(
    provider: RunAPIProvider,
    mock: respx.MockRouter,
    error: object,
    code: str,
    message: str | None,
) -> None:
    mock.get(STATUS).respond(200, json={"id": TASK_ID, "status": "failed", "error": error})

    status = await provider.status(TASK_ID)

    assert status.status is TaskStatus.FAILED
    assert status.error_code == code
    assert status.error_message == message


async def test_status_encodes_the_upstream_id_into_one_path_segment(
    provider: RunAPIProvider, mock: respx.MockRouter
) -> None:
    route = mock.get(f"{CREATE}/a%2Fb%3Fc").respond(200, json={"id": "x", "status": "pending"})

    await provider.status("a/b?c")

    assert route.called


async def test_status_answer_without_status_is_outcome_unknown(
    provider: RunAPIProvider, mock: respx.MockRouter
) -> None:
    mock.get(STATUS).respond(200, json={"id": TASK_ID})

    with pytest.raises(OutcomeUnknown):
        await provider.status(TASK_ID)


# --- errors ----------------------------------------------------------------------------------

VALIDATION = {"error": "Validation failed", "errors": {"first_frame_image_url": ["is not a URL"]}}


@pytest.mark.parametrize(
    ("http_status", "body", "expected", "failover"),
    [
        (400, VALIDATION, RequestRejected, False),
        (422, VALIDATION, RequestRejected, False),
        (409, {"error": {"code": "conflict", "message": "duplicate"}}, RequestRejected, False),
        (
            400,
            {
                "error": {
                    "code": "content_policy_violation",
                    "message": "prompt rejected by safety checker",
                }
            },
            ContentRejected,
            False,
        ),
        (422, {"error": "sensitive input detected in image"}, ContentRejected, False),
        (
            401,
            {"error": {"code": "unauthorized", "message": "Invalid API key"}},
            AccountError,
            True,
        ),
        (403, {"error": "forbidden"}, AccountError, True),
        (402, {"error": "Insufficient credits"}, AccountError, True),
        (500, {"error": {"code": "internal", "message": "oops"}}, UpstreamServerError, True),
        (502, HTML_502, UpstreamServerError, True),
        (503, "<html><body>Service Unavailable</body></html>", UpstreamServerError, True),
    ],
)
async def test_create_error_answers_map_to_the_error_tree(
    provider: RunAPIProvider,
    mock: respx.MockRouter,
    http_status: int,
    body: object,
    expected: type[ProviderError],
    failover: bool,
) -> None:
    if isinstance(body, str):
        mock.post(CREATE).respond(http_status, text=body, headers={"Content-Type": "text/html"})
    else:
        mock.post(CREATE).respond(http_status, json=body)

    with pytest.raises(ProviderError) as caught:
        await provider.create(job())

    assert type(caught.value) is expected
    assert caught.value.failover is failover
    assert caught.value.taken is False
    assert caught.value.http_status == http_status


async def test_create_on_422_validation_reports_the_field_and_its_message(
    provider: RunAPIProvider, mock: respx.MockRouter
) -> None:
    mock.post(CREATE).respond(422, json=VALIDATION)

    with pytest.raises(RequestRejected) as caught:
        await provider.create(job())

    assert "first_frame_image_url: is not a URL" in caught.value.message
    assert "Validation failed" in caught.value.message


async def test_create_on_402_is_account_error_and_fails_over(
    provider: RunAPIProvider, mock: respx.MockRouter
) -> None:
    mock.post(CREATE).respond(402, json={"error": {"code": "credits", "message": "No credits"}})

    with pytest.raises(AccountError) as caught:
        await provider.create(job())

    assert caught.value.failover is True
    assert caught.value.upstream_code == "credits"
    assert caught.value.message == "No credits"


async def test_create_on_502_html_quotes_a_short_single_line_snippet(
    provider: RunAPIProvider, mock: respx.MockRouter
) -> None:
    mock.post(CREATE).respond(502, text=HTML_502 + "\n" * 3 + "x" * 500)

    with pytest.raises(UpstreamServerError) as caught:
        await provider.create(job())

    assert "502 Bad Gateway" in caught.value.message
    assert "\n" not in caught.value.message
    assert len(caught.value.message) < 300


async def test_create_on_429_reads_retry_after_in_seconds(
    provider: RunAPIProvider, mock: respx.MockRouter
) -> None:
    mock.post(CREATE).respond(429, json={"error": "slow down"}, headers={"Retry-After": "17"})

    with pytest.raises(RateLimited) as caught:
        await provider.create(job())

    assert caught.value.retry_after_s == 17.0
    assert caught.value.failover is True


async def test_create_on_429_reads_retry_after_as_an_http_date(
    provider: RunAPIProvider, mock: respx.MockRouter
) -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    mock.post(CREATE).respond(429, json={"error": "slow down"}, headers={"Retry-After": when})

    with pytest.raises(RateLimited) as caught:
        await provider.create(job())

    assert caught.value.retry_after_s is not None
    assert 100.0 < caught.value.retry_after_s <= 121.0


async def test_status_on_404_is_task_not_found(
    provider: RunAPIProvider, mock: respx.MockRouter
) -> None:
    mock.get(STATUS).respond(404, json={"error": {"code": "not_found", "message": "no task"}})

    with pytest.raises(TaskNotFound) as caught:
        await provider.status(TASK_ID)

    assert caught.value.failover is False
    assert caught.value.http_status == 404


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"<html>ok</html>", "text/html"),
        (b"", "application/json"),
        (b'{"status": "pending"}', "application/json"),
        (b'["not", "an", "object"]', "application/json"),
        (b'{"id": "", "status": "pending"}', "application/json"),
    ],
)
async def test_create_2xx_without_a_readable_task_id_is_outcome_unknown(
    provider: RunAPIProvider, mock: respx.MockRouter, content: bytes, content_type: str
) -> None:
    mock.post(CREATE).respond(200, content=content, headers={"Content-Type": content_type})

    with pytest.raises(OutcomeUnknown) as caught:
        await provider.create(job())

    assert caught.value.taken is None
    assert caught.value.failover is False


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), Unreachable),
        (httpx.ConnectTimeout("slow handshake"), Unreachable),
        (httpx.ReadTimeout("no answer"), OutcomeUnknown),
        (httpx.RemoteProtocolError("peer closed"), OutcomeUnknown),
    ],
)
async def test_create_transport_failures_tell_whether_the_request_went_out(
    provider: RunAPIProvider,
    mock: respx.MockRouter,
    exc: Exception,
    expected: type[ProviderError],
) -> None:
    mock.post(CREATE).mock(side_effect=exc)

    with pytest.raises(ProviderError) as caught:
        await provider.create(job())

    assert type(caught.value) is expected
    assert caught.value.failover is (expected is Unreachable)
    assert caught.value.taken is (False if expected is Unreachable else None)


# --- secrets and lifecycle -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("http_status", "body"),
    [
        (401, {"error": {"code": KEY, "message": f"Invalid API key {KEY}"}}),
        (401, {"error": f"key {KEY} revoked"}),
        (500, f"<html>Authorization: Bearer {KEY}</html>"),
        (422, {"error": "Validation failed", "errors": {"auth": [f"bad {KEY}"]}}),
    ],
)
async def test_errors_never_quote_the_api_key_even_when_the_upstream_echoes_it(
    provider: RunAPIProvider, mock: respx.MockRouter, http_status: int, body: object
) -> None:
    if isinstance(body, str):
        mock.post(CREATE).respond(http_status, text=body)
    else:
        mock.post(CREATE).respond(http_status, json=body)

    with pytest.raises(ProviderError) as caught:
        await provider.create(job())

    error = caught.value
    rendered = f"{error} {error!r} {error.message} {error.upstream_code}"
    assert KEY not in rendered
    assert "[redacted]" in rendered


def test_repr_of_adapter_and_settings_hides_the_api_key(settings: ProviderSettings) -> None:
    adapter = RunAPIProvider(settings)
    assert KEY not in repr(adapter)
    assert KEY not in repr(settings)
    assert "runapi-main" in repr(adapter)


async def test_aclose_closes_the_transport(settings: ProviderSettings) -> None:
    class Recording(httpx.AsyncBaseTransport):
        closed = False

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json={"id": TASK_ID, "status": "pending"})

        async def aclose(self) -> None:
            self.closed = True

    transport = Recording()
    adapter = RunAPIProvider(settings, transport=transport)
    await adapter.create(job())

    await adapter.aclose()

    assert transport.closed


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        ({"error": {"code": "bad", "message": "Bad thing"}}, "Bad thing", "bad"),
        ({"error": {"code": 4001, "message": "Numeric"}}, "Numeric", "4001"),
        ({"error": "plain"}, "plain", None),
        ({"errors": {"prompt": ["too long", "empty"]}}, "prompt: too long, empty", None),
        ({"message": "top-level"}, "top-level", None),
        ({"error": ["odd"]}, None, None),
        (None, None, None),
        ("<html/>", None, None),
    ],
)
def test_parse_error_reads_every_documented_shape_and_tolerates_others(
    body: object, message: str | None, code: str | None
) -> None:
    assert parse_error(body) == (message, code)
