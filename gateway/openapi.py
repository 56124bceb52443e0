"""The OpenAPI document at ``/schema/openapi.json``: Litestar generates it from the handlers and
models; this module makes it say exactly what the validators accept.

Litestar's schema for the request models misses what lives in validators (trimming, URL and
data-URI rules, the 10 s + 1080P exclusion), drops ``extra="forbid"``, and puts string
keywords on arrays. The API fuzzing test (``tests/e2e/test_fuzz.py``) holds the app to this
document both ways: what it calls valid must not be answered ``invalid_request``, and what it
calls invalid must not be accepted. Values that depend on configuration (served models,
provider names, whether webhooks are on) are filled in from the settings, so the document
describes the deployment that serves it.
"""

from __future__ import annotations

from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIResponse,
    OpenAPIType,
    Parameter,
    Reference,
    Schema,
    SecurityScheme,
)

from gateway import __version__
from gateway.config import Settings
from gateway.idempotency import HEADER as IDEMPOTENCY_HEADER
from gateway.schemas import (
    DATA_URI_PATTERNS,
    DURATION_PATTERN,
    HTTP_URL_PATTERN,
    MAX_IMAGE_BASE64,
    MAX_IMAGE_URL,
    MAX_METADATA_KEY,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE,
    MAX_WEBHOOK_URL,
    PROMPT_PATTERN,
    RESOLUTION_PATTERN,
    WHITESPACE,
)
from providers.capabilities import IMAGE_ONLY_MODELS

PATH = "/schema"
BEARER_SCHEME = "BearerAuth"
IDEMPOTENCY_KEY_PATTERN = r"^[!-~](?:[ -~]{0,253}[!-~])?$"
"""1–255 printable ASCII characters. HTTP drops a header value's surrounding spaces before the
gateway sees it, so the documented value has none."""

STRING, NULL = OpenAPIType.STRING, OpenAPIType.NULL


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Hailuo 2.3 video gateway",
        version=__version__,
        path=PATH,
        components=Components(
            security_schemes={
                BEARER_SCHEME: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="A client key from auth.keys: Authorization: Bearer <key>",
                )
            }
        ),
    )


def describe_deployment(openapi: OpenAPI, settings: Settings, *, webhooks: bool) -> None:
    """Complete Litestar's document in place (before it is first served)."""
    schemas = openapi.components.schemas
    _create_request(schemas["CreateVideoRequest"], settings, webhooks=webhooks)
    _routing_overrides(schemas["RoutingOverrides"], settings)
    for path_item in (openapi.paths or {}).values():
        for operation in (path_item.get, path_item.post):
            if operation is None:
                continue
            for parameter in operation.parameters or []:
                if isinstance(parameter, Parameter) and parameter.name == IDEMPOTENCY_HEADER:
                    parameter.schema = Schema(
                        type=STRING, min_length=1, max_length=255, pattern=IDEMPOTENCY_KEY_PATTERN
                    )
            _retry_after(operation.responses or {})


def _create_request(schema: Schema, settings: Settings, *, webhooks: bool) -> None:
    schema.additional_properties = False
    properties = schema.properties or {}
    served = sorted({m for p in settings.providers.values() if p.enabled for m in p.served_models})
    properties["model"] = Schema(
        type=STRING, enum=served, default="hailuo-2.3", description="A model a provider serves"
    )
    properties["prompt"] = Schema(
        type=STRING,
        pattern=PROMPT_PATTERN,
        description="1–2000 characters once surrounding whitespace is trimmed",
    )
    data_uris = [
        Schema(
            type=STRING,
            pattern=pattern,
            max_length=len(f"data:image/{kind};base64,") + MAX_IMAGE_BASE64,
            description=f"A base64 {kind} image of at most 10 MiB; the bytes must be a {kind}",
        )
        for kind, pattern in DATA_URI_PATTERNS.items()
    ]
    properties["image"] = Schema(
        any_of=[_url(MAX_IMAGE_URL), *data_uris, Schema(type=NULL)],
        description="The first frame: an http(s) URL or a data URI; absent = text-to-video",
    )
    properties["duration"] = Schema(
        any_of=[
            Schema(type=OpenAPIType.INTEGER, enum=[6, 10]),
            Schema(type=STRING, pattern=DURATION_PATTERN, description='"6" or "10"'),
        ],
        default=6,
        description="Seconds: 6 or 10",
    )
    properties["resolution"] = Schema(
        type=STRING,
        pattern=RESOLUTION_PATTERN,
        default="768P",
        examples=["768P", "1080P"],
        description="768P or 1080P, case-insensitive",
    )
    properties["metadata"] = Schema(
        type=OpenAPIType.OBJECT,
        max_properties=MAX_METADATA_KEYS,
        property_names=Schema(type=STRING, min_length=1, max_length=MAX_METADATA_KEY),
        additional_properties=Schema(type=STRING, max_length=MAX_METADATA_VALUE),
        description="Echoed back on the task",
    )
    if webhooks:
        properties["webhook_url"] = Schema(
            any_of=[_url(MAX_WEBHOOK_URL), Schema(type=NULL)],
            description="Receives the final task object, signed (Standard Webhooks)",
        )
    else:
        # No signing secret: a create naming webhook_url is refused, so it is not offered.
        properties.pop("webhook_url", None)
    schema.properties = properties
    # No provider renders 10 s at 1080P: refused as invalid_request naming resolution.
    refused = [
        Schema(
            required=["duration", "resolution"],
            properties={
                "duration": Schema(
                    any_of=[
                        Schema(type=OpenAPIType.INTEGER, const=10),
                        Schema(type=STRING, pattern=rf"^[{WHITESPACE}]*10[{WHITESPACE}]*$"),
                    ]
                ),
                "resolution": Schema(
                    type=STRING, pattern=rf"^[{WHITESPACE}]*1080[pP][{WHITESPACE}]*$"
                ),
            },
        )
    ]
    # An image-only model (Fast) without an image (absent or null): invalid_request naming image.
    refused += [
        Schema(
            required=["model"],
            properties={"model": Schema(type=STRING, const=model)},
            any_of=[
                Schema(schema_not=Schema(required=["image"])),
                Schema(required=["image"], properties={"image": Schema(type=NULL)}),
            ],
        )
        for model in served
        if model in IMAGE_ONLY_MODELS
    ]
    schema.schema_not = refused[0] if len(refused) == 1 else Schema(any_of=refused)


def _routing_overrides(schema: Schema, settings: Settings) -> None:
    schema.additional_properties = False
    properties = schema.properties or {}
    names = [name for name, p in settings.providers.items() if p.enabled]
    properties["providers"] = Schema(
        any_of=[
            Schema(
                type=OpenAPIType.ARRAY,
                min_items=1,
                max_items=16,
                items=Schema(type=STRING, enum=names),
            ),
            Schema(type=NULL),
        ],
        description="An allow-list of enabled providers, in preference order",
    )
    properties["max_price_usd"] = Schema(
        any_of=[Schema(type=OpenAPIType.NUMBER, exclusive_minimum=0), Schema(type=NULL)],
        description="Only providers whose price for this request is at most this",
    )
    schema.properties = properties


def _url(max_length: int) -> Schema:
    return Schema(
        type=STRING,
        max_length=max_length,
        pattern=HTTP_URL_PATTERN,
        description="http(s), a host name or IPv4 address, no user info, no whitespace",
    )


def _retry_after(responses: dict[str, OpenAPIResponse | Reference]) -> None:
    for status, required in (("402", True), ("429", True), ("503", False)):
        response = responses.get(status)
        if isinstance(response, OpenAPIResponse) and response.content:
            response.headers = {
                "Retry-After": OpenAPIHeader(
                    schema=Schema(type=STRING, pattern="^[0-9]+$"),
                    required=required,
                    description="Seconds to wait before retrying",
                )
            }
