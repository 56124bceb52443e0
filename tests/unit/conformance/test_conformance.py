"""The same behaviour from every adapter, checked against each kind's own wire format.

Each test runs once per kind in :data:`tests.unit.conformance.kinds.KINDS` (respx mocks the
upstream). What routing relies on is the same everywhere: the error class of each failure and its
failover verdict, what an answer without a task id means, which transport failures prove nothing
was sent. What differs (wire bodies, status words, error shapes) lives in the kind descriptions.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx

from providers.base import Provider, TaskStatus, VideoJob
from providers.capabilities import KINDS as CAPABILITIES
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
from tests.unit.adapter_helpers import KEY, VIDEO, job, mockable
from tests.unit.conformance.kinds import CONTENT_MESSAGE, KINDS, Kind, WireCase

HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>" + "x" * 500 + "</body></html>"


def kind_id(value: object) -> str | None:
    return value.name if isinstance(value, Kind) else None


@pytest.fixture(params=KINDS, ids=kind_id)
def kind(request: pytest.FixtureRequest) -> Kind:
    assert isinstance(request.param, Kind)
    return request.param


@pytest.fixture
def mock(kind: Kind) -> Iterator[respx.MockRouter]:
    # Only the kind's own host is mocked: a request anywhere else fails the test.
    with respx.mock(base_url=kind.base, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def provider(kind: Kind, mock: respx.MockRouter) -> AsyncIterator[Provider]:
    adapter = kind.adapter(kind.settings(), transport=mockable())
    yield adapter
    await adapter.aclose()


def every(attribute: str) -> list[object]:
    """``pytest.param(kind, item)`` for every item of every kind's ``attribute``."""
    return [
        pytest.param(kind, item, id=f"{kind.name}-{_item_id(item, index)}")
        for kind in KINDS
        for index, item in enumerate(getattr(kind, attribute))
    ]


def _item_id(item: object, index: int) -> str:
    if isinstance(item, WireCase):
        return item.id
    if isinstance(item, tuple):
        return "-".join(str(part) for part in item)
    return str(index)


# --- declared capabilities -------------------------------------------------------------------


def test_the_adapter_offers_what_its_kind_declares(kind: Kind) -> None:
    declared = CAPABILITIES[kind.name]
    adapter = kind.adapter

    assert (adapter.kind, adapter.models) == (declared.kind, declared.models)
    assert (adapter.text_to_video, adapter.data_uri_images) == (
        declared.text_to_video,
        declared.data_uri_images,
    )


def test_every_capability_is_exercised_by_a_wire_case(kind: Kind) -> None:
    """The wire cases cover each model, and each mode and image form the kind declares."""
    cases = kind.wire
    assert {c.job.model for c in cases} == set(kind.adapter.models)
    modes = {c.job.mode for c in cases}
    assert ("text_to_video" in modes) is kind.adapter.text_to_video
    data_uri = any((c.job.image or "").startswith("data:") for c in cases)
    assert data_uri is kind.adapter.data_uri_images


# --- requests --------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "case"), every("wire"))
async def test_create_sends_the_documented_wire_format_for_each_canonical_request(
    kind: Kind, case: WireCase
) -> None:
    with respx.mock(base_url=kind.base) as mock:
        route = mock.post(case.path).respond(200, json=kind.created)
        adapter = kind.adapter(kind.settings(), transport=mockable())
        await adapter.create(case.job)
        await adapter.aclose()

    request = route.calls.last.request
    assert json.loads(request.content) == case.body
    assert request.headers["Authorization"] == kind.auth_header
    assert request.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(("kind", "refused"), every("refused"))
async def test_create_refuses_what_the_kind_does_not_serve_without_any_call(
    kind: Kind, refused: VideoJob
) -> None:
    with respx.mock(base_url=kind.base) as mock:
        adapter = kind.adapter(kind.settings(), transport=mockable())
        with pytest.raises(RequestRejected) as caught:
            await adapter.create(refused)
        await adapter.aclose()

    assert not mock.calls
    assert caught.value.failover is False


async def test_create_returns_the_upstream_id_the_status_read_uses(
    kind: Kind, provider: Provider, mock: respx.MockRouter
) -> None:
    mock.post(kind.create_path).respond(200, json=kind.created)
    kind.serve_status(mock, kind.status_words[0][0], kind.status_words[0][1], None, None)

    submitted = await provider.create(job())
    status = await provider.status(submitted.upstream_id)

    assert submitted.upstream_id == kind.upstream_id
    assert submitted.status in (TaskStatus.QUEUED, TaskStatus.IN_PROGRESS)
    assert status.status is kind.status_words[0][1]
    assert all(c.request.headers["Authorization"] == kind.auth_header for c in mock.calls)


# --- status words ----------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "word"), every("status_words"))
async def test_status_maps_every_documented_status_word(
    kind: Kind, word: tuple[str, TaskStatus]
) -> None:
    raw, expected = word
    with respx.mock(base_url=kind.base, assert_all_called=False) as mock:
        kind.serve_status(mock, raw, expected, VIDEO, "render crashed")
        adapter = kind.adapter(kind.settings(), transport=mockable())
        status = await adapter.status(kind.upstream_id)
        await adapter.aclose()

    assert status.status is expected
    assert status.raw_status == raw
    assert (status.video_url == VIDEO) is (expected is TaskStatus.COMPLETED)
    if expected is TaskStatus.FAILED:
        assert (status.error_code, status.error_message) == ("generation_failed", "render crashed")


async def test_status_of_an_unknown_word_is_in_progress(
    kind: Kind, provider: Provider, mock: respx.MockRouter
) -> None:
    kind.serve_status(mock, "WARMING_UP", TaskStatus.IN_PROGRESS, None, None)

    status = await provider.status(kind.upstream_id)

    assert status.status is TaskStatus.IN_PROGRESS


async def test_status_completed_without_a_video_url_stays_in_progress(
    kind: Kind, provider: Provider, mock: respx.MockRouter
) -> None:
    done = next(raw for raw, s in kind.status_words if s is TaskStatus.COMPLETED)
    kind.serve_status(mock, done, TaskStatus.COMPLETED, None, None)

    status = await provider.status(kind.upstream_id)

    assert status.status is TaskStatus.IN_PROGRESS
    assert status.video_url is None


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("render crashed", "generation_failed"),
        (CONTENT_MESSAGE, "content_rejected"),
        ("NSFW image detected", "content_rejected"),
    ],
)
async def test_a_failed_task_carries_its_reason_and_flags_content_refusals(
    kind: Kind, provider: Provider, mock: respx.MockRouter, message: str, code: str
) -> None:
    failed = next(raw for raw, s in kind.status_words if s is TaskStatus.FAILED)
    kind.serve_status(mock, failed, TaskStatus.FAILED, None, message)

    status = await provider.status(kind.upstream_id)

    assert status.status is TaskStatus.FAILED
    assert (status.error_code, status.error_message) == (code, message)


# --- errors and their failover verdicts ------------------------------------------------------

ERRORS: list[tuple[int, str, type[ProviderError], bool]] = [
    (400, "prompt is required", RequestRejected, False),
    (422, "duration must be 6 or 10", RequestRejected, False),
    (422, "sensitive content detected in prompt", ContentRejected, False),
    (401, "Invalid API key", AccountError, True),
    (402, "Insufficient credits", AccountError, True),
    (403, "this key may not use this model", AccountError, True),
    (429, "Too many requests", RateLimited, True),
    (500, "Internal error", UpstreamServerError, True),
    (502, "Bad gateway", UpstreamServerError, True),
    (503, "Service unavailable", UpstreamServerError, True),
    (504, "Gateway timeout", OutcomeUnknown, False),
    (524, "A timeout occurred", OutcomeUnknown, False),
]


@pytest.mark.parametrize(
    ("http_status", "message", "expected", "failover"),
    ERRORS,
    ids=[f"{s}-{e.__name__}" for s, _, e, _ in ERRORS],
)
async def test_each_create_failure_maps_to_its_class_and_failover_verdict(
    kind: Kind,
    provider: Provider,
    mock: respx.MockRouter,
    http_status: int,
    message: str,
    expected: type[ProviderError],
    failover: bool,
) -> None:
    status, body = kind.error(http_status, message)
    mock.post(kind.create_path).respond(status, json=body)

    with pytest.raises(ProviderError) as caught:
        await provider.create(job())

    assert type(caught.value) is expected
    assert caught.value.failover is failover
    assert caught.value.taken is (None if expected is OutcomeUnknown else False)
    assert message in caught.value.message


async def test_a_content_refusal_the_way_the_kind_reports_it_is_never_failed_over(
    kind: Kind, provider: Provider, mock: respx.MockRouter
) -> None:
    kind.serve_content_refusal(mock)

    if kind.content_refused_at == "create":
        with pytest.raises(ContentRejected) as caught:
            await provider.create(job())
        assert caught.value.failover is False
        return
    submitted = await provider.create(job())
    status = await provider.status(submitted.upstream_id)
    assert status.status is TaskStatus.FAILED
    assert status.error_code == "content_rejected"  # the poller resubmits anything else


@pytest.mark.parametrize("retry_after", ["17", "http-date"])
async def test_a_429_carries_retry_after_in_seconds(
    kind: Kind, provider: Provider, mock: respx.MockRouter, retry_after: str
) -> None:
    value = retry_after
    if retry_after == "http-date":
        value = email.utils.formatdate(time.time() + 120, usegmt=True)
    status, body = kind.error(429, "slow down")
    mock.post(kind.create_path).respond(status, json=body, headers={"Retry-After": value})

    with pytest.raises(RateLimited) as caught:
        await provider.create(job())

    seconds = caught.value.retry_after_s
    assert seconds is not None
    assert seconds == 17.0 if retry_after == "17" else 100.0 < seconds <= 121.0


async def test_an_html_error_page_is_a_short_single_line_server_error(
    kind: Kind, provider: Provider, mock: respx.MockRouter
) -> None:
    mock.post(kind.create_path).respond(502, text=HTML_502, headers={"Content-Type": "text/html"})

    with pytest.raises(UpstreamServerError) as caught:
        await provider.create(job())

    assert "502 Bad Gateway" in caught.value.message
    assert "\n" not in caught.value.message
    assert len(caught.value.message) < 300
    assert caught.value.failover is True


GARBLED: list[tuple[bytes, str]] = [
    (b"<html>ok</html>", "text/html"),
    (b"", "application/json"),
    (b"{not json", "application/json"),
    (b'["not", "an", "object"]', "application/json"),
    (b"{}", "application/json"),
    (b'{"unexpected": {"shape": 1}}', "application/json"),
]


@pytest.mark.parametrize(("content", "content_type"), GARBLED)
async def test_a_2xx_create_answer_without_a_readable_task_id_is_outcome_unknown(
    kind: Kind, provider: Provider, mock: respx.MockRouter, content: bytes, content_type: str
) -> None:
    """After a 2xx the task may exist: routing must not try elsewhere."""
    mock.post(kind.create_path).respond(
        200, content=content, headers={"Content-Type": content_type}
    )

    with pytest.raises(OutcomeUnknown) as caught:
        await provider.create(job())

    assert caught.value.failover is False


@pytest.mark.parametrize(("content", "content_type"), GARBLED)
async def test_a_2xx_status_answer_without_a_status_is_outcome_unknown(
    kind: Kind, provider: Provider, mock: respx.MockRouter, content: bytes, content_type: str
) -> None:
    mock.get(kind.status_path).respond(200, content=content, headers={"Content-Type": content_type})

    with pytest.raises(OutcomeUnknown):
        await provider.status(kind.upstream_id)


async def test_status_of_a_task_the_upstream_does_not_know_is_task_not_found(
    kind: Kind, provider: Provider, mock: respx.MockRouter
) -> None:
    status, body = kind.error(404, "task not found")
    mock.get(kind.status_path).respond(status, json=body)

    with pytest.raises(TaskNotFound) as caught:
        await provider.status(kind.upstream_id)

    assert caught.value.failover is False


async def test_a_status_read_failing_on_5xx_is_a_server_error_not_a_task_outcome(
    kind: Kind, provider: Provider, mock: respx.MockRouter
) -> None:
    mock.get(kind.status_path).respond(503, text="<html>down</html>")

    with pytest.raises(UpstreamServerError):
        await provider.status(kind.upstream_id)


# --- transport failures and timeouts ---------------------------------------------------------

TRANSPORT: list[tuple[Exception, type[ProviderError]]] = [
    (httpx.ConnectError("refused"), Unreachable),
    (httpx.ConnectTimeout("slow handshake"), Unreachable),
    (httpx.PoolTimeout("pool full"), Unreachable),
    (httpx.ReadTimeout("no answer"), OutcomeUnknown),
    (httpx.WriteTimeout("stalled"), OutcomeUnknown),
    (httpx.RemoteProtocolError("peer closed"), OutcomeUnknown),
    (httpx.ReadError("reset"), OutcomeUnknown),
]


@pytest.mark.parametrize(
    ("exc", "expected"), TRANSPORT, ids=[type(e).__name__ for e, _ in TRANSPORT]
)
async def test_create_transport_failures_tell_whether_the_request_went_out(
    kind: Kind,
    provider: Provider,
    mock: respx.MockRouter,
    exc: Exception,
    expected: type[ProviderError],
) -> None:
    mock.post(kind.create_path).mock(side_effect=exc)

    with pytest.raises(ProviderError) as caught:
        await provider.create(job())

    assert type(caught.value) is expected
    assert caught.value.failover is (expected is Unreachable)
    assert caught.value.taken is (False if expected is Unreachable else None)


@pytest.mark.parametrize(
    ("exc", "expected"), TRANSPORT, ids=[type(e).__name__ for e, _ in TRANSPORT]
)
async def test_status_transport_failures_are_mapped_too(
    kind: Kind,
    provider: Provider,
    mock: respx.MockRouter,
    exc: Exception,
    expected: type[ProviderError],
) -> None:
    mock.get(kind.status_path).mock(side_effect=exc)

    with pytest.raises(ProviderError) as caught:
        await provider.status(kind.upstream_id)

    assert type(caught.value) is expected


# --- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("http_status", [401, 400, 500])
async def test_no_error_ever_quotes_the_key(
    kind: Kind, provider: Provider, mock: respx.MockRouter, http_status: int
) -> None:
    status, body = kind.error(http_status, f"key {KEY} is not valid here")
    mock.post(kind.create_path).respond(status, json=body)

    with pytest.raises(ProviderError) as caught:
        await provider.create(job())

    error = caught.value
    rendered = f"{error} {error!r} {error.message} {error.upstream_code}"
    assert KEY not in rendered
    assert "[redacted]" in rendered


def test_the_adapter_and_its_settings_never_show_the_key(kind: Kind) -> None:
    settings = kind.settings()
    adapter = kind.adapter(settings)

    assert KEY not in repr(adapter)
    assert KEY not in repr(settings)
    assert settings.name in repr(adapter)


async def test_aclose_closes_the_transport(kind: Kind) -> None:
    class Recording(httpx.AsyncBaseTransport):
        closed = False

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json=kind.created)

        async def aclose(self) -> None:
            self.closed = True

    transport = Recording()
    adapter = kind.adapter(kind.settings(), transport=transport)
    await adapter.create(job())

    await adapter.aclose()

    assert transport.closed
