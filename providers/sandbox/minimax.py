"""A simulated MiniMax: ``POST /v1/video_generation``, ``GET /v1/query/video_generation`` and
``GET /v1/files/retrieve``.

Speaks the wire format of ``providers.md`` (MiniMax section). Business errors come as **HTTP
200** with a non-zero ``base_resp.status_code``, as MiniMax sends them:

- a wrong key → 1004; the knobs ``http_429`` → 1002, ``http_401``/``http_403`` → 1004,
  ``http_402`` → 1008, ``content`` (or ``[sandbox:content]``) → 1026, ``http_400`` → 2013;
- the knob ``business_code`` (any code), or the prompt marker ``[sandbox:code=NNNN]``, answers
  that code;
- an invalid body (unknown or mistyped field, Fast without ``first_frame_image``, 10 s at
  1080P) → 2013 naming the field.

``http_500``, ``http_503`` and ``html_502`` stay real HTTP errors (an edge in front of it),
``hang`` and ``drop`` behave as at every simulated reseller.

With a ``callback_url``, the create first POSTs ``{"challenge": "…"}`` to it and waits up to
3 s for the same challenge back (before answering the create, as MiniMax may); a URL that does
not echo it fails the create with 2013. When the task ends, one status body is POSTed there.
A finished task's ``file_id`` is :data:`FILE_PREFIX` + its task id.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Literal

import httpx
from litestar import Litestar, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.enums import MediaType
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

CREATE_PATH = "/v1/video_generation"
QUERY_PATH = "/v1/query/video_generation"
FILE_PATH = "/v1/files/retrieve"
FILE_PREFIX = "9"
CHALLENGE_TIMEOUT_S = 3.0

RATE_LIMIT, AUTH, BALANCE, SENSITIVE, INVALID = 1002, 1004, 1008, 1026, 2013
MESSAGES = {
    RATE_LIMIT: "rate limit exceeded",
    AUTH: "authorization failure, please check your api key",
    BALANCE: "insufficient balance",
    SENSITIVE: "input new_sensitive",
    INVALID: "invalid params",
}
KNOB_CODES = {
    "http_429": RATE_LIMIT,
    "http_401": AUTH,
    "http_403": AUTH,
    "http_402": BALANCE,
    "http_400": INVALID,
}
CODE_MARKER = re.compile(r"\[sandbox:code=(\d{1,6})\]")
STATUS_WORDS = {
    Phase.QUEUED: "Queueing",
    Phase.PROCESSING: "Processing",
    Phase.COMPLETED: "Success",
    Phase.FAILED: "Fail",
}
EDGE_HTML = "<html><body><h1>502 Bad Gateway</h1><p>openresty</p></body></html>"


class CreateBody(BaseModel):
    """What MiniMax's create accepts; strict, so ``"6"`` is not a duration."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: Literal["MiniMax-Hailuo-2.3", "MiniMax-Hailuo-2.3-Fast"]
    prompt: str = Field(min_length=1, max_length=2000)
    first_frame_image: str | None = Field(
        default=None, pattern=r"^(https?://\S+|data:image/(png|jpeg|webp);base64,[A-Za-z0-9+/=]+)$"
    )
    duration: Literal[6, 10] = 6
    resolution: Literal["768P", "1080P"] = "768P"
    prompt_optimizer: bool = True
    callback_url: str | None = Field(default=None, pattern=r"^https?://\S+$")


def create_app(state: SandboxState) -> Litestar:
    """The simulated MiniMax over ``state``."""
    return create_sandbox_app(state, [create_video, query_video, retrieve_file])


def base_resp(code: int = 0, message: str = "success") -> dict[str, object]:
    return {"status_code": code, "status_msg": message}


def business_error(code: int, message: str | None = None) -> Response[Any]:
    """MiniMax's failure: HTTP 200, ``base_resp.status_code`` non-zero."""
    text = message or MESSAGES.get(code, f"error {code}")
    return Response({"task_id": "", "base_resp": base_resp(code, text)}, status_code=200)


@post(CREATE_PATH, status_code=200)
async def create_video(
    request: Request[Any, Any, Any], sandbox: NamedDependency[SandboxState]
) -> Response[Any]:
    raw = await admit_create(request, sandbox, DIALECT)
    if isinstance(raw, Response):
        return raw
    if sandbox.knobs.business_code is not None:
        return business_error(sandbox.knobs.business_code)
    body = _validate(parse_json_object(raw))
    if isinstance(body, Response):
        return body
    marked = CODE_MARKER.search(body.prompt)
    if marked:
        return business_error(int(marked[1]))
    if sandbox.refuses_content(body.prompt):
        return business_error(SENSITIVE)
    if body.callback_url is not None and not await _challenge(sandbox, body.callback_url):
        return business_error(INVALID, "invalid params, callback_url did not echo the challenge")
    spec = TaskSpec(
        model=body.model, prompt=body.prompt, duration=body.duration, resolution=body.resolution
    )
    task = sandbox.accept(str(10**14 + secrets.randbelow(9 * 10**14)), spec)
    if body.callback_url is not None and task.complete_after_s is not None:
        sandbox.spawn(_report_when_done(sandbox, task, body.callback_url))
    return Response({"task_id": task.task_id, "base_resp": base_resp()}, status_code=200)


@get(QUERY_PATH)
async def query_video(
    request: Request[Any, Any, Any], sandbox: NamedDependency[SandboxState]
) -> Response[Any]:
    sandbox.counters.status_calls += 1
    refused = await admit_read(request, sandbox, DIALECT)
    if refused is not None:
        return refused
    task = sandbox.tasks.get(request.query_params.get("task_id", ""))
    if task is None:
        return business_error(INVALID, "invalid params, task_id not found")
    return Response(_task_body(task, sandbox.now()), status_code=200)


@get(FILE_PATH)
async def retrieve_file(
    request: Request[Any, Any, Any], sandbox: NamedDependency[SandboxState]
) -> Response[Any]:
    sandbox.counters.file_calls += 1
    refused = await admit_read(request, sandbox, DIALECT)
    if refused is not None:
        return refused
    file_id = request.query_params.get("file_id", "")
    task = sandbox.tasks.get(file_id.removeprefix(FILE_PREFIX)) if file_id[:1] == "9" else None
    if task is None or task.phase(sandbox.now()) is not Phase.COMPLETED:
        return business_error(INVALID, "invalid params, file_id not found")
    file = {
        "file_id": file_id,
        "bytes": 0,
        "created_at": int(task.created_at),
        "filename": f"{task.task_id}.mp4",
        "purpose": "video_generation",
        "download_url": video_url(request, task.task_id),
    }
    return Response({"file": file, "base_resp": base_resp()}, status_code=200)


def _task_body(task: SimTask, now: float) -> dict[str, object]:
    phase = task.phase(now)
    word = STATUS_WORDS[phase]
    if phase is Phase.QUEUED and now - task.created_at < task.queue_s / 2:
        word = "Preparing"
    body: dict[str, object] = {"task_id": task.task_id, "status": word, "file_id": ""}
    if phase is Phase.COMPLETED:
        body |= {"file_id": FILE_PREFIX + task.task_id, "video_width": 1366, "video_height": 768}
    if phase is Phase.FAILED:
        body["error_message"] = task.error
    return body | {"base_resp": base_resp()}


def _validate(payload: dict[str, object] | None) -> CreateBody | Response[Any]:
    """The parsed body, or 2013 naming what is wrong."""
    if payload is None:
        return business_error(INVALID, "invalid params, the body must be a JSON object")
    try:
        body = CreateBody.model_validate(payload)
    except ValidationError as exc:
        fields = ", ".join(
            ".".join(str(p) for p in err["loc"]) or "body" for err in exc.errors(include_url=False)
        )
        return business_error(INVALID, f"invalid params, {fields}")
    if body.model == "MiniMax-Hailuo-2.3-Fast" and body.first_frame_image is None:
        return business_error(INVALID, "invalid params, first_frame_image is required for Fast")
    if body.duration == 10 and body.resolution == "1080P":
        return business_error(INVALID, "invalid params, 1080P is only available for 6 s")
    return body


async def _challenge(sandbox: SandboxState, url: str) -> bool:
    """POST a fresh challenge to ``url``; True when the same one came back within 3 s."""
    challenge = secrets.token_urlsafe(16)
    sandbox.counters.challenges_sent += 1
    try:
        async with _client(sandbox) as client:
            answer = await client.post(url, json={"challenge": challenge})
        echoed = answer.status_code == 200 and answer.json().get("challenge") == challenge
    except (httpx.HTTPError, ValueError, AttributeError):
        echoed = False
    if echoed:
        sandbox.counters.challenges_echoed += 1
    return echoed


async def _report_when_done(sandbox: SandboxState, task: SimTask, url: str) -> None:
    """Once ``task`` is final, POST its status body to ``url`` once (unsigned, as MiniMax)."""
    if not await sandbox.until_final(task):
        return
    sandbox.counters.callbacks_sent += 1
    try:
        async with _client(sandbox) as client:
            await client.post(url, json=_task_body(task, sandbox.now()))
    except httpx.HTTPError:
        return  # a hint only: MiniMax does not retry it either


def _client(sandbox: SandboxState) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=CHALLENGE_TIMEOUT_S, transport=sandbox.outbound)


def _fault_answer(fault: CreateFault, _: SandboxState) -> Response[Any]:
    """An edge fault as a real HTTP error; a rate limit or an account fault as MiniMax's
    business error (HTTP 200)."""
    if fault in KNOB_CODES:
        return business_error(KNOB_CODES[fault])
    if fault == "html_502":
        return Response(EDGE_HTML, status_code=502, media_type=MediaType.HTML)
    return _edge_error(503 if fault == "http_503" else 500, "unknown error")


def _edge_error(status: int, message: str) -> Response[Any]:
    return Response({"base_resp": base_resp(1000, message)}, status_code=status)


DIALECT = Dialect(error=_edge_error, fault=_fault_answer, unauthorized=lambda: business_error(AUTH))
