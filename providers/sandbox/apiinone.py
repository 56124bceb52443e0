"""A simulated API in One: ``POST /api/v1/videos/generations`` and ``GET /api/v1/tasks/{id}``.

Speaks the wire format of ``providers.md`` (API in One section): every answer, success or error,
is the envelope ``{"code", "message", "data"}`` with ``code`` equal to the HTTP status;
``duration`` is a string (``"6"``/``"10"``) and ``resolution`` upper case (``"768P"``/``"1080P"``).
"""

from __future__ import annotations

import secrets
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
    create_sandbox_app,
    parse_json_object,
    video_url,
)

CREATE_PATH = "/api/v1/videos/generations"
STATUS_PATH = "/api/v1/tasks"

STATUS_WORDS = {
    Phase.QUEUED: "PENDING",
    Phase.PROCESSING: "IN_PROGRESS",
    Phase.COMPLETED: "COMPLETED",
    Phase.FAILED: "FAILED",
}
FAULT_ANSWERS: dict[str, tuple[int, str]] = {
    "http_500": (500, "internal server error"),
    "http_503": (503, "service temporarily unavailable"),
    "http_429": (429, "rate limit exceeded, please slow down"),
    "http_402": (402, "Insufficient credits"),
    "http_401": (401, "Invalid API key"),
    "http_403": (403, "this API key is not allowed to use this model"),
    "http_400": (400, "bad request"),
}
EDGE_HTML = (
    "<!DOCTYPE html><html><head><title>502: Bad gateway</title></head>"
    "<body><h1>Bad gateway</h1><p>The web server reported a bad gateway error.</p></body></html>"
)


class CreateBody(BaseModel):
    """The create body API in One accepts; strict, so ``6`` is not a duration."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: Literal[
        "hailuo/2-3-image-to-video-standard", "hailuo/2-3-image-to-video-pro", "hailuo-2-3"
    ]
    prompt: str = Field(min_length=1)
    image: str = Field(pattern=r"^https?://\S+$")
    duration: Literal["6", "10"] = "6"
    resolution: Literal["768P", "1080P"] = "768P"
    callback_url: str | None = Field(default=None, pattern=r"^https?://\S+$")


def create_app(state: SandboxState) -> Litestar:
    """The simulated API in One over ``state``."""
    return create_sandbox_app(state, [create_video, task_status])


@post(CREATE_PATH, status_code=200)
async def create_video(
    request: Request[Any, Any, Any], sandbox: NamedDependency[SandboxState]
) -> Response[Any]:
    raw = await admit_create(request, sandbox, DIALECT)
    if isinstance(raw, Response):
        return raw
    payload = parse_json_object(raw)
    if payload is None:
        return envelope(400, "invalid request body: expected a JSON object")
    body = validate(payload)
    if isinstance(body, Response):
        return body
    if sandbox.refuses_content(body.prompt):
        return envelope(422, "sensitive content detected in prompt")
    spec = TaskSpec(
        model=body.model,
        prompt=body.prompt,
        duration=int(body.duration),
        resolution=body.resolution,
    )
    task = sandbox.accept(f"{secrets.token_hex(12)}_hailuo", spec)
    return envelope(200, "success", {"task_id": task.task_id, "status": "IN_PROGRESS"})


@get(f"{STATUS_PATH}/{{task_id:str}}")
async def task_status(
    request: Request[Any, Any, Any], sandbox: NamedDependency[SandboxState], task_id: FromPath[str]
) -> Response[Any]:
    sandbox.counters.status_calls += 1
    refused = await admit_read(request, sandbox, DIALECT)
    if refused is not None:
        return refused
    task = sandbox.tasks.get(task_id)
    if task is None:
        return envelope(404, f"task {task_id} not found")
    return envelope(200, "success", _task_data(request, task, sandbox.now()))


def validate(payload: dict[str, object]) -> CreateBody | Response[Any]:
    """The parsed body, or API in One's 422 naming every offending field."""
    problems: list[str] = [
        f"invalid field: {name} is not supported"
        for name in payload
        if name not in CreateBody.model_fields
    ]
    known = {k: v for k, v in payload.items() if k in CreateBody.model_fields}
    body: CreateBody | None = None
    try:
        body = CreateBody.model_validate(known)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            field = ".".join(str(part) for part in err["loc"]) or "body"
            problems.append(f"invalid field: {field} {_message(err['type'], err['msg'])}")
    if body is not None and body.duration == "10" and body.resolution == "1080P":
        problems.append('invalid field: resolution "1080P" is only available with duration "6"')
    if problems or body is None:
        return envelope(422, "; ".join(problems))
    return body


def envelope(
    code: int,
    message: str,
    data: dict[str, object] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    """API in One's answer: the envelope, with the HTTP status equal to ``code``."""
    body = {"code": code, "message": message, "data": data}
    return Response(body, status_code=code, headers=headers or {})


def _task_data(request: Request[Any, Any, Any], task: SimTask, now: float) -> dict[str, object]:
    phase = task.phase(now)
    completed = phase is Phase.COMPLETED
    return {
        "task_id": task.task_id,
        "status": STATUS_WORDS[phase],
        "output": {"video_url": video_url(request, task.task_id)} if completed else None,
        "error": task.error if phase is Phase.FAILED else None,
    }


def _fault_answer(fault: CreateFault, sandbox: SandboxState) -> Response[Any]:
    if fault == "html_502":
        return Response(EDGE_HTML, status_code=502, media_type=MediaType.HTML)
    status, message = FAULT_ANSWERS[fault]
    retry_after = sandbox.knobs.retry_after
    if fault == "http_429" and retry_after is not None:
        return envelope(status, message, headers={"Retry-After": retry_after})
    return envelope(status, message)


def _unauthorized() -> Response[Any]:
    return envelope(401, "Invalid API key")


DIALECT = Dialect(error=envelope, fault=_fault_answer, unauthorized=_unauthorized)


def _message(error_type: str, pydantic_message: str) -> str:
    return {
        "missing": "is required",
        "string_too_short": "must not be empty",
        "string_pattern_mismatch": "must be an http(s) URL",
        "literal_error": pydantic_message.replace("Input should be", "must be"),
    }.get(error_type, pydantic_message.lower())
