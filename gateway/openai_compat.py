"""The OpenAI Videos API's request shape (api.md §6), turned into our canonical create request.

``POST /v1/videos`` takes our JSON body, the same body with OpenAI's field names (``seconds``,
``size``, ``input_reference``), or OpenAI's ``multipart/form-data`` form (the ``openai`` Python
SDK always sends multipart). Every form goes the same way: read into a plain mapping
(:func:`read_fields`), renamed into our field names (:func:`to_canonical`), then validated once
by :class:`~gateway.schemas.CreateVideoRequest` (:func:`validate`). Nothing here re-checks what
the model checks: an uploaded image becomes a data URI that the model validates like any other,
``seconds`` is handed to ``duration``'s validator as it came. A validation error names the field
the client sent (``seconds``, ``size``, ``input_reference``), not ours.

Body limits hold before anything is buffered: Litestar refuses a declared ``Content-Length``
over ``server.max_body_bytes`` before reading, and counts the bytes of a chunked body as they
arrive; the multipart parser reads from that same counted stream and stops at
``MAX_FORM_PARTS`` parts.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from pydantic import ValidationError

from gateway.errors import BadBody, InvalidRequest
from gateway.schemas import (
    MAGIC,
    MAX_IMAGE_BASE64,
    POSITIVE_DECIMAL,
    CreateVideoRequest,
    FieldError,
)

_POSITIVE_DECIMAL = re.compile(POSITIVE_DECIMAL)

MAX_FORM_PARTS = 64
"""Parts one create form may hold (a valid one has fewer than 45: the fields, 16 metadata
entries, 16 routing providers)."""
MAX_FORM_DEPTH = 2
"""``routing[providers][]`` is the deepest form key a valid request needs."""
LARGEST_UPLOAD = 3 * (MAX_IMAGE_BASE64 // 4)
"""The most bytes a data URI the model accepts can carry (10 MiB, rounded up to whole base64
groups); only that much of an upload is read."""
SIZE_PATTERN = r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$"
"""OpenAI's ``WIDTHxHEIGHT`` sizes (``1280x720``); ``768P``/``1080P`` are taken as well."""
_SIZE = re.compile(SIZE_PATTERN)
_FORM_KEY = re.compile(r"(?P<name>[^\[\]]*)(?P<subs>(?:\[[^\[\]]*\])*)")
_SUB = re.compile(r"\[([^\[\]]*)\]")
IMAGE_TYPES = ("png", "jpeg", "webp")
SIZE_MESSAGE = "must be 768P, 1080P or WIDTHxHEIGHT (1080P when the short side is at least 1080)"


POLL_AFTER_HEADER = "openai-poll-after-ms"
"""On every answer about an unfinished task: when to ask again (the ``openai`` SDK's ``poll``
helper waits this long)."""


def poll_after(final: bool, poll_interval_s: float) -> dict[str, str] | None:
    """The headers of an answer about a task: ``openai-poll-after-ms`` unless it is final."""
    return None if final else {POLL_AFTER_HEADER: str(round(poll_interval_s * 1000))}


@dataclass(frozen=True)
class UploadedImage:
    """An image file sent as ``input_reference``, already encoded as a data URI."""

    data_uri: str


async def read_create_request(request: Request[Any, Any, Any]) -> CreateVideoRequest:
    """The create request, whichever form the client sent it in."""
    return validate(await read_fields(request))


async def read_fields(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The body as a mapping: a multipart form (nested by its ``a[b]`` keys), else JSON."""
    content_type, _ = request.content_type
    if content_type == RequestEncodingType.MULTI_PART:
        return await _form_fields(request)
    return json_object(await request.body())


def json_object(body: bytes) -> dict[str, Any]:
    """Decoded as Litestar decodes JSON bodies (duplicate members: the last one wins)."""
    try:
        decoded = msgspec.json.decode(body) if body else None
    except msgspec.DecodeError as exc:
        raise BadBody(str(exc)) from exc
    if not isinstance(decoded, dict):
        raise BadBody("the body must be a JSON object")
    return decoded


def validate(fields: Mapping[str, Any]) -> CreateVideoRequest:
    """The one validation of a create request, whatever its form."""
    canonical, sent_as = to_canonical(fields)
    try:
        return CreateVideoRequest.model_validate(canonical)
    except ValidationError as exc:
        errors = [_field_error(error, sent_as) for error in exc.errors()]
        raise InvalidRequest(
            "; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors
        ) from exc


def to_canonical(fields: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """OpenAI's names → ours: ``seconds`` → ``duration``, ``size`` → ``resolution``,
    ``input_reference`` → ``image``. Returns the renamed fields and, for each renamed field, the
    name the client used (errors name that). A pair that disagrees (``seconds`` 10 beside
    ``duration`` 6), or an image given both ways, is refused, naming OpenAI's field."""
    out = dict(fields)
    sent_as: dict[str, str] = {}
    conflicts: list[FieldError] = []
    for theirs, ours, value, name in _translated(out):
        present = out.get(ours) is not None if ours == "image" else ours in out
        if present and not _same(ours, out[ours], value):
            conflicts.append(FieldError(field=theirs, message=f"conflicts with {ours}"))
        out[ours] = value
        sent_as[ours] = name
    if conflicts:
        raise InvalidRequest(
            "; ".join(f"{c.field}: {c.message}" for c in conflicts), errors=conflicts
        )
    return out, sent_as


def _translated(out: dict[str, Any]) -> Iterable[tuple[str, str, Any, str]]:
    """(OpenAI's field, ours, the value for ours, the name errors use) for each sent field;
    each OpenAI field is taken out of ``out``."""
    if "seconds" in out:
        yield "seconds", "duration", out.pop("seconds"), "seconds"
    if "size" in out:
        yield "size", "resolution", _resolution(out.pop("size")), "size"
    if "input_reference" in out:
        value = out.pop("input_reference")
        if isinstance(value, UploadedImage):
            yield "input_reference", "image", value.data_uri, "input_reference"
        elif isinstance(value, dict):
            yield "input_reference", "image", _image_url(value), "input_reference.image_url"
        elif value is not None:
            raise InvalidRequest.field(
                "input_reference", 'must be an uploaded image file or {"image_url": "…"}'
            )


def _resolution(size: Any) -> Any:
    """``WIDTHxHEIGHT`` → 1080P when the short side is at least 1080, else 768P; anything else
    goes to ``resolution``'s validator as it came (``768P``, ``1080p``)."""
    if isinstance(size, str) and _SIZE.fullmatch(size):
        width, height = (int(side) for side in size.split("x"))
        return "1080P" if min(width, height) >= 1080 else "768P"
    return size


def _image_url(reference: dict[str, Any]) -> Any:
    unknown = [key for key in reference if key != "image_url"]
    if unknown:
        raise InvalidRequest(
            f"input_reference.{unknown[0]}: Extra inputs are not permitted",
            errors=[
                FieldError(field=f"input_reference.{key}", message="Extra inputs are not permitted")
                for key in unknown
            ],
        )
    if reference.get("image_url") is None:
        raise InvalidRequest.field("input_reference.image_url", "Field required")
    return reference["image_url"]


def _same(field: str, ours: Any, theirs: Any) -> bool:
    """Do two spellings of one field agree (``"6"`` and ``6``, ``768p`` and ``768P``)? An
    image is never sent twice: equal strings cannot be written in the OpenAPI document."""
    if field == "image":
        return False
    if isinstance(ours, bool) or isinstance(theirs, bool):
        return False
    if not isinstance(ours, str | int) or not isinstance(theirs, str | int):
        return False
    return str(ours).strip().upper() == str(theirs).strip().upper()


def _field_error(error: Mapping[str, Any], sent_as: Mapping[str, str]) -> FieldError:
    location = [str(part) for part in error["loc"]]
    message = str(error["msg"]).split(" - ", maxsplit=1)[0]  # as Litestar words them
    if location and location[0] in sent_as:
        if location[0] == "resolution" and sent_as["resolution"] == "size":
            message = SIZE_MESSAGE
        location[0] = sent_as[location[0]]
    return FieldError(field=".".join(location), message=message)


async def _form_fields(request: Request[Any, Any, Any]) -> dict[str, Any]:
    try:
        form = await request.form()
    except UnicodeDecodeError as exc:
        raise BadBody("a form field is not valid UTF-8") from exc
    items: list[tuple[str, Any]] = []
    try:
        for key, value in form.multi_items():
            items.append((key, await _form_value(key, value)))
    finally:
        for value in form.values():
            if isinstance(value, UploadFile):
                await value.close()
    return _form_numbers(nest(items))


def _form_numbers(fields: dict[str, Any]) -> dict[str, Any]:
    """A form's one number, ``routing[max_price_usd]``, read from its string when it is a plain
    decimal (:data:`~gateway.schemas.POSITIVE_DECIMAL`, as the form's document says); any other
    string is left for the model to refuse, naming the field."""
    routing = fields.get("routing")
    if isinstance(routing, dict):
        price = routing.get("max_price_usd")
        if isinstance(price, str) and _POSITIVE_DECIMAL.fullmatch(price):
            routing["max_price_usd"] = float(price)
    return fields


async def _form_value(key: str, value: Any) -> Any:
    if not isinstance(value, UploadFile):
        return value
    if key != "input_reference":
        raise InvalidRequest.field(key, "must be a form field, not a file")
    data = await value.read(LARGEST_UPLOAD + 1)  # the model refuses one byte more as too large
    return UploadedImage(f"data:image/{_image_type(value, data)};base64,"
                         f"{base64.b64encode(data).decode()}")  # fmt: skip


def _image_type(upload: UploadFile, data: bytes) -> str:
    """The declared type when it is one we take, else the type the bytes start with. The data
    URI's validator then checks that the bytes are that type."""
    declared = upload.content_type.lower().removeprefix("image/")
    if declared in IMAGE_TYPES:
        return declared
    for kind in IMAGE_TYPES:
        if MAGIC[kind](data[:16]):
            return kind
    raise InvalidRequest.field("input_reference", "an uploaded image must be png, jpeg or webp")


def nest(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Form fields → a mapping, reading keys as the ``openai`` SDK writes nested values:
    ``metadata[order]=A-1``, ``routing[providers][]=runapi``. A key sent twice (other than a
    ``[]`` list) is refused."""
    root: dict[str, Any] = {}
    for key, value in items:
        match = _FORM_KEY.fullmatch(key)
        name, subs = (match["name"], _SUB.findall(match["subs"])) if match else (key, [])
        if len(subs) > MAX_FORM_DEPTH or "" in subs[:-1]:
            raise InvalidRequest.field(key, "nested deeper than any field of this request")
        _insert(root, [name, *subs], value, key, is_list=bool(subs) and subs[-1] == "")
    return root


def _insert(root: dict[str, Any], path: list[str], value: Any, key: str, *, is_list: bool) -> None:
    node = root
    *parents, last = path
    if is_list:  # ``a[b][]``: one more item of the list at ``a[b]``
        *parents, last = parents
        existing = _child(node, parents, key).setdefault(last, [])
        if not isinstance(existing, list):
            raise InvalidRequest.field(key, "sent both as a list and as a single value")
        existing.append(value)
        return
    node = _child(node, parents, key)
    if last in node:
        raise InvalidRequest.field(key, "sent more than once")
    node[last] = value


def _child(node: dict[str, Any], parents: list[str], key: str) -> dict[str, Any]:
    for name in parents:
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise InvalidRequest.field(key, "sent both as an object and as a single value")
    return node
