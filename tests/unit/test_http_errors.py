"""providers.http: status and transport failures onto the error tree, Retry-After, redaction."""

from __future__ import annotations

import email.utils

import httpx
import pytest
from pydantic import SecretStr

from providers.base import ProviderSettings
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
from providers.http import (
    UpstreamClient,
    describe_shape,
    error_for_status,
    json_body,
    parse_retry_after,
    send,
)
from tests.unit.adapter_helpers import KEY

NOW = 1_800_000_000.0


def settings() -> ProviderSettings:
    return ProviderSettings(name="acct", base_url="https://up.test", api_key=SecretStr(KEY))


def answer(status: int, *, text: str = "", headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request(
        "POST", "https://up.test/create", headers={"Authorization": f"Bearer {KEY}"}
    )
    return httpx.Response(status, text=text, headers=headers, request=request)


# --- Retry-After -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        (email.utils.formatdate(NOW + 90, usegmt=True), 90.0),
        (email.utils.formatdate(NOW - 90, usegmt=True), 0.0),
        ("soon", None),
        ("1.5", None),
        ("-3", None),
        ("²", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after_reads_seconds_and_http_dates(
    value: str | None, expected: float | None
) -> None:
    assert parse_retry_after(value, now=NOW) == expected


# --- status codes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "code", "expected"),
    [
        (400, "prompt is required", None, RequestRejected),
        (422, "bad duration", "invalid", RequestRejected),
        (409, "conflict", None, RequestRejected),
        (400, "prompt rejected by safety checker", None, ContentRejected),
        (422, "rejected", "content_policy_violation", ContentRejected),
        (403, "NSFW input", None, ContentRejected),
        (403, "forbidden", None, AccountError),
        (401, "bad key", None, AccountError),
        (402, "Insufficient credits", None, AccountError),
        (404, "no such task", None, TaskNotFound),
        (429, "slow down", None, RateLimited),
        (500, "oops", None, UpstreamServerError),
        (503, None, None, UpstreamServerError),
        (504, "gateway timeout", None, OutcomeUnknown),
        (524, "a timeout occurred", None, OutcomeUnknown),
        (302, "moved", None, OutcomeUnknown),
    ],
)
def test_error_for_status_maps_each_status_onto_the_tree(
    status: int, message: str | None, code: str | None, expected: type[ProviderError]
) -> None:
    error = error_for_status("acct", answer(status), message=message, code=code)

    assert type(error) is expected
    assert error.http_status == status
    assert error.upstream_code == code
    assert error.provider == "acct"


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (402, "Insufficient credits, see our billing policy", AccountError),
        (401, "key lacks the content:write scope", AccountError),
        (429, "too many content generations", RateLimited),
        (404, "content not found", TaskNotFound),
    ],
)
def test_unambiguous_statuses_win_over_content_keywords(
    status: int, message: str, expected: type[ProviderError]
) -> None:
    error = error_for_status("acct", answer(status), message=message, code=None)

    assert type(error) is expected


def test_http_status_override_maps_an_envelope_failure_under_http_200() -> None:
    error = error_for_status(
        "acct", answer(200), message="Insufficient credits", code="402", http_status=402
    )

    assert isinstance(error, AccountError)
    assert error.http_status == 402
    assert error.failover is True


def test_rate_limited_carries_retry_after_from_the_response_header() -> None:
    error = error_for_status(
        "acct", answer(429, headers={"Retry-After": "42"}), message=None, code=None
    )

    assert isinstance(error, RateLimited)
    assert error.retry_after_s == 42.0


def test_html_error_page_becomes_a_short_single_line_message() -> None:
    page = "<html>\n<head><title>502 Bad Gateway</title></head>\n" + "<p>x</p>" * 200 + "</html>"

    error = error_for_status("acct", answer(502, text=page), message=None, code=None)

    assert isinstance(error, UpstreamServerError)
    assert error.message.startswith("HTTP 502 Bad Gateway: <html> <head><title>502")
    assert "\n" not in error.message
    assert len(error.message) <= 240


def test_error_without_body_falls_back_to_the_reason_phrase() -> None:
    error = error_for_status("acct", answer(503), message=None, code=None)

    assert error.message == "Service Unavailable"


@pytest.mark.parametrize(
    ("status", "text", "message", "code"),
    [
        (401, "", f"invalid key {KEY}", None),
        (400, "", "bad request", f"key:{KEY}"),
        (500, f"<pre>Authorization: Bearer {KEY}</pre>", None, None),
    ],
)
def test_error_text_never_quotes_the_key_the_request_carried(
    status: int, text: str, message: str | None, code: str | None
) -> None:
    error = error_for_status("acct", answer(status, text=text), message=message, code=code)

    assert KEY not in f"{error} {error!r} {error.message} {error.upstream_code}"
    assert "[redacted]" in f"{error.message} {error.upstream_code}"


def test_error_for_a_response_without_request_still_maps() -> None:
    error = error_for_status("acct", httpx.Response(402, text="x"), message=None, code=None)

    assert isinstance(error, AccountError)


# --- transport failures ----------------------------------------------------------------------


def _raising(exc: Exception) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), Unreachable),
        (httpx.ConnectTimeout("handshake"), Unreachable),
        (httpx.PoolTimeout("pool full"), Unreachable),
        (httpx.UnsupportedProtocol("ftp"), Unreachable),
        (httpx.ReadTimeout("slow"), OutcomeUnknown),
        (httpx.WriteTimeout("slow"), OutcomeUnknown),
        (httpx.ReadError("reset"), OutcomeUnknown),
        (httpx.RemoteProtocolError("closed"), OutcomeUnknown),
    ],
)
async def test_send_tells_unsent_requests_from_unanswered_ones(
    exc: Exception, expected: type[ProviderError]
) -> None:
    async with UpstreamClient(settings(), _raising(exc)) as client:
        with pytest.raises(ProviderError) as caught:
            await send(client, "acct", "POST", "/create", json={"a": 1})

    assert type(caught.value) is expected
    assert caught.value.__cause__ is exc
    assert caught.value.taken is (False if expected is Unreachable else None)


async def test_send_maps_an_undecodable_body_to_outcome_unknown() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip")

    async with UpstreamClient(settings(), httpx.MockTransport(handler)) as client:
        with pytest.raises(OutcomeUnknown):
            await send(client, "acct", "POST", "/create")


async def test_send_returns_http_errors_as_responses() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(503, text="down"))

    async with UpstreamClient(settings(), transport) as client:
        response = await send(client, "acct", "GET", "/status")

    assert response.status_code == 503


async def test_build_client_sends_bearer_key_and_user_agent_to_the_base_url() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    async with UpstreamClient(settings(), httpx.MockTransport(handler)) as client:
        await send(client, "acct", "GET", "/status/1")

    assert seen[0].headers["Authorization"] == f"Bearer {KEY}"
    assert seen[0].headers["User-Agent"].startswith("hailuo-gateway/")
    assert str(seen[0].url) == "https://up.test/status/1"


# --- bodies ----------------------------------------------------------------------------------


def test_json_body_is_none_for_html_and_empty_bodies() -> None:
    assert json_body(answer(502, text="<html>bad gateway</html>")) is None
    assert json_body(answer(200)) is None
    assert json_body(httpx.Response(200, json={"id": "1"})) == {"id": "1"}


def test_describe_shape_lists_keys_and_never_values() -> None:
    body = {"data": {"task_id": "secret-id", "urls": ["https://cdn/x.mp4"], "meta": None}}

    shape = describe_shape(body)

    assert shape == "{data: {meta, task_id, urls: [1 x str]}}"
    assert "secret-id" not in shape
    assert "cdn" not in shape
