"""fal.ai adapter: endpoints, the queue's three calls, the key kept on its origin, result errors.

What every adapter shares (wire bodies, status words, error classes) is checked once for all of
them in ``tests/unit/conformance``; this file holds what only fal's queue does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx
from pydantic import SecretStr

from providers.base import Provider, ProviderSettings, TaskStatus
from providers.errors import (
    AccountError,
    OutcomeUnknown,
    ProviderError,
    RateLimited,
    RequestRejected,
    TaskNotFound,
    UnusableAnswer,
    UpstreamServerError,
)
from providers.fal import (
    FalProvider,
    decode_id,
    encode_id,
    endpoint_for,
    parse_error,
    to_wire,
)
from tests.unit.adapter_helpers import IMAGE, KEY, VIDEO, job, mockable

BASE = "https://queue.fal.test"
APP = "/fal-ai/minimax/requests/req-1"
STATUS_PATH = f"{APP}/status"
RESPONSE_PATH = APP
UPSTREAM_ID = f"{STATUS_PATH}|{RESPONSE_PATH}"
I2V = "/fal-ai/minimax/hailuo-2.3/standard/image-to-video"
DATA_URI = "data:image/png;base64,iVBORw0KGgo="


def submitted(base: str = BASE, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "request_id": "req-1",
        "status_url": f"{base}{STATUS_PATH}",
        "response_url": f"{base}{RESPONSE_PATH}",
        "cancel_url": f"{base}{APP}/cancel",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def settings(base: str = BASE) -> ProviderSettings:
    return ProviderSettings(name="fal-main", base_url=base, api_key=SecretStr(KEY))


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    # No base_url: a request to any other host is unmatched, so respx fails the test.
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
async def provider(mock: respx.MockRouter) -> AsyncIterator[FalProvider]:
    adapter = FalProvider(settings(), transport=mockable())
    yield adapter
    await adapter.aclose()


def sent(mock: respx.MockRouter) -> object:
    return json.loads(mock.calls.last.request.content)


# --- endpoints and bodies --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "image", "resolution", "endpoint"),
    [
        ("hailuo-2.3", IMAGE, "768P", "fal-ai/minimax/hailuo-2.3/standard/image-to-video"),
        ("hailuo-2.3", IMAGE, "1080P", "fal-ai/minimax/hailuo-2.3/pro/image-to-video"),
        ("hailuo-2.3", None, "768P", "fal-ai/minimax/hailuo-2.3/standard/text-to-video"),
        ("hailuo-2.3", None, "1080P", "fal-ai/minimax/hailuo-2.3/pro/text-to-video"),
        (
            "hailuo-2.3-fast",
            IMAGE,
            "768P",
            "fal-ai/minimax/hailuo-2.3-fast/standard/image-to-video",
        ),
        ("hailuo-2.3-fast", IMAGE, "1080P", "fal-ai/minimax/hailuo-2.3-fast/pro/image-to-video"),
    ],
)
@pytest.mark.parametrize("tier", ["standard", "pro"])
def test_endpoint_follows_model_mode_and_resolution_never_the_tier(
    model: str, image: str | None, resolution: str, endpoint: str, tier: str
) -> None:
    assert endpoint_for(job(model=model, image=image, resolution=resolution, tier=tier)) == endpoint


def test_canonical_standard_at_1080p_goes_to_the_pro_endpoint() -> None:
    endpoint, body = to_wire(job(tier="standard", resolution="1080P"))

    assert endpoint == "fal-ai/minimax/hailuo-2.3/pro/image-to-video"
    assert "duration" not in body  # fal's 1080P endpoints take no duration


@pytest.mark.parametrize("duration", [6, 10])
def test_768p_bodies_carry_the_duration_as_a_string(duration: int) -> None:
    _, body = to_wire(job(duration=duration))

    assert body == {"prompt": "a cat surfs a wave", "image_url": IMAGE, "duration": str(duration)}


def test_text_to_video_body_has_no_image_url() -> None:
    _, body = to_wire(job(image=None))

    assert body == {"prompt": "a cat surfs a wave", "duration": "6"}


def test_a_data_uri_image_is_sent_as_it_is() -> None:
    assert FalProvider.data_uri_images is True
    _, body = to_wire(job(image=DATA_URI))

    assert body["image_url"] == DATA_URI


async def test_fast_text_to_video_is_refused_without_any_call(
    provider: FalProvider, mock: respx.MockRouter
) -> None:
    with pytest.raises(RequestRejected, match=r"hailuo-2\.3-fast text-to-video"):
        await provider.create(job(model="hailuo-2.3-fast", image=None))

    assert not mock.calls


async def test_submit_authenticates_with_key_scheme(
    provider: FalProvider, mock: respx.MockRouter
) -> None:
    mock.post(f"{BASE}{I2V}").respond(200, json=submitted())

    await provider.create(job())

    assert mock.calls.last.request.headers["Authorization"] == f"Key {KEY}"


async def test_submit_passes_the_callback_as_fal_webhook_query(
    provider: FalProvider, mock: respx.MockRouter
) -> None:
    route = mock.post(f"{BASE}{I2V}").respond(200, json=submitted())
    hook = "https://gw.example/callbacks/fal/tok?x=1"

    await provider.create(job(callback_url=hook))

    request = route.calls.last.request
    assert request.url.params["fal_webhook"] == hook
    assert "callback_url" not in sent(mock)  # type: ignore[operator]


async def test_a_base_url_with_a_path_prefixes_the_endpoint() -> None:
    with respx.mock() as mock:
        route = mock.post(f"{BASE}/proxy/fal{I2V}").respond(200, json=submitted())
        adapter = FalProvider(settings(f"{BASE}/proxy/fal/"), transport=mockable())
        await adapter.create(job())
        await adapter.aclose()

    assert route.called


# --- the upstream id -------------------------------------------------------------------------


async def test_upstream_id_carries_both_returned_paths(
    provider: FalProvider, mock: respx.MockRouter
) -> None:
    mock.post(f"{BASE}{I2V}").respond(200, json={**submitted(), "status": "IN_QUEUE"})

    result = await provider.create(job())

    assert result.upstream_id == UPSTREAM_ID
    assert decode_id(result.upstream_id) == (STATUS_PATH, RESPONSE_PATH)
    assert result.status is TaskStatus.QUEUED


async def test_status_after_a_restart_needs_only_the_id(mock: respx.MockRouter) -> None:
    """A fresh adapter (a restarted gateway) follows the returned, not hand-built, URLs."""
    mock.get(f"{BASE}{STATUS_PATH}").respond(200, json={"status": "COMPLETED"})
    mock.get(f"{BASE}{RESPONSE_PATH}").respond(200, json={"video": {"url": VIDEO}})
    fresh = FalProvider(settings(), transport=mockable())

    status = await fresh.status(UPSTREAM_ID)
    await fresh.aclose()

    assert (status.status, status.video_url) == (TaskStatus.COMPLETED, VIDEO)
    assert all(call.request.headers["Authorization"] == f"Key {KEY}" for call in mock.calls)


@pytest.mark.parametrize(
    "upstream_id",
    ["req-1", "|", f"{STATUS_PATH}|", "https://evil.example/x|/y", "//evil.example/x|/y", "a|b"],
)
async def test_status_of_an_id_it_did_not_issue_is_task_not_found_without_a_call(
    provider: FalProvider, mock: respx.MockRouter, upstream_id: str
) -> None:
    with pytest.raises(TaskNotFound):
        await provider.status(upstream_id)

    assert not mock.calls


def test_encode_and_decode_are_inverse() -> None:
    assert decode_id(encode_id("/a/status", "/a?x=1")) == ("/a/status", "/a?x=1")


# --- the key stays on the configured origin --------------------------------------------------


@pytest.mark.parametrize(
    ("status_url", "response_url"),
    [
        (f"https://evil.example{STATUS_PATH}", f"{BASE}{RESPONSE_PATH}"),
        (f"{BASE}{STATUS_PATH}", f"https://evil.example{RESPONSE_PATH}"),
        (f"http://queue.fal.test{STATUS_PATH}", f"{BASE}{RESPONSE_PATH}"),  # scheme differs
        (f"https://queue.fal.test:8443{STATUS_PATH}", f"{BASE}{RESPONSE_PATH}"),  # port differs
        (f"https://queue.fal.test.evil.example{STATUS_PATH}", f"{BASE}{RESPONSE_PATH}"),
        (f"https://evil.example@x.example{STATUS_PATH}", f"{BASE}{RESPONSE_PATH}"),
        (STATUS_PATH, f"{BASE}{RESPONSE_PATH}"),  # relative: no origin at all
        (None, f"{BASE}{RESPONSE_PATH}"),  # missing
        (f"{BASE}//evil.example/x", f"{BASE}{RESPONSE_PATH}"),
    ],
)
async def test_a_returned_url_off_the_configured_origin_is_a_taken_task_never_followed(
    provider: FalProvider,
    mock: respx.MockRouter,
    status_url: str | None,
    response_url: str,
) -> None:
    mock.post(f"{BASE}{I2V}").respond(
        200, json=submitted(status_url=status_url, response_url=response_url)
    )

    with pytest.raises(UnusableAnswer) as caught:
        await provider.create(job())

    assert caught.value.taken is True
    assert caught.value.failover is False
    assert isinstance(caught.value, OutcomeUnknown)  # the client hears a bill may exist
    assert len(mock.calls) == 1  # the submit only: nothing was followed
    assert KEY not in str(caught.value)


async def test_a_returned_url_with_the_default_port_spelled_out_is_the_same_origin(
    provider: FalProvider, mock: respx.MockRouter
) -> None:
    mock.post(f"{BASE}{I2V}").respond(
        200, json=submitted(status_url=f"https://QUEUE.fal.test:443{STATUS_PATH}")
    )

    result = await provider.create(job())

    assert decode_id(result.upstream_id)[0] == STATUS_PATH


async def test_a_submit_answer_without_request_id_is_outcome_unknown(
    provider: FalProvider, mock: respx.MockRouter
) -> None:
    mock.post(f"{BASE}{I2V}").respond(200, json=submitted(request_id=None))

    with pytest.raises(OutcomeUnknown) as caught:
        await provider.create(job())

    assert caught.value.taken is None


# --- status and result -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "expected"),
    [("IN_QUEUE", TaskStatus.QUEUED), ("IN_PROGRESS", TaskStatus.IN_PROGRESS)],
)
async def test_a_running_task_is_read_without_the_result_call(
    provider: FalProvider, mock: respx.MockRouter, word: str, expected: TaskStatus
) -> None:
    mock.get(f"{BASE}{STATUS_PATH}").respond(200, json={"status": word, "queue_position": 3})
    result = mock.get(f"{BASE}{RESPONSE_PATH}").respond(200, json={"video": {"url": VIDEO}})

    status = await provider.status(UPSTREAM_ID)

    assert (status.status, status.raw_status) == (expected, word)
    assert not result.called


async def test_an_unknown_queue_word_is_in_progress_and_logged(
    provider: FalProvider, mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    mock.get(f"{BASE}{STATUS_PATH}").respond(200, json={"status": "WARMING"})

    with caplog.at_level(logging.WARNING, logger="providers.fal"):
        status = await provider.status(UPSTREAM_ID)

    assert status.status is TaskStatus.IN_PROGRESS
    assert "WARMING" in caplog.text


CONTENT = {
    "detail": [
        {
            "loc": ["body", "prompt"],
            "msg": "The content was flagged by a content checker.",
            "type": "content_policy_violation",
        }
    ]
}
VALIDATION = {"detail": [{"loc": ["body", "duration"], "msg": "bad", "type": "value_error"}]}
TIMEOUT = {"detail": "Request timed out", "error_type": "request_timeout"}
FLAGGED = "prompt: The content was flagged by a content checker."
FAILED = "generation_failed"


@pytest.mark.parametrize(
    ("http_status", "body", "headers", "code", "message"),
    [
        (422, CONTENT, {}, "content_rejected", FLAGGED),
        (422, VALIDATION, {}, FAILED, "duration: bad"),
        (504, TIMEOUT, {"X-Fal-Error-Type": "request_timeout"}, FAILED, "Request timed out"),
        (500, {"detail": "boom", "error_type": "runner_server_error"}, {}, FAILED, "boom"),
        (503, {"detail": "x"}, {"X-Fal-Error-Type": "runner_disconnected"}, FAILED, "x"),
        (
            500,
            "<html>oops</html>",
            {"X-Fal-Error-Type": "internal_error"},
            FAILED,
            "internal_error",
        ),
    ],
)
async def test_a_failed_run_answers_the_result_with_an_error_body(
    provider: FalProvider,
    mock: respx.MockRouter,
    http_status: int,
    body: object,
    headers: dict[str, str],
    code: str,
    message: str,
) -> None:
    mock.get(f"{BASE}{STATUS_PATH}").respond(200, json={"status": "COMPLETED"})
    if isinstance(body, str):
        mock.get(f"{BASE}{RESPONSE_PATH}").respond(http_status, text=body, headers=headers)
    else:
        mock.get(f"{BASE}{RESPONSE_PATH}").respond(http_status, json=body, headers=headers)

    status = await provider.status(UPSTREAM_ID)

    assert status.status is TaskStatus.FAILED
    assert (status.error_code, status.error_message) == (code, message)


@pytest.mark.parametrize(
    ("http_status", "body", "expected"),
    [
        (502, "<html>502 Bad Gateway</html>", UpstreamServerError),
        (500, {"detail": "Internal Server Error"}, UpstreamServerError),
        (503, {"error": "unavailable"}, UpstreamServerError),
        (504, "<html>gateway timeout</html>", OutcomeUnknown),
        (401, {"detail": "Invalid key"}, AccountError),
        (403, {"detail": "User is locked. Reason: Exhausted balance."}, AccountError),
        (404, {"detail": "Request not found"}, TaskNotFound),
        (429, {"detail": "slow down"}, RateLimited),
    ],
)
async def test_a_result_answer_without_fal_failure_markers_is_a_failed_read_not_a_failed_run(
    provider: FalProvider,
    mock: respx.MockRouter,
    http_status: int,
    body: object,
    expected: type[ProviderError],
) -> None:
    """A failed run would be resubmitted elsewhere: only fal's own word may end a task."""
    mock.get(f"{BASE}{STATUS_PATH}").respond(200, json={"status": "COMPLETED"})
    if isinstance(body, str):
        mock.get(f"{BASE}{RESPONSE_PATH}").respond(http_status, text=body)
    else:
        mock.get(f"{BASE}{RESPONSE_PATH}").respond(http_status, json=body)

    with pytest.raises(ProviderError) as caught:
        await provider.status(UPSTREAM_ID)

    assert type(caught.value) is expected


async def test_a_result_still_in_progress_keeps_the_task_running(
    provider: FalProvider, mock: respx.MockRouter
) -> None:
    mock.get(f"{BASE}{STATUS_PATH}").respond(200, json={"status": "COMPLETED"})
    mock.get(f"{BASE}{RESPONSE_PATH}").respond(400, json={"detail": "Request is still in progress"})

    status = await provider.status(UPSTREAM_ID)

    assert status.status is TaskStatus.IN_PROGRESS


async def test_the_result_is_read_from_the_returned_response_path(
    provider: FalProvider, mock: respx.MockRouter
) -> None:
    """fal's status and response URLs name the app, not the endpoint the task went to."""
    odd = "/fal-ai/minimax/requests/req-1/status?logs=0|/elsewhere/req-1/result"
    mock.get(f"{BASE}/fal-ai/minimax/requests/req-1/status", params={"logs": "0"}).respond(
        200, json={"status": "COMPLETED"}
    )
    result = mock.get(f"{BASE}/elsewhere/req-1/result").respond(200, json={"video": {"url": VIDEO}})

    status = await provider.status(odd)

    assert result.called
    assert status.video_url == VIDEO


# --- pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (CONTENT, (FLAGGED, "content_policy_violation")),
        (TIMEOUT, ("Request timed out", "request_timeout")),
        (
            {"detail": [{"msg": "a"}, {"loc": ["body", "x", 0], "msg": "b", "type": "t"}]},
            ("a; x.0: b", "t"),
        ),
        ({"detail": "plain"}, ("plain", None)),
        ({"detail": []}, (None, None)),
        ({"message": "m"}, ("m", None)),
        ("<html/>", (None, None)),
        (None, (None, None)),
    ],
)
def test_parse_error_reads_model_and_request_errors(
    body: object, expected: tuple[str | None, str | None]
) -> None:
    assert parse_error(body) == expected


def test_adapter_satisfies_the_provider_protocol_and_hides_the_key() -> None:
    adapter = FalProvider(settings())

    assert isinstance(adapter, Provider)
    assert (adapter.kind, adapter.text_to_video, adapter.data_uri_images) == ("fal", True, True)
    assert adapter.models == ("hailuo-2.3", "hailuo-2.3-fast")
    assert KEY not in repr(adapter)
    assert BASE in repr(adapter)


async def test_transport_errors_on_the_result_call_are_mapped(
    provider: FalProvider, mock: respx.MockRouter
) -> None:
    mock.get(f"{BASE}{STATUS_PATH}").respond(200, json={"status": "COMPLETED"})
    mock.get(f"{BASE}{RESPONSE_PATH}").mock(side_effect=httpx.ReadTimeout("slow"))

    with pytest.raises(OutcomeUnknown):
        await provider.status(UPSTREAM_ID)
