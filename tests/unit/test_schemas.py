from __future__ import annotations

import base64
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.schemas import CreateVideoRequest


def fields_of(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in exc.errors()}


def invalid(body: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as info:
        CreateVideoRequest.model_validate(body)
    return fields_of(info.value)


def test_defaults_fill_a_minimal_request() -> None:
    req = CreateVideoRequest.model_validate({"prompt": "  a cat  "})
    assert (req.model, req.tier, req.duration, req.resolution) == (
        "hailuo-2.3",
        "standard",
        6,
        "768P",
    )
    assert req.prompt == "a cat"
    assert req.image is None
    assert req.metadata == {}


@pytest.mark.parametrize(("given", "expected"), [("6", 6), ("10", 10), (6, 6), (10, 10)])
def test_duration_accepts_integers_and_their_strings(given: Any, expected: int) -> None:
    assert (
        CreateVideoRequest.model_validate({"prompt": "p", "duration": given}).duration == expected
    )


@pytest.mark.parametrize("given", [5, "7", 6.0, True, None, "six"])
def test_duration_refuses_anything_else(given: Any) -> None:
    assert invalid({"prompt": "p", "duration": given}) == {"duration"}


@pytest.mark.parametrize("given", ["768p", "1080P", "1080p", " 768P "])
def test_resolution_is_case_insensitive(given: str) -> None:
    req = CreateVideoRequest.model_validate({"prompt": "p", "resolution": given})
    assert req.resolution == given.strip().upper()


def test_ten_seconds_at_1080p_is_refused_naming_resolution() -> None:
    assert invalid({"prompt": "p", "duration": 10, "resolution": "1080P"}) == {"resolution"}


def test_unknown_field_is_refused_by_name() -> None:
    assert invalid({"prompt": "p", "negative_prompt": "x"}) == {"negative_prompt"}


@pytest.mark.parametrize("prompt", ["", "   ", "x" * 2001])
def test_prompt_must_be_1_to_2000_characters_after_trimming(prompt: str) -> None:
    assert invalid({"prompt": prompt}) == {"prompt"}


def test_prompt_of_2000_characters_plus_whitespace_is_accepted() -> None:
    assert len(CreateVideoRequest.model_validate({"prompt": " " + "x" * 2000 + " "}).prompt) == 2000


@pytest.mark.parametrize(
    "image",
    ["https://example.com/a.png", "http://127.0.0.1/x.jpg", "data:image/png;base64,iVBORw0KGgo="],
)
def test_image_accepts_http_urls_and_image_data_uris(image: str) -> None:
    assert CreateVideoRequest.model_validate({"prompt": "p", "image": image}).image == image


@pytest.mark.parametrize(
    "image",
    ["ftp://example.com/a.png", "example.com/a.png", "data:image/gif;base64,R0lGOD=",
     "data:text/plain;base64,aGk=", "data:image/png;base64,***"],
)  # fmt: skip
def test_image_refuses_other_schemes_and_types(image: str) -> None:
    assert invalid({"prompt": "p", "image": image}) == {"image"}


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\0" * 64).decode()
WEBP = base64.b64encode(b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 64).decode()


@pytest.mark.parametrize(
    "uri",
    [f"data:image/png;base64,{PNG}", f"data:image/jpeg;base64,{JPEG}",
     f"data:image/webp;base64,{WEBP}"],
)  # fmt: skip
def test_data_uri_images_of_each_type_are_accepted(uri: str) -> None:
    assert CreateVideoRequest.model_validate({"prompt": "p", "image": uri}).image == uri


@pytest.mark.parametrize(
    "uri",
    [f"data:image/png;base64,{JPEG}", f"data:image/webp;base64,{PNG}",
     "data:image/jpeg;base64,PD94bWwgdmVyc2lvbj0iMS4wIj8+"],
)  # fmt: skip
def test_data_uri_whose_bytes_are_not_the_declared_type_is_refused(uri: str) -> None:
    assert invalid({"prompt": "p", "image": uri}) == {"image"}


def test_data_uri_over_ten_mib_is_refused() -> None:
    big = "data:image/png;base64," + PNG + "A" * (14 * 1024 * 1024)
    assert invalid({"prompt": "p", "image": big}) == {"image"}


def test_webhook_url_must_be_http() -> None:
    assert invalid({"prompt": "p", "webhook_url": "file:///etc/passwd"}) == {"webhook_url"}


def test_metadata_limits() -> None:
    assert invalid({"prompt": "p", "metadata": {str(i): "v" for i in range(17)}}) == {"metadata"}
    assert invalid({"prompt": "p", "metadata": {"k": "v" * 513}}) == {"metadata"}
    assert invalid({"prompt": "p", "metadata": {"k": 1}}) == {"metadata.k"}


def test_routing_overrides_refuse_unknown_strategy_and_fields() -> None:
    assert invalid({"prompt": "p", "routing": {"strategy": "fastest"}}) == {"routing.strategy"}
    assert invalid({"prompt": "p", "routing": {"region": "eu"}}) == {"routing.region"}
    assert invalid({"prompt": "p", "routing": {"max_price_usd": 0}}) == {"routing.max_price_usd"}


def test_tier_must_be_standard_or_pro() -> None:
    assert invalid({"prompt": "p", "tier": "ultra"}) == {"tier"}


@pytest.mark.parametrize("image", [None, "absent"])
def test_fast_without_an_image_is_refused_naming_image(image: str | None) -> None:
    body: dict[str, Any] = {"prompt": "x", "model": "hailuo-2.3-fast"}
    if image is None:
        body["image"] = None
    with pytest.raises(ValidationError) as caught:
        CreateVideoRequest.model_validate(body)
    assert [e["loc"] for e in caught.value.errors()] == [("image",)]


def test_fast_with_an_image_and_hailuo_without_one_are_accepted() -> None:
    fast = CreateVideoRequest.model_validate(
        {"prompt": "x", "model": "hailuo-2.3-fast", "image": "https://example.com/a.png"}
    )
    text = CreateVideoRequest.model_validate({"prompt": "x"})
    assert (fast.model, text.image) == ("hailuo-2.3-fast", None)
