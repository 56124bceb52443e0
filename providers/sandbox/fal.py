"""A simulated fal.ai queue: submit ``POST /fal-ai/minimax/<model>/<quality>/<mode>``, then the
``status_url`` and ``response_url`` its answer names.

Speaks the wire format of ``providers.md`` (fal.ai section): ``Authorization: Key <key>``; the
submit answers ``{"request_id", "status_url", "response_url", "cancel_url"}``, URLs that name
the app (``/fal-ai/minimax/requests/<id>``), not the endpoint, so a client that builds them by
hand gets 404s. Like fal's queue, it takes any body it can parse: invalid inputs and content
refusals surface when the run ends, as the result call's model error (``422 {"detail":
[{"loc", "msg", "type"}]}``); a failed generation is a request error (``500 {"detail",
"error_type"}`` with ``X-Fal-Error-Type``). The result call before the end answers ``400``.

With ``?fal_webhook=<url>`` on the submit, the finished run is POSTed there once, as fal does:
``{"request_id", "gateway_request_id", "status": "OK"|"ERROR", "payload"}`` (counted in
``callbacks_sent``; unsigned here, a hint for the receiver).

The ``url_base`` knob makes the answers name another origin (a client that follows it sends
its key where it should not: the other server's ``/_sandbox/stats`` lists what it received).
Result calls count as status calls.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import httpx
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

APP_PATH = "/fal-ai/minimax"
MODELS = {"hailuo-2.3": "hailuo-2.3", "hailuo-2.3-fast": "hailuo-2.3-fast"}
QUALITIES = {"standard": "768P", "pro": "1080P"}
MODES = ("image-to-video", "text-to-video")
STATUS_WORDS = {
    Phase.QUEUED: "IN_QUEUE",
    Phase.PROCESSING: "IN_PROGRESS",
    Phase.COMPLETED: "COMPLETED",
    Phase.FAILED: "COMPLETED",  # fal's queue says COMPLETED; the result tells the failure
}
FAULT_ANSWERS: dict[str, tuple[int, str]] = {
    "http_500": (500, "Internal Server Error"),
    "http_503": (503, "Service Unavailable"),
    "http_429": (429, "Too many concurrent requests for this user"),
    "http_400": (400, "Invalid request"),
    "http_401": (401, "Authentication failed: invalid key"),
    "http_402": (402, "Insufficient balance"),
    "http_403": (403, "User is locked. Reason: Exhausted balance. Top up your balance."),
}
CONTENT_ERROR = {
    "loc": ["body", "prompt"],
    "msg": "The content was flagged by a content checker.",
    "type": "content_policy_violation",
    "url": "https://docs.fal.ai/errors#content_policy_violation",
}
EDGE_HTML = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center></body></html>"
)
DATA_OR_URL = r"^(https?://\S+|data:image/(png|jpeg|webp);base64,\S+)$"


class SubmitBody(BaseModel):
    """The inputs of fal's Hailuo 2.3 endpoints; strict, so ``6`` is not a duration."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1)
    image_url: str | None = Field(default=None, pattern=DATA_OR_URL)
    duration: Literal["6", "10"] | None = None
    prompt_optimizer: bool | None = None


def create_app(state: SandboxState) -> Litestar:
    """The simulated fal queue over ``state``."""
    return create_sandbox_app(state, [submit, request_status, request_result])


@post(f"{APP_PATH}/{{model:str}}/{{quality:str}}/{{mode:str}}", status_code=200)
async def submit(
    request: Request[Any, Any, Any],
    sandbox: NamedDependency[SandboxState],
    model: FromPath[str],
    quality: FromPath[str],
    mode: FromPath[str],
) -> Response[Any]:
    raw = await admit_create(request, sandbox, DIALECT)
    if isinstance(raw, Response):
        return raw
    if model not in MODELS or quality not in QUALITIES or mode not in MODES:
        return _detail(404, f"Application '{model}/{quality}/{mode}' not found")
    if model == "hailuo-2.3-fast" and mode == "text-to-video":
        return _detail(404, "Application 'hailuo-2.3-fast/text-to-video' not found")
    payload = parse_json_object(raw)
    if payload is None:
        return _detail(400, "the body must be a JSON object")
    problems = validate(payload, quality=quality, mode=mode)
    refusal = "; ".join(problems) or None
    if refusal is None and sandbox.refuses_content(str(payload.get("prompt", ""))):
        refusal = "content"
    duration = payload.get("duration")
    spec = TaskSpec(
        model=MODELS[model],
        prompt=str(payload.get("prompt", "")),
        duration=10 if duration == "10" else 6,
        resolution=QUALITIES[quality],
    )
    task = sandbox.accept(str(uuid.uuid4()), spec, refusal=refusal)
    webhook = request.query_params.get("fal_webhook")
    if webhook:
        sandbox.spawn(_notify_when_done(sandbox, task, webhook, video_url(request, task.task_id)))
    base = _announced_base(request, sandbox)
    return Response(
        {
            "request_id": task.task_id,
            "status": "IN_QUEUE",
            "status_url": f"{base}{APP_PATH}/requests/{task.task_id}/status",
            "response_url": f"{base}{APP_PATH}/requests/{task.task_id}",
            "cancel_url": f"{base}{APP_PATH}/requests/{task.task_id}/cancel",
            "queue_position": 0,
        },
        status_code=200,
    )


@get(f"{APP_PATH}/requests/{{request_id:str}}/status")
async def request_status(
    request: Request[Any, Any, Any],
    sandbox: NamedDependency[SandboxState],
    request_id: FromPath[str],
) -> Response[Any]:
    task = await _lookup(request, sandbox, request_id)
    if isinstance(task, Response):
        return task
    phase = task.phase(sandbox.now())
    body: dict[str, object] = {
        "status": STATUS_WORDS[phase],
        "request_id": task.task_id,
        "response_url": f"{_announced_base(request, sandbox)}{APP_PATH}/requests/{task.task_id}",
    }
    if phase is Phase.QUEUED:
        body["queue_position"] = 0
    else:
        body["logs"] = None
    return Response(body, status_code=200)


@get(f"{APP_PATH}/requests/{{request_id:str}}")
async def request_result(
    request: Request[Any, Any, Any],
    sandbox: NamedDependency[SandboxState],
    request_id: FromPath[str],
) -> Response[Any]:
    task = await _lookup(request, sandbox, request_id)
    if isinstance(task, Response):
        return task
    phase = task.phase(sandbox.now())
    if phase is Phase.COMPLETED:
        return Response(_output(task, video_url(request, task.task_id)), status_code=200)
    if phase is not Phase.FAILED:
        return _detail(400, "Request is still in progress")
    status, body, headers = _failure(task)
    return Response(body, status_code=status, headers=headers)


def validate(payload: dict[str, object], *, quality: str, mode: str) -> list[str]:
    """What fal's runner would refuse in ``payload`` for this endpoint, as messages."""
    problems: list[str] = []
    try:
        body = SubmitBody.model_validate(payload)
    except ValidationError as exc:
        return [
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors(include_url=False)
        ]
    if mode == "image-to-video" and body.image_url is None:
        problems.append("image_url: Field required")
    if mode == "text-to-video" and body.image_url is not None:
        problems.append("image_url: Extra inputs are not permitted")
    if quality == "pro" and body.duration is not None:
        problems.append("duration: Extra inputs are not permitted")
    return problems


async def _lookup(
    request: Request[Any, Any, Any], sandbox: SandboxState, request_id: str
) -> SimTask | Response[Any]:
    """The task behind a status or result call, or the answer that ends the call."""
    sandbox.counters.status_calls += 1
    refused = await admit_read(request, sandbox, DIALECT)
    if refused is not None:
        return refused
    task = sandbox.tasks.get(request_id)
    if task is None:
        return _detail(404, f"Request {request_id} not found")
    return task


def _output(task: SimTask, url: str) -> dict[str, object]:
    """A finished run's result: its video."""
    video = {"url": url, "content_type": "video/mp4", "file_name": f"{task.task_id}.mp4"}
    return {"video": video}


def _failure(task: SimTask) -> tuple[int, dict[str, object], dict[str, str]]:
    """``(status, body, headers)`` of a failed run's result: a model error for refusals, a
    request error otherwise."""
    if task.refusal == "content":
        return 422, {"detail": [CONTENT_ERROR]}, {}
    if task.refusal:
        located = (problem.partition(": ") for problem in task.refusal.split("; "))
        errors = [
            {"loc": ["body", field], "msg": message or field, "type": "value_error"}
            for field, _, message in located
        ]
        return 422, {"detail": errors}, {}
    body: dict[str, object] = {"detail": task.error, "error_type": "runner_server_error"}
    return 500, body, {"X-Fal-Error-Type": "runner_server_error"}


async def _notify_when_done(sandbox: SandboxState, task: SimTask, url: str, video: str) -> None:
    """Once ``task`` is final, POST fal's webhook body to ``url`` once."""
    if not await sandbox.until_final(task):
        return
    body: dict[str, object] = {"request_id": task.task_id, "gateway_request_id": task.task_id}
    if task.phase(sandbox.now()) is Phase.COMPLETED:
        body.update(status="OK", payload=_output(task, video))
    else:
        status, payload, _ = _failure(task)
        body.update(status="ERROR", error=f"Invalid status code: {status}", payload=payload)
    sandbox.counters.callbacks_sent += 1
    try:
        async with httpx.AsyncClient(timeout=10, transport=sandbox.outbound) as client:
            await client.post(url, json=body)
    except httpx.HTTPError:
        return  # a hint only: the receiver reads the result itself


def _announced_base(request: Request[Any, Any, Any], sandbox: SandboxState) -> str:
    return sandbox.knobs.url_base or str(request.base_url).rstrip("/")


def _fault_answer(fault: CreateFault, sandbox: SandboxState) -> Response[Any]:
    if fault == "html_502":
        return Response(EDGE_HTML, status_code=502, media_type=MediaType.HTML)
    status, message = FAULT_ANSWERS[fault]
    retry_after = sandbox.knobs.retry_after
    if fault == "http_429" and retry_after is not None:
        return _detail(status, message, {"Retry-After": retry_after})
    return _detail(status, message)


def _detail(status: int, message: str, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response({"detail": message}, status_code=status, headers=headers or {})


def _unauthorized() -> Response[Any]:
    return _detail(401, "Authentication failed: invalid key")


DIALECT = Dialect(error=_detail, fault=_fault_answer, unauthorized=_unauthorized, scheme="Key")
