"""api.md §6: ``POST /v1/videos`` as OpenAI's multipart form and with OpenAI's JSON field names,
through the real app, a real Redis and the simulated resellers. Every form is validated once, as
the canonical request: the errors are the canonical ones, naming the field the client sent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from gateway.openai_compat import LARGEST_UPLOAD, POLL_AFTER_HEADER
from tests.integration.conftest import IMAGE, Harness, asgi

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 64
PROMPT = "a red fox in snow"
BOUNDARY = "gw-test-boundary"


def multipart(fields: dict[str, Any]) -> bytes:
    """Text fields as a multipart body (a list repeats its key, as the SDK writes arrays)."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{item}\r\n'
        for key, value in fields.items()
        for item in (value if isinstance(value, list) else [value])
    ]
    return ("".join(parts) + f"--{BOUNDARY}--\r\n").encode()


async def post_form(h: Harness, fields: dict[str, Any]) -> httpx.Response:
    return await h.client.post(
        "/v1/videos",
        content=multipart(fields),
        headers={**h.headers(), "content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    )


async def post_upload(
    h: Harness, fields: dict[str, str], name: str, data: bytes, content_type: str
) -> httpx.Response:
    return await h.client.post(
        "/v1/videos",
        data=fields,
        files={"input_reference": (name, data, content_type)},
        headers=h.headers(),
    )


def fields_named(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    return [e["field"] for e in response.json().get("errors", [response.json()])]


async def test_form_with_an_image_url_creates_the_task_with_openai_fields(h: Harness) -> None:
    response = await post_form(h, {
        "prompt": PROMPT, "input_reference[image_url]": IMAGE, "seconds": "10",
        "size": "1280x720", "metadata[order]": "A-1", "routing[providers][]": ["apiinone"],
    })  # fmt: skip
    assert response.status_code == 202, response.text
    task = response.json()
    assert (task["duration"], task["resolution"]) == (10, "768P")
    assert (task["seconds"], task["size"]) == ("10", "768P")
    assert 0 <= task["progress"] < 100
    assert task["metadata"] == {"order": "A-1"}
    assert task["provider"] == "apiinone"
    assert response.headers[POLL_AFTER_HEADER] == "1000"  # status.poll_interval_s: 1


async def test_json_with_openai_field_names_is_the_same_request(h: Harness) -> None:
    """The shape the Node SDK sends (JSON unless a file is attached)."""
    response = await h.create({
        "prompt": PROMPT, "model": "hailuo-2.3", "seconds": 6, "size": "1920x1080",
        "input_reference": {"image_url": IMAGE},
    })  # fmt: skip
    assert response.status_code == 202, response.text
    task = response.json()
    assert (task["duration"], task["resolution"], task["mode"]) == (6, "1080P", "image_to_video")


@pytest.mark.parametrize(
    ("size", "resolution"),
    [("720x1280", "768P"), ("1079x5000", "768P"), ("1080x1920", "1080P"), ("1080p", "1080P")],
)
async def test_size_reads_the_short_side(h: Harness, size: str, resolution: str) -> None:
    response = await h.create({"prompt": PROMPT, "image": IMAGE, "size": size})
    assert response.status_code == 202, response.text
    assert response.json()["resolution"] == resolution


async def test_errors_name_the_field_the_client_sent(h: Harness) -> None:
    response = await h.create({"prompt": PROMPT, "image": IMAGE, "seconds": "4", "size": "big"})
    assert sorted(fields_named(response)) == ["seconds", "size"]
    ten_at_1080 = await post_form(h, {
        "prompt": PROMPT, "input_reference[image_url]": IMAGE, "seconds": "10",
        "size": "1920x1080",
    })  # fmt: skip
    assert fields_named(ten_at_1080) == ["size"]
    bad_url = await h.create({"prompt": PROMPT, "input_reference": {"image_url": "ftp://x"}})
    assert fields_named(bad_url) == ["input_reference.image_url"]
    assert h.upstream_creates == 0


async def test_two_spellings_that_disagree_are_422_naming_openais(h: Harness) -> None:
    response = await h.create({"prompt": PROMPT, "image": IMAGE, "seconds": "10", "duration": 6})
    assert fields_named(response) == ["seconds"]
    response = await h.create({"prompt": PROMPT, "image": IMAGE, "size": "1080P",
                               "resolution": "768P"})  # fmt: skip
    assert fields_named(response) == ["size"]
    twice = await h.create({"prompt": PROMPT, "image": IMAGE,
                            "input_reference": {"image_url": IMAGE}})  # fmt: skip
    assert fields_named(twice) == ["input_reference"]
    agreeing = await h.create({"prompt": PROMPT, "image": IMAGE, "seconds": "6", "duration": 6,
                               "size": "768p", "resolution": "768P"})  # fmt: skip
    assert agreeing.status_code == 202, agreeing.text
    assert h.upstream_creates == 1


async def test_unknown_form_fields_are_still_422_naming_them(h: Harness) -> None:
    response = await post_form(h, {"prompt": PROMPT, "image": IMAGE, "colour": "red",
                                   "routing[speed]": "fast"})  # fmt: skip
    assert sorted(fields_named(response)) == ["colour", "routing.speed"]
    response = await post_form(h, {"prompt": PROMPT, "image": [IMAGE, IMAGE]})
    assert fields_named(response) == ["image"]
    reference = await h.create({"prompt": PROMPT, "input_reference": {"file_id": "file_1"}})
    assert fields_named(reference) == ["input_reference.file_id"]
    assert h.upstream_creates == 0


async def test_uploaded_png_becomes_a_data_uri_and_is_unsupported_without_a_provider_for_it(
    h: Harness,
) -> None:
    """Neither RunAPI nor API in One takes data URIs: the upload is validated, then refused as
    ``unsupported`` before any upstream call."""
    response = await post_upload(h, {"prompt": PROMPT}, "frame.png", PNG, "image/png")
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "unsupported"
    assert h.upstream_creates == 0


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (JPEG, "image/png"),  # declared png, bytes of a jpeg: refused like such a data URI
        (b"GIF89a" + b"\0" * 32, "image/gif"),
        (b"not an image at all", "application/octet-stream"),
        (PNG + b"\0" * LARGEST_UPLOAD, "image/png"),  # over 10 MiB decoded
    ],
)
async def test_uploads_are_validated_as_data_uris_naming_input_reference(
    harness_factory: Callable[..., Any], data: bytes, content_type: str
) -> None:
    h: Harness = await harness_factory(server={"max_body_bytes": 16 * 1024 * 1024})
    response = await post_upload(h, {"prompt": PROMPT}, "frame", data, content_type)
    assert fields_named(response) == ["input_reference"]
    assert h.upstream_creates == 0


async def test_upload_type_is_read_from_the_bytes_when_not_declared(h: Harness) -> None:
    response = await post_upload(h, {"prompt": PROMPT}, "frame", PNG, "application/octet-stream")
    assert response.json()["code"] == "unsupported"  # a valid png: only no provider takes it


async def test_a_file_in_another_field_is_refused(h: Harness) -> None:
    response = await h.client.post(
        "/v1/videos", data={"image": IMAGE}, files={"prompt": ("p.txt", b"x", "text/plain")},
        headers=h.headers(),
    )  # fmt: skip
    assert fields_named(response) == ["prompt"]


async def test_malformed_multipart_is_400(h: Harness) -> None:
    for content_type, content in (
        ("multipart/form-data", multipart({"prompt": PROMPT})),  # no boundary
        (f"multipart/form-data; boundary={BOUNDARY}", b"--" + BOUNDARY.encode() + b"\r\nxx"),
        (f"multipart/form-data; boundary={BOUNDARY}",
         multipart({"prompt": PROMPT}).replace(PROMPT.encode(), b"\xff\xfe")),
    ):  # fmt: skip
        response = await h.client.post(
            "/v1/videos", content=content, headers={**h.headers(), "content-type": content_type}
        )
        assert response.status_code == 400, (content, response.text)
        assert response.json()["code"] == "invalid_request"
    assert h.upstream_creates == 0


async def test_too_many_form_parts_is_400(h: Harness) -> None:
    fields = {"prompt": PROMPT, "image": IMAGE} | {f"metadata[k{i}]": "v" for i in range(70)}
    response = await post_form(h, fields)
    assert response.status_code == 400
    assert h.upstream_creates == 0


class Upload:
    """A 2 GB body, produced only as far as the server reads it."""

    def __init__(self, declared: bool) -> None:
        self.chunks_read = 0
        self.declared = declared

    async def body(self) -> AsyncIterator[bytes]:
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="input_reference"; '
            f'filename="f.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        yield head + PNG
        for _ in range(2048):
            self.chunks_read += 1
            yield b"\0" * (1024 * 1024)

    def headers(self, h: Harness) -> dict[str, str]:
        headers = {**h.headers(), "content-type": f"multipart/form-data; boundary={BOUNDARY}"}
        if self.declared:
            headers["content-length"] = str(2 * 1024**3)
        return headers


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_2_gb_upload_is_refused_413_without_being_read(h: Harness, declared: bool) -> None:
    upload = Upload(declared)
    # httpx's own ASGI transport hands the app the body chunk by chunk, as a server would.
    async with httpx.AsyncClient(transport=asgi(h.client.app), base_url="http://gw") as client:
        response = await client.post("/v1/videos", content=upload.body(), headers=upload.headers(h))
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    # server.max_body_bytes is 12 MiB: a declared size is refused before a byte is read; a
    # chunked body is counted as it arrives and refused at the limit.
    assert upload.chunks_read <= (0 if declared else 13)
    assert h.upstream_creates == 0


@pytest.fixture
async def h(harness: Harness) -> Harness:
    return harness


async def test_a_part_with_an_empty_name_is_an_unknown_field_not_a_crash(h: Harness) -> None:
    response = await post_form(h, {"prompt": PROMPT, "image": IMAGE, "": ""})
    assert fields_named(response) == [""]
