"""A simulated RunAPI: ``POST /api/v1/hailuo/image_to_video`` and its status routes.

Speaks the wire format of ``providers.md`` (RunAPI section): Bearer auth, the current field
names only (legacy ``image_url``/``duration``/``resolution`` and ``prompt_optimizer``/
``last_frame_image_url`` are refused), validation failures as ``422 {"error": "Validation
failed", "errors": {field: [message]}}`` and other errors as ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from litestar import Litestar, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.enums import MediaType
from litestar.params import FromPath
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from providers.sandbox.engine import (
    CreateFault,
    Phase,
    SandboxState,
    SimTask,
    TaskSpec,
)
from providers.sandbox.routes import (
    Dialect,
    admit_create,
    admit_read,
    bearer_matches,
    create_sandbox_app,
    parse_json_object,
    video_url,
)

CREATE_PATH = "/api/v1/hailuo/image_to_video"
BALANCE_PATH = "/api/v1/me/balance"
UNLIMITED_CENTS = 100_000_000

MODELS = ("hailuo-2.3-image-to-video-standard", "hailuo-2.3-image-to-video-pro")
# Price in cents per (model, duration, resolution), from the hailuo-mcp pricing data.
PRICES: dict[tuple[str, int, str], int] = {
    (MODELS[0], 6, "768P"): 30,
    (MODELS[0], 10, "768P"): 50,
    (MODELS[0], 6, "1080P"): 50,
    (MODELS[1], 6, "768P"): 45,
    (MODELS[1], 10, "768P"): 90,
    (MODELS[1], 6, "1080P"): 80,
}
REFUSED_FIELDS = {
    "image_url": "is a legacy field; use first_frame_image_url",
    "duration": "is a legacy field; use duration_seconds",
    "resolution": "is a legacy field; use output_resolution",
    "prompt_optimizer": "is not supported for hailuo-2.3 models",
    "last_frame_image_url": "is not supported for hailuo-2.3 models",
}
STATUS_WORDS = {
    Phase.QUEUED: "pending",
    Phase.PROCESSING: "processing",
    Phase.COMPLETED: "completed",
    Phase.FAILED: "failed",
}
FAULT_ANSWERS: dict[str, tuple[int, str, str]] = {
    "http_500": (500, "internal_error", "Internal server error"),
    "http_503": (503, "service_unavailable", "Service temporarily unavailable"),
    "http_402": (402, "insufficient_credits", "Insufficient credits"),
    "http_401": (401, "unauthorized", "Invalid API key"),
    "http_403": (403, "forbidden", "This key may not use this model"),
}
EDGE_HTML = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)


class CreateBody(BaseModel):
    """The create body RunAPI accepts; strict, so ``"6"`` is not a duration."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: Literal["hailuo-2.3-image-to-video-standard", "hailuo-2.3-image-to-video-pro"]
    prompt: str = Field(min_length=1, max_length=5000)
    first_frame_image_url: str = Field(pattern=r"^https?://\S+$")
    duration_seconds: Literal[6, 10] = 6
    output_resolution: Literal["768p", "1080p"] = "768p"
    callback_url: str | None = Field(default=None, pattern=r"^https?://\S+$")


def create_app(state: SandboxState) -> Litestar:
    """The simulated RunAPI over ``state``."""
    return create_sandbox_app(state, [create_video, task_status, task_status_short, balance])


@post(CREATE_PATH, status_code=200)
async def create_video(
    request: Request[Any, Any, Any], sandbox: NamedDependency[SandboxState]
) -> Response[Any]:
    raw = await admit_create(request, sandbox, DIALECT)
    if isinstance(raw, Response):
        return raw
    payload = parse_json_object(raw)
    if payload is None:
        return Response({"error": "Bad request"}, status_code=400)
    body = validate(payload)
    if isinstance(body, Response):
        return body
    if sandbox.refuses_content(body.prompt):
        return _error(422, "content_policy_violation", "prompt rejected by safety checker")
    price = PRICES.get((body.model, body.duration_seconds, body.output_resolution.upper()), 0)
    if not sandbox.charge(price):
        return _fault_answer("http_402", sandbox)
    spec = TaskSpec(
        model=body.model,
        prompt=body.prompt,
        duration=body.duration_seconds,
        resolution=body.output_resolution.upper(),
    )
    task = sandbox.accept(str(uuid.uuid4()), spec)
    return Response({"id": task.task_id, "status": "pending"}, status_code=200)


@get(f"{CREATE_PATH}/{{task_id:str}}")
async def task_status(
    request: Request[Any, Any, Any], sandbox: NamedDependency[SandboxState], task_id: FromPath[str]
) -> Response[Any]:
    return await _status(request, sandbox, task_id)


@get("/api/v1/hailuo/{task_id:str}")
async def task_status_short(
    request: Request[Any, Any, Any], sandbox: NamedDependency[SandboxState], task_id: FromPath[str]
) -> Response[Any]:
    return await _status(request, sandbox, task_id)


def validate(payload: dict[str, object]) -> CreateBody | Response[Any]:
    """The parsed body, or RunAPI's 422 naming every offending field."""
    errors: dict[str, list[str]] = {}
    for name in payload:
        if name not in CreateBody.model_fields:
            errors[name] = [REFUSED_FIELDS.get(name, "is not a permitted field")]
    known = {k: v for k, v in payload.items() if k in CreateBody.model_fields}
    body: CreateBody | None = None
    try:
        body = CreateBody.model_validate(known)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            field = str(err["loc"][0]) if err["loc"] else "base"
            errors.setdefault(field, []).append(_message(err["type"], err["msg"]))
    if body is not None and body.duration_seconds == 10 and body.output_resolution == "1080p":
        errors["output_resolution"] = ["1080p is only available with duration_seconds 6"]
    if errors or body is None:
        return Response({"error": "Validation failed", "errors": errors}, status_code=422)
    return body


@get(BALANCE_PATH, sync_to_thread=False)
def balance(
    request: Request[Any, Any, Any], sandbox: NamedDependency[SandboxState]
) -> Response[Any]:
    """``GET /api/v1/me/balance`` (free). An unlimited sandbox account reports a large balance."""
    sandbox.counters.balance_calls += 1
    if not bearer_matches(request, sandbox.api_key):
        return _unauthorized()
    cents = UNLIMITED_CENTS if sandbox.balance_cents is None else sandbox.balance_cents
    return Response(
        {
            "balance_cents": cents,
            "paid_balance_cents": cents,
            "bonus_balance_cents": 0,
            "spent_cents_today": sandbox.spent_cents,
            "spent_cents_total": sandbox.spent_cents,
        },
        status_code=200,
    )


async def _status(
    request: Request[Any, Any, Any], sandbox: SandboxState, task_id: str
) -> Response[Any]:
    sandbox.counters.status_calls += 1
    refused = await admit_read(request, sandbox, DIALECT)
    if refused is not None:
        return refused
    task = sandbox.tasks.get(task_id)
    if task is None:
        return _error(404, "not_found", f"Task {task_id} not found")
    return Response(_status_body(request, task, sandbox.now()), status_code=200)


def _status_body(request: Request[Any, Any, Any], task: SimTask, now: float) -> dict[str, object]:
    phase = task.phase(now)
    spec = task.spec
    completed = phase is Phase.COMPLETED
    return {
        "id": task.task_id,
        "status": STATUS_WORDS[phase],
        "videos": [{"url": video_url(request, task.task_id)}] if completed else [],
        "error": task.error if phase is Phase.FAILED else None,
        "usage": {
            "duration_seconds": spec.duration,
            "output_resolution": spec.resolution.lower(),
            # Failed generations are not billed.
            "cost_cents": PRICES.get((spec.model, spec.duration, spec.resolution), 0)
            if completed
            else 0,
        },
    }


def _fault_answer(fault: CreateFault, sandbox: SandboxState) -> Response[Any]:
    if fault == "html_502":
        return Response(EDGE_HTML, status_code=502, media_type=MediaType.HTML)
    if fault == "http_429":
        retry_after = sandbox.knobs.retry_after
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return _error(429, "rate_limited", "Too many requests", headers)
    if fault == "http_400":
        return Response({"error": "Bad request"}, status_code=400)
    status, code, message = FAULT_ANSWERS[fault]
    return _error(status, code, message)


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response[Any]:
    body = {"error": {"code": code, "message": message}}
    return Response(body, status_code=status, headers=headers or {})


def _unauthorized() -> Response[Any]:
    return _error(401, "unauthorized", "Invalid API key")


def _plain_error(status: int, message: str) -> Response[Any]:
    return _error(status, "client_closed" if status == 499 else "internal_error", message)


DIALECT = Dialect(error=_plain_error, fault=_fault_answer, unauthorized=_unauthorized)


def _message(error_type: str, pydantic_message: str) -> str:
    """RunAPI-style messages for the common cases, pydantic's wording otherwise."""
    return {
        "missing": "is required",
        "string_too_long": "must be at most 5000 characters",
        "string_too_short": "can't be blank",
        "string_pattern_mismatch": "must be an http(s) URL",
        "literal_error": pydantic_message.replace("Input should be", "must be"),
    }.get(error_type, pydantic_message.lower())
