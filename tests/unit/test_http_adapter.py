"""providers.http.HTTPAdapter: what every reseller's adapter does alike, checked on each one."""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx

from providers.base import Provider
from providers.errors import (
    NotTaken,
    OutcomeUnknown,
    ProviderError,
    RateLimited,
    RequestRejected,
    Unreachable,
)
from tests.unit.adapter_helpers import (
    APIINONE,
    KEY,
    RUNAPI,
    Reseller,
    answer,
    envelope,
    job,
    mockable,
    reseller_id,
    upstream,
)

HTML = (b"<html>ok</html>", "text/html")
EMPTY = (b"", "application/json")


@pytest.fixture(params=[RUNAPI, APIINONE], ids=reseller_id)
def reseller(request: pytest.FixtureRequest) -> Reseller:
    assert isinstance(request.param, Reseller)
    return request.param


@pytest.fixture
def mock(reseller: Reseller) -> Iterator[respx.MockRouter]:
    with upstream(reseller) as router:
        yield router


@pytest.fixture
async def provider(reseller: Reseller, mock: respx.MockRouter) -> AsyncIterator[Provider]:
    adapter = reseller.adapter(reseller.settings(), transport=mockable())
    yield adapter
    await adapter.aclose()


# --- requests --------------------------------------------------------------------------------


async def test_create_of_text_to_video_job_is_rejected_without_any_http_call(
    reseller: Reseller, provider: Provider, mock: respx.MockRouter
) -> None:
    route = mock.post(reseller.create).respond(200, json=reseller.task)

    with pytest.raises(RequestRejected) as caught:
        await provider.create(job(image=None))

    assert not route.called
    assert caught.value.failover is False


async def test_status_encodes_the_upstream_id_into_one_path_segment(
    reseller: Reseller, provider: Provider, mock: respx.MockRouter
) -> None:
    route = mock.get(f"{reseller.status_prefix}/a%2Fb%3Fc").respond(200, json=reseller.task)

    await provider.status("a/b?c")

    assert route.called


# --- answers that say little -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("reseller", "body", "retry_after", "expected"),
    [
        (RUNAPI, {"error": "slow down"}, "17", 17.0),
        (APIINONE, envelope(None, 429, "Too many requests"), "30", 30.0),
    ],
    ids=reseller_id,
)
async def test_create_on_429_reads_retry_after_in_seconds(
    provider: Provider,
    mock: respx.MockRouter,
    reseller: Reseller,
    body: object,
    retry_after: str,
    expected: float,
) -> None:
    mock.post(reseller.create).respond(429, json=body, headers={"Retry-After": retry_after})

    with pytest.raises(RateLimited) as caught:
        await provider.create(job())

    assert caught.value.retry_after_s == expected
    assert caught.value.failover is True


@pytest.mark.parametrize(
    ("reseller", "body", "delay_s"),
    [(RUNAPI, {"error": "slow down"}, 120), (APIINONE, envelope(None, 429, "slow"), 60)],
    ids=reseller_id,
)
async def test_create_on_429_reads_retry_after_as_an_http_date(
    provider: Provider, mock: respx.MockRouter, reseller: Reseller, body: object, delay_s: int
) -> None:
    when = email.utils.formatdate(time.time() + delay_s, usegmt=True)
    mock.post(reseller.create).respond(429, json=body, headers={"Retry-After": when})

    with pytest.raises(RateLimited) as caught:
        await provider.create(job())

    assert caught.value.retry_after_s is not None
    assert delay_s - 20.0 < caught.value.retry_after_s <= delay_s + 1.0


@pytest.mark.parametrize(
    ("reseller", "content", "content_type"),
    [
        (RUNAPI, *HTML),
        (RUNAPI, *EMPTY),
        (RUNAPI, b'{"status": "pending"}', "application/json"),
        (RUNAPI, b'["not", "an", "object"]', "application/json"),
        (RUNAPI, b'{"id": "", "status": "pending"}', "application/json"),
        (APIINONE, *HTML),
        (APIINONE, *EMPTY),
        (APIINONE, b'{"code": 200, "message": "success", "data": null}', "application/json"),
        (
            APIINONE,
            b'{"code": 200, "message": "success", "data": {"status": "PENDING"}}',
            "application/json",
        ),
        (APIINONE, b'{"task_id": "top-level-is-not-the-envelope"}', "application/json"),
    ],
    ids=reseller_id,
)
async def test_create_2xx_without_a_readable_task_id_is_outcome_unknown(
    provider: Provider,
    mock: respx.MockRouter,
    reseller: Reseller,
    content: bytes,
    content_type: str,
) -> None:
    mock.post(reseller.create).respond(200, content=content, headers={"Content-Type": content_type})

    with pytest.raises(OutcomeUnknown) as caught:
        await provider.create(job())

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
    reseller: Reseller,
    provider: Provider,
    mock: respx.MockRouter,
    exc: Exception,
    expected: type[ProviderError],
) -> None:
    mock.post(reseller.create).mock(side_effect=exc)

    with pytest.raises(ProviderError) as caught:
        await provider.create(job())

    assert type(caught.value) is expected
    assert caught.value.failover is (expected is Unreachable)
    assert isinstance(caught.value, NotTaken) is (expected is Unreachable)


# --- secrets and lifecycle -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reseller", "http_status", "body"),
    [
        (RUNAPI, 401, {"error": {"code": KEY, "message": f"Invalid API key {KEY}"}}),
        (RUNAPI, 401, {"error": f"key {KEY} revoked"}),
        (RUNAPI, 500, f"<html>Authorization: Bearer {KEY}</html>"),
        (RUNAPI, 422, {"error": "Validation failed", "errors": {"auth": [f"bad {KEY}"]}}),
        (APIINONE, 401, envelope(None, 401, f"Invalid API key: {KEY}")),
        (APIINONE, 200, envelope(None, 402, f"account {KEY} has no credits")),
        (APIINONE, 502, f"<html>upstream said Bearer {KEY}</html>"),
    ],
    ids=reseller_id,
)
async def test_errors_never_quote_the_api_key_even_when_the_upstream_echoes_it(
    provider: Provider, mock: respx.MockRouter, reseller: Reseller, http_status: int, body: object
) -> None:
    answer(mock.post(reseller.create), http_status, body)

    with pytest.raises(ProviderError) as caught:
        await provider.create(job())

    error = caught.value
    rendered = f"{error} {error!r} {error.message} {error.upstream_code}"
    assert KEY not in rendered
    assert "[redacted]" in rendered


def test_repr_of_adapter_and_settings_hides_the_api_key(reseller: Reseller) -> None:
    settings = reseller.settings()
    adapter = reseller.adapter(settings)
    assert KEY not in repr(adapter)
    assert KEY not in repr(settings)
    assert reseller.account in repr(adapter)


async def test_aclose_closes_the_transport(reseller: Reseller) -> None:
    class Recording(httpx.AsyncBaseTransport):
        closed = False

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json=reseller.task)

        async def aclose(self) -> None:
            self.closed = True

    transport = Recording()
    adapter = reseller.adapter(reseller.settings(), transport=transport)
    await adapter.create(job())

    await adapter.aclose()

    assert transport.closed
