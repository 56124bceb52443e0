"""``/schema/openapi.json`` says what the app does: every status each route answers, with its
media type, and request schemas that accept exactly what the validators accept. Regression tests
for what the API fuzzer (tests/e2e/test_fuzz.py) found."""

from __future__ import annotations

import re
import sys
from typing import Any

import jsonschema_rs
import pytest

from gateway.schemas import WHITESPACE
from tests.integration.conftest import IMAGE, Harness, minimax_config

PROBLEM = "application/problem+json"
JSON = "application/json"


async def openapi(h: Harness) -> dict[str, Any]:
    response = await h.client.get("/schema/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def answers(document: dict[str, Any], path: str, method: str) -> dict[str, str | None]:
    """Status → media type (None for no body) of one operation."""
    responses = document["paths"][path][method]["responses"]
    return {
        status: next(iter(spec["content"]), None) if spec.get("content") else None
        for status, spec in responses.items()
    }


async def test_openapi_documents_every_status_each_route_answers(harness: Harness) -> None:
    document = await openapi(harness)
    assert answers(document, "/v1/videos", "post") == {
        "200": JSON, "202": JSON, "400": PROBLEM, "401": PROBLEM, "402": PROBLEM, "409": PROBLEM,
        "413": PROBLEM, "422": PROBLEM, "429": PROBLEM, "502": PROBLEM, "503": PROBLEM,
        "504": PROBLEM,
    }  # fmt: skip
    assert answers(document, "/v1/videos/{task_id}", "get") == {
        "200": JSON, "400": PROBLEM, "401": PROBLEM, "404": PROBLEM, "429": PROBLEM,
        "503": PROBLEM,
    }  # fmt: skip
    assert answers(document, "/v1/videos", "get") == {
        "200": JSON, "400": PROBLEM, "401": PROBLEM, "422": PROBLEM, "429": PROBLEM,
        "503": PROBLEM,
    }  # fmt: skip
    assert answers(document, "/v1/videos/{task_id}", "delete") == {
        "200": JSON, "400": PROBLEM, "401": PROBLEM, "404": PROBLEM, "409": PROBLEM,
        "429": PROBLEM,
        "503": PROBLEM,
    }  # fmt: skip
    assert answers(document, "/v1/providers", "get") == {
        "200": JSON, "401": PROBLEM, "429": PROBLEM, "503": PROBLEM,
    }  # fmt: skip
    assert answers(document, "/v1/usage", "get") == {
        "200": JSON, "400": PROBLEM, "401": PROBLEM, "422": PROBLEM, "429": PROBLEM,
        "503": PROBLEM,
    }  # fmt: skip
    for callbacks in ("/callbacks/{provider}/{token}", "/v1/callbacks/{provider}/{token}"):
        assert answers(document, callbacks, "post") == {
            "200": JSON, "204": None, "400": PROBLEM, "404": PROBLEM, "503": PROBLEM,
        }  # fmt: skip
    assert answers(document, "/healthz", "get") == {"200": JSON}
    video = "video/mp4"
    assert answers(document, "/v1/videos/{task_id}/content", "get") == {
        "200": video, "206": video, "302": None, "304": None, "400": PROBLEM, "401": PROBLEM,
        "404": PROBLEM, "416": PROBLEM, "429": PROBLEM, "503": PROBLEM,
    }  # fmt: skip
    assert answers(document, "/v1/videos/{task_id}/content", "head") == {
        status: None for status in answers(document, "/v1/videos/{task_id}/content", "get")
    }
    assert answers(document, "/readyz", "get") == {"200": JSON, "503": JSON}


async def test_every_problem_answer_is_documented_with_the_problem_schema(
    harness: Harness,
) -> None:
    document = await openapi(harness)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "head":
                continue  # no body at all (the GET beside it documents the problem)
            for status, spec in operation["responses"].items():
                if status.startswith(("4", "5")) and (path, status) != ("/readyz", "503"):
                    schema = spec["content"][PROBLEM]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Problem"}, (method, path)


async def test_openapi_names_the_bearer_scheme_on_v1_routes_only(harness: Harness) -> None:
    document = await openapi(harness)
    assert document["components"]["securitySchemes"]["BearerAuth"]["scheme"] == "bearer"
    for path, item in document["paths"].items():
        for operation in item.values():
            guarded = path.startswith("/v1/") and not path.startswith("/v1/callbacks/")
            assert (operation.get("security") == [{"BearerAuth": []}]) is guarded, path


async def test_rate_limited_answers_document_retry_after(harness: Harness) -> None:
    document = await openapi(harness)
    for status in ("402", "429"):  # over budget, over rate
        headers = document["paths"]["/v1/videos"]["post"]["responses"][status]["headers"]
        assert headers["Retry-After"]["required"] is True


async def test_openapi_offers_webhook_url_only_when_webhooks_are_configured(
    harness: Harness, harness_factory: Any
) -> None:
    without = (await openapi(harness))["components"]["schemas"]["CreateVideoRequest"]
    assert "webhook_url" not in without["properties"]

    async def receiver(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("no webhook is sent here")

    with_webhooks: Harness = await harness_factory(webhooks=receiver)
    document = await openapi(with_webhooks)
    assert "webhook_url" in document["components"]["schemas"]["CreateVideoRequest"]["properties"]


PNG = "data:image/png;base64,iVBORw0KGgoAAAAAAAAAAA=="
# (body overrides, valid?) for bodies where the document and the validators used to disagree.
EDGES: list[tuple[dict[str, Any], bool]] = [
    ({"prompt": ""}, False),
    ({"prompt": " \u3000\x1c "}, False),  # only whitespace, as str.strip() sees it
    ({"prompt": "\x1cx\u2028"}, True),
    ({"prompt": "x" * 2000 + "\n "}, True),
    ({"prompt": "x" * 2001}, False),
    ({"": 1}, False),
    ({"colour": "red"}, False),
    ({"routing": {"providers": []}}, False),
    ({"routing": {"providers": ["apiinone", "runapi"]}}, True),
    ({"routing": {"providers": ["nope"]}}, False),
    ({"routing": {"max_price_usd": 0}}, False),
    ({"routing": {"max_price_usd": True}}, False),  # found by the fuzzer: read as 1.0
    ({"routing": {"max_price_usd": "0.45"}}, False),
    ({"routing": {"max_price_usd": 1}}, True),
    ({"routing": {"region": "eu"}}, False),
    ({"model": "hailuo-9"}, False),
    ({"duration": "10"}, True),
    ({"duration": " 6\x1e"}, True),
    ({"duration": "7"}, False),
    ({"duration": 6.5}, False),
    ({"resolution": "1080p"}, True),
    ({"resolution": "\u3000768P "}, True),
    ({"resolution": "720P"}, False),
    ({"duration": 10, "resolution": "1080P"}, False),
    ({"duration": "10", "resolution": " 1080p"}, False),
    ({"metadata": {str(i): "v" for i in range(17)}}, False),
    ({"metadata": {"": "v"}}, False),
    ({"metadata": {"k": "v" * 513}}, False),
    ({"metadata": {"k" * 64: "v" * 512}}, True),
    ({"image": "HTTP://example.com/a.png"}, False),
    ({"image": "https://example.com/a b.png"}, False),
    ({"image": "https://example.com/a\u3000.png"}, False),
    ({"image": "https://user:pw@example.com/a.png"}, False),
    ({"image": "https://example.com:65536/a.png"}, False),
    ({"image": "https://example.com:65535/a.png?x=1#f"}, True),
    ({"image": PNG}, True),
    ({"image": PNG + "\n"}, False),
    ({"image": "data:image/png;base64,iVBORw0K Ggo="}, False),
    ({"image": "data:image/jpeg;base64,iVBORw0KGgo="}, False),
    ({"webhook_url": "https://example.com/hook"}, False),  # no webhook secret configured
    # OpenAI's field names (api.md §6)
    ({"seconds": "10"}, True),
    ({"seconds": 6}, True),
    ({"seconds": "4"}, False),
    ({"seconds": None}, False),
    ({"size": "1280x720"}, True),
    ({"size": "1080x1920"}, True),
    ({"size": " 1080p"}, True),
    ({"size": "0x720"}, False),
    ({"size": "big"}, False),
    ({"size": "1920x1080", "seconds": 10}, False),
    ({"size": "1920x1080", "duration": "10"}, False),
    ({"resolution": "1080P", "seconds": "10"}, False),
    ({"seconds": "6", "duration": 6}, True),
    ({"seconds": "10", "duration": 6}, False),
    ({"size": "768p", "resolution": "768P"}, True),
    ({"size": "1280x720", "resolution": "768P"}, True),
    ({"size": "1080x1080", "resolution": "768P"}, False),
    ({"image": None, "input_reference": {"image_url": IMAGE}}, True),
    ({"image": None, "input_reference": {"image_url": PNG}}, True),
    ({"input_reference": {"image_url": IMAGE}}, False),  # the image given twice
    ({"input_reference": None}, True),
    ({"image": None, "input_reference": {"image_url": "ftp://x"}}, False),
    ({"image": None, "input_reference": {"file_id": "file_1"}}, False),
    ({"image": None, "input_reference": {"image_url": IMAGE, "detail": "high"}}, False),
    ({"image": None, "input_reference": IMAGE}, False),
]
# The same, as OpenAI's multipart form (every value a string; ``image`` may be left out).
FORM_EDGES: list[tuple[dict[str, Any], bool]] = [
    ({}, True),
    ({"seconds": "10", "size": "1280x720"}, True),
    ({"size": "1080x1920", "duration": "10"}, False),
    ({"seconds": "10", "duration": "6"}, False),
    ({"tier": "pro", "model": "hailuo-2.3"}, True),
    ({"metadata[order]": "A-1", "metadata[team]": "video"}, True),
    ({"metadata[k]": "v" * 513}, False),
    ({"routing[providers][]": ["apiinone", "runapi"], "routing[strategy]": "priority"}, True),
    ({"routing[providers][]": ["nope"]}, False),
    ({"routing[max_price_usd]": "0.45"}, True),
    ({"routing[max_price_usd]": "0"}, False),
    ({"routing[max_price_usd]": "inf"}, False),
    ({"routing[max_price_usd]": " 0.45"}, False),
    ({"routing[max_price_usd]": "1e3"}, False),
    ({"routing[speed]": "fast"}, False),
    ({"colour": "red"}, False),
    ({"image": None, "input_reference[image_url]": IMAGE}, True),
    ({"input_reference[image_url]": IMAGE}, False),
    ({"metadata": "A-1"}, False),
]


@pytest.mark.parametrize(("fields", "valid"), EDGES)
async def test_request_schema_and_validators_agree(
    harness: Harness, fields: dict[str, Any], valid: bool
) -> None:
    document = await openapi(harness)
    validator = jsonschema_rs.validator_for(
        {"$ref": "#/components/schemas/CreateVideoRequest", "components": document["components"]}
    )
    body = {"prompt": "a red fox", "image": IMAGE, **fields}
    assert validator.is_valid(body) is valid
    response = await harness.create(body)
    refused = response.status_code in (400, 422) and response.json()["code"] == "invalid_request"
    assert refused is not valid, response.text


@pytest.mark.parametrize(("fields", "valid"), FORM_EDGES)
async def test_form_schema_and_validators_agree(
    harness: Harness, fields: dict[str, Any], valid: bool
) -> None:
    document = await openapi(harness)
    validator = jsonschema_rs.validator_for(
        {"$ref": "#/components/schemas/CreateVideoForm", "components": document["components"]}
    )
    form = {k: v for k, v in {"prompt": "a red fox", "image": IMAGE, **fields}.items() if v}
    assert validator.is_valid(form) is valid
    response = await harness.client.post(
        "/v1/videos",
        files=[
            (k, (None, item))
            for k, v in form.items()
            for item in (v if isinstance(v, list) else [v])
        ],
        headers=harness.headers(),
    )
    refused = response.status_code in (400, 422) and response.json()["code"] == "invalid_request"
    assert refused is not valid, response.text


FAST_EDGES: list[tuple[dict[str, Any], bool]] = [
    ({"prompt": "a red fox", "model": "hailuo-2.3-fast", "image": IMAGE}, True),
    ({"prompt": "a red fox", "model": "hailuo-2.3-fast", "image": PNG}, True),
    ({"prompt": "a red fox", "model": "hailuo-2.3-fast"}, False),
    ({"prompt": "a red fox", "model": "hailuo-2.3-fast", "image": None}, False),
    ({"prompt": "a red fox", "model": "hailuo-2.3"}, True),
    ({"prompt": "a red fox", "image": None}, True),
    (
        {"prompt": "a red fox", "model": "hailuo-2.3-fast", "duration": 10, "resolution": "1080P"},
        False,
    ),
]


@pytest.mark.parametrize(("body", "valid"), FAST_EDGES)
async def test_image_only_models_are_refused_without_an_image_by_document_and_validators(
    harness_factory: Any, body: dict[str, Any], valid: bool
) -> None:
    h: Harness = await harness_factory(providers={"minimax": minimax_config()})
    document = await openapi(h)
    assert document["components"]["schemas"]["CreateVideoRequest"]["properties"]["model"][
        "enum"
    ] == ["hailuo-2.3", "hailuo-2.3-fast"]
    validator = jsonschema_rs.validator_for(
        {"$ref": "#/components/schemas/CreateVideoRequest", "components": document["components"]}
    )
    assert validator.is_valid(body) is valid
    response = await h.create(body)
    refused = response.status_code in (400, 422) and response.json()["code"] == "invalid_request"
    assert refused is not valid, response.text


async def test_both_request_forms_are_documented(harness: Harness) -> None:
    body = (await openapi(harness))["paths"]["/v1/videos"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateVideoRequest"
    }
    form = body["content"]["multipart/form-data"]
    assert form["schema"] == {"$ref": "#/components/schemas/CreateVideoForm"}
    assert form["encoding"]["input_reference"]["contentType"] == "image/png, image/jpeg, image/webp"


def test_documented_whitespace_is_exactly_what_str_strip_removes() -> None:
    # The patterns spell out the whitespace class so every regex dialect reads it alike; it must
    # stay the set the validators trim, or the document and the server disagree again.
    spelled = re.compile(f"[{WHITESPACE}]")
    every = (chr(c) for c in range(sys.maxunicode + 1))
    assert {ch for ch in every if spelled.fullmatch(ch)} == {
        chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()
    }


async def test_task_lookups_document_the_task_schema_though_the_body_is_encoded_by_hand(
    harness: Harness,
) -> None:
    document = await openapi(harness)
    for path, method, status in (
        ("/v1/videos/{task_id}", "get", "200"),
        ("/v1/videos", "post", "202"),
    ):
        spec = document["paths"][path][method]["responses"][status]["content"][JSON]["schema"]
        assert spec == {"$ref": "#/components/schemas/Task"}, (path, spec)
