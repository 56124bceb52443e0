"""providers.http.HTTPAdapter: shapes particular to RunAPI and API in One.

What every adapter does alike (error classes, failover verdicts, Retry-After, transport
failures, secrets, lifecycle) is checked for every kind in ``tests/unit/conformance``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import respx

from providers.base import Provider
from providers.errors import OutcomeUnknown
from tests.unit.adapter_helpers import (
    APIINONE,
    RUNAPI,
    Reseller,
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


# --- reseller-specific shapes --------------------------------------------------------------


async def test_status_encodes_the_upstream_id_into_one_path_segment(
    reseller: Reseller, provider: Provider, mock: respx.MockRouter
) -> None:
    route = mock.get(f"{reseller.status_prefix}/a%2Fb%3Fc").respond(200, json=reseller.task)

    await provider.status("a/b?c")

    assert route.called


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

    assert caught.value.taken is None
    assert caught.value.failover is False
