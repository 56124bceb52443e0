"""Odd but well-formed requests get the documented answer: found by the API fuzzer
(tests/e2e/test_fuzz.py), each pinned here."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import IMAGE, Harness

PROBLEM = "application/problem+json"


def body(**fields: Any) -> dict[str, Any]:
    return {"prompt": "a red fox in snow", "image": IMAGE, **fields}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("TRACE", "/v1/videos", {"GET", "POST"}),
        ("PATCH", "/v1/videos/vid_x", {"GET", "DELETE"}),
        ("PUT", "/v1/providers", {"GET"}),
        ("GET", "/v1/callbacks/runapi/t", {"POST"}),
        ("POST", "/healthz", {"GET"}),
    ],
)
async def test_method_not_allowed_is_405_naming_the_allowed_methods(
    harness: Harness, method: str, path: str, allowed: set[str]
) -> None:
    response = await harness.client.request(method, path, headers=harness.headers())
    assert response.status_code == 405
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["code"] == "method_not_allowed"
    assert allowed <= {m.strip() for m in response.headers["allow"].split(",")}


async def test_unknown_member_with_an_empty_name_is_422_naming_it(harness: Harness) -> None:
    response = await harness.create({**body(), "": 1})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"
    assert response.json()["errors"] == [{"field": "", "message": "Extra inputs are not permitted"}]


@pytest.mark.parametrize("duration", [" 6\x1e", "\u300010\u2028", "\x1c6"])
async def test_duration_string_padded_with_unicode_whitespace_is_accepted(
    harness: Harness, duration: str
) -> None:
    response = await harness.create(body(duration=duration))
    assert response.status_code == 202, response.text
    assert response.json()["duration"] == int(duration.strip())


@pytest.mark.parametrize(
    "image",
    [
        "HTTP://example.com/a.png",
        "https://exa mple.com/a.png",
        "https://example.com/a b.png",
        "https://example.com/a\u3000.png",
        "https://example.com/a.png\n",
        "https://user:secret@example.com/a.png",
    ],
)
async def test_image_url_a_reseller_would_refuse_is_422_before_any_upstream_call(
    harness: Harness, image: str
) -> None:
    # These used to pass validation and come back from the reseller as 502 upstream_rejected.
    response = await harness.create(body(image=image))
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"
    assert [e["field"] for e in response.json()["errors"]] == ["image"]
    assert harness.upstream_creates == 0


async def test_webhook_url_with_an_out_of_range_port_is_422_not_500(
    harness_factory: Any,
) -> None:
    async def receiver(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("no webhook is sent here")

    h: Harness = await harness_factory(webhooks=receiver)
    response = await h.create(body(webhook_url="http://127.0.0.1:99999/hook"))
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["webhook_url"]
    assert h.upstream_creates == 0


PNG_URI = "data:image/png;base64,iVBORw0KGgoAAAAAAAAAAA=="


async def test_data_uri_with_a_trailing_newline_is_refused(harness: Harness) -> None:
    response = await harness.create(body(image=PNG_URI + "\n"))
    assert response.status_code == 422
    assert harness.upstream_creates == 0


async def test_data_uri_image_is_not_sent_to_resellers_that_take_only_urls(
    harness: Harness,
) -> None:
    response = await harness.create(body(image=PNG_URI))
    assert response.status_code == 422
    assert response.json()["code"] == "unsupported"
    assert harness.upstream_creates == 0


@pytest.mark.parametrize(
    ("path", "allowed"),
    [("/v1/videos", "GET, OPTIONS, POST"), ("/v1/videos/vid_x", "DELETE, GET, OPTIONS")],
)
async def test_options_names_every_method_of_a_path_with_several_handlers(
    harness: Harness, path: str, allowed: str
) -> None:
    # Litestar 2's own OPTIONS answer names only the first handler's method (litestar#4169).
    response = await harness.client.options(path, headers=harness.headers())
    assert response.status_code == 204
    assert response.headers["allow"] == allowed
