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
from gateway.openapi_create import create_body

PATH = "/schema"
CREATE_PATH = "/v1/videos"
BEARER_SCHEME = "BearerAuth"
IDEMPOTENCY_KEY_PATTERN = r"^[!-~](?:[ -~]{0,253}[!-~])?$"
"""1–255 printable ASCII characters. HTTP drops a header value's surrounding spaces before the
gateway sees it, so the documented value has none."""

STRING = OpenAPIType.STRING


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
    components = openapi.components
    create = (openapi.paths or {})[CREATE_PATH].post
    if create is not None:
        create.request_body = create_body(components, settings, webhooks=webhooks)
    for path_item in (openapi.paths or {}).values():
        for operation in (path_item.get, path_item.post, path_item.delete):
            if operation is None:
                continue
            for parameter in operation.parameters or []:
                if isinstance(parameter, Parameter) and parameter.name == IDEMPOTENCY_HEADER:
                    parameter.schema = Schema(
                        type=STRING, min_length=1, max_length=255, pattern=IDEMPOTENCY_KEY_PATTERN
                    )
            _retry_after(operation.responses or {})


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
