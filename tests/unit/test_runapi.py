"""RunAPI adapter: wire body, status mapping and error mapping, against respx-mocked HTTP."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import respx

from providers.base import (
    BalanceReader,
    Duration,
    Provider,
    ProviderSettings,
    Resolution,
    TaskStatus,
    Tier,
)
from providers.errors import (
    AccountError,
    ContentRejected,
    OutcomeUnknown,
    ProviderError,
    RequestRejected,
    TaskNotFound,
    UpstreamServerError,
)
from providers.runapi import RunAPIProvider, parse_error, to_wire
from tests.unit.adapter_helpers import IMAGE, KEY, RUNAPI, VIDEO, answer, job, mockable, upstream

CREATE = RUNAPI.create
TASK_ID = RUNAPI.task_id
STATUS = RUNAPI.status
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


@pytest.fixture
def settings() -> ProviderSettings:
    return RUNAPI.settings()


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with upstream(RUNAPI) as router:
        yield router


@pytest.fixture
async def provider(
    settings: ProviderSettings, mock: respx.MockRouter
) -> AsyncIterator[RunAPIProvider]:
    adapter = RunAPIProvider(settings, transport=mockable())
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
    answer(mock.post(CREATE), http_status, body)

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


async def test_status_on_404_is_task_not_found(
    provider: RunAPIProvider, mock: respx.MockRouter
) -> None:
    mock.get(STATUS).respond(404, json={"error": {"code": "not_found", "message": "no task"}})

    with pytest.raises(TaskNotFound) as caught:
        await provider.status(TASK_ID)

    assert caught.value.failover is False
    assert caught.value.http_status == 404


# --- pure helpers ----------------------------------------------------------------------------


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


async def test_balance_reads_balance_cents_with_the_accounts_key(
    provider: RunAPIProvider, mock: respx.MockRouter
) -> None:
    route = mock.get("/api/v1/me/balance")
    answer(route, 200, {"balance_cents": 1234, "paid_balance_cents": 1000,
                        "bonus_balance_cents": 234, "spent_cents_today": 60,
                        "spent_cents_total": 9000})  # fmt: skip
    assert (await provider.balance()).balance_cents == 1234
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"
    assert isinstance(provider, BalanceReader)


@pytest.mark.parametrize("body", [{}, {"balance_cents": "12"}, {"balance_cents": True}, []])
async def test_balance_answer_without_integer_cents_is_an_upstream_error(
    provider: RunAPIProvider, mock: respx.MockRouter, body: object
) -> None:
    answer(mock.get("/api/v1/me/balance"), 200, body)
    with pytest.raises(ProviderError):
        await provider.balance()


async def test_balance_refused_maps_like_any_answer(
    provider: RunAPIProvider, mock: respx.MockRouter
) -> None:
    answer(mock.get("/api/v1/me/balance"), 401, {"error": "Invalid API key"})
    with pytest.raises(AccountError):
        await provider.balance()
