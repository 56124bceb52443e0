"""The gateway's error tree and its problem+json (RFC 9457) rendering.

Every error a client can see is a :class:`GatewayError` with a stable ``code`` (api.md §2).
Framework exceptions (validation, 404 routes, oversized bodies) are translated into the same
shape by :func:`exception_handlers`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotFoundException,
    ValidationException,
)
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from gateway.schemas import Attempt, FieldError, Problem

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def problem_spec(description: str) -> ResponseSpec:
    """How OpenAPI documents one error answer of a route: problem+json, ``description`` naming
    its code(s)."""
    return ResponseSpec(
        data_container=Problem,
        description=description,
        media_type=PROBLEM_JSON,
        generate_examples=False,
    )


class GatewayError(Exception):
    """An error answered to the client. Subclasses fix ``status`` and ``code``."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Sequence[FieldError] | None = None,
        attempts: Sequence[Attempt] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.attempts = list(attempts) if attempts is not None else None
        self.headers = headers or {}

    def problem(self) -> Problem:
        return Problem(
            title=self.title,
            status=self.status,
            detail=self.detail,
            code=self.code,
            errors=self.errors,
            attempts=self.attempts,
        )


class BadBody(GatewayError):
    status, code, title = 400, "invalid_request", "The body is not a JSON object"


class InvalidRequest(GatewayError):
    status, code, title = 422, "invalid_request", "Invalid request"

    @classmethod
    def field(cls, field: str, message: str) -> InvalidRequest:
        return cls(f"{field}: {message}", errors=[FieldError(field=field, message=message)])


class Unauthorized(GatewayError):
    status, code, title = 401, "unauthorized", "A valid bearer key is needed"


class NotFound(GatewayError):
    status, code, title = 404, "not_found", "Not found"


class MethodNotAllowed(GatewayError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class IdempotencyKeyInUse(GatewayError):
    status, code, title = 409, "idempotency_key_in_use", "A request with this key is in flight"


class TaskBusy(GatewayError):
    status, code, title = 409, "task_busy", "The task is being resubmitted; retry shortly"


class IdempotencyKeyReused(GatewayError):
    status, code = 422, "idempotency_key_reused"
    title = "This Idempotency-Key was used with a different body"


class PayloadTooLarge(GatewayError):
    status, code, title = 413, "payload_too_large", "The body is over the configured limit"


class Unsupported(GatewayError):
    status, code, title = 422, "unsupported", "No configured provider serves this request"


class ContentRejected(GatewayError):
    status, code, title = 422, "content_rejected", "The upstream refused the prompt or image"


class RateLimited(GatewayError):
    status, code, title = 429, "rate_limited", "Over this key's rate limit"


class BudgetExceeded(GatewayError):
    status, code, title = 402, "budget_exceeded", "This key's spend budget cannot cover the price"


class UpstreamRejected(GatewayError):
    status, code, title = 502, "upstream_rejected", "The upstream refused the translated request"


class AllProvidersFailed(GatewayError):
    status, code, title = 502, "all_providers_failed", "Every eligible provider failed"


class ProvidersUnavailable(GatewayError):
    status, code, title = 503, "providers_unavailable", "Every eligible provider is unavailable"


class StoreUnavailable(GatewayError):
    status, code, title = 503, "store_unavailable", "The task store cannot be reached"


class RangeNotSatisfiable(GatewayError):
    status, code, title = 416, "range_not_satisfiable", "The Range is outside the video"


class VideoStorageUnavailable(GatewayError):
    status, code, title = 503, "store_unavailable", "The video storage cannot be reached"


class UpstreamOutcomeUnknown(GatewayError):
    status, code = 504, "upstream_outcome_unknown"
    title = "The upstream received the request but did not answer"

    def __init__(
        self,
        detail: str | None = None,
        *,
        attempts: Sequence[Attempt] | None = None,
        task_id: str | None = None,
    ) -> None:
        super().__init__(detail, attempts=attempts)
        self.task_id = task_id

    def problem(self) -> Problem:
        """With the task's id when one was recorded (api.md §2): the client may poll it."""
        return super().problem().model_copy(update={"id": self.task_id})


def problem_response(error: GatewayError) -> Response[Any]:
    body = error.problem().model_dump(mode="json", exclude_none=True)
    return Response(
        body, status_code=error.status, media_type=PROBLEM_JSON, headers=error.headers or None
    )


def _gateway_error(_: Request[Any, Any, Any], exc: GatewayError) -> Response[Any]:
    return problem_response(exc)


def _validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    items = exc.extra if isinstance(exc.extra, list) else []
    fields: list[FieldError] = []
    for item in items:
        key = item.get("key") if isinstance(item, dict) else None
        message = str(item.get("message", "invalid")) if isinstance(item, dict) else str(item)
        if key is None or (key == "data" and item.get("source") == "body"):
            # The body as a whole failed: not an object, or missing. (A member named "" is a
            # field like any other: its key is the empty string, not absent.)
            return problem_response(BadBody("the body must be a JSON object"))
        fields.append(FieldError(field=str(key), message=message))
    if not fields:
        return problem_response(BadBody(str(exc.detail)))
    summary = "; ".join(f"{f.field}: {f.message}" for f in fields)
    return problem_response(InvalidRequest(summary, errors=fields))


def _http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    error: GatewayError
    if status == 413:
        error = PayloadTooLarge()
    elif status == 404:
        error = NotFound(f"no route {request.method} {request.url.path}")
    elif status == 405:
        # RFC 9110: a 405 names the methods the resource does support.
        error = MethodNotAllowed(headers=dict(exc.headers or {}))
    elif status == 400:
        error = BadBody(str(exc.detail))
    elif status == 401:
        error = Unauthorized()
    else:
        error = GatewayError(str(exc.detail))
        return Response(
            {**error.problem().model_dump(mode="json", exclude_none=True), "status": status},
            status_code=status,
            media_type=PROBLEM_JSON,
        )
    return problem_response(error)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # The route template, not the path: a path may carry a credential (a callback token).
    route = request.scope.get("path_template") or "unmatched"
    logger.exception("unhandled error on %s %s", request.method, route)
    return Response(
        GatewayError().problem().model_dump(mode="json", exclude_none=True),
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
        media_type=PROBLEM_JSON,
    )


def exception_handlers() -> dict[type[Exception] | int, Any]:
    return {
        GatewayError: _gateway_error,
        ValidationException: _validation_error,
        NotFoundException: _http_exception,
        HTTPException: _http_exception,
        Exception: _unexpected,
    }
