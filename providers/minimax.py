"""MiniMax (api.minimax.io), the model's maker: Hailuo 2.3 and 2.3 Fast.

Text-to-video (no ``first_frame_image``) and image-to-video from a URL or a data URI; Fast
animates a first frame only. There is no tier field: MiniMax sells one quality (see
``shared/spec/providers.md``).

MiniMax reports business errors with **HTTP 200** and a non-zero ``base_resp.status_code``.
:data:`BUSINESS_ERRORS` maps the documented ones onto their HTTP equivalents, so they land in
the :mod:`providers.errors` tree like any reseller's: 1002 (rate limit) as a ``429``, 1004
(auth) as a ``401``, 1008 (balance) as a ``402``, all three failed over; 1026 (sensitive
content) is a content refusal and 2013 (invalid parameters) an upstream rejection, neither
failed over. Any other non-zero code is refused as a ``400`` would be (not failed over) and
reported with its code.

A finished task names a ``file_id``; its download URL takes a second call, ``files/retrieve``.

The translation is pure: :func:`to_wire`, :func:`parse_submitted`, :func:`parse_query`,
:func:`parse_file`, :func:`business_code`. :class:`MiniMaxProvider` adds the HTTP calls.
"""

from __future__ import annotations

import logging
from typing import ClassVar
from urllib.parse import quote

import httpx

from providers.base import Submitted, TaskStatus, UpstreamStatus, VideoJob
from providers.capabilities import HAILUO, HAILUO_FAST, IMAGE_ONLY_MODELS, MINIMAX
from providers.errors import (
    ContentRejected,
    ProviderError,
    RequestRejected,
    mentions_content_refusal,
)
from providers.http import HTTPAdapter, describe_shape

logger = logging.getLogger(__name__)

CREATE_PATH = "/v1/video_generation"
QUERY_PATH = "/v1/query/video_generation?task_id={task_id}"
FILE_PATH = "/v1/files/retrieve?file_id={file_id}"

MODEL_IDS: dict[str, str] = {HAILUO: "MiniMax-Hailuo-2.3", HAILUO_FAST: "MiniMax-Hailuo-2.3-Fast"}

RATE_LIMITED, AUTH_FAILED, NO_BALANCE, SENSITIVE, INVALID_PARAMS = 1002, 1004, 1008, 1026, 2013
BUSINESS_ERRORS: dict[int, int] = {
    RATE_LIMITED: 429,
    AUTH_FAILED: 401,
    NO_BALANCE: 402,
    SENSITIVE: 422,
    INVALID_PARAMS: 400,
}
"""``base_resp.status_code`` → the HTTP status it means; any other non-zero code reads as 400."""

STATUSES: dict[str, TaskStatus] = {
    "preparing": TaskStatus.QUEUED,
    "queueing": TaskStatus.QUEUED,
    "queued": TaskStatus.QUEUED,
    "processing": TaskStatus.IN_PROGRESS,
    "success": TaskStatus.COMPLETED,
    "fail": TaskStatus.FAILED,
    "failed": TaskStatus.FAILED,
}
"""MiniMax's status words (compared in lower case); anything else reads as in_progress."""


def to_wire(job: VideoJob) -> dict[str, object]:
    """The create body. Raises ValueError for a model MiniMax does not make, or for an
    image-only model (Fast) without an image."""
    model = MODEL_IDS.get(job.model)
    if model is None:
        raise ValueError(f"MiniMax does not make {job.model!r}")
    if job.image is None and job.model in IMAGE_ONLY_MODELS:
        raise ValueError(f"{model} is image-to-video only: a first frame is required")
    body: dict[str, object | None] = {
        "model": model,
        "prompt": job.prompt,
        "first_frame_image": job.image,  # absent: text-to-video
        "duration": int(job.duration),
        "resolution": job.resolution.upper(),
        "callback_url": job.callback_url,
    }
    return {key: value for key, value in body.items() if value is not None}


def business_code(body: object) -> int | None:
    """``base_resp.status_code`` when the body carries one (0 is success)."""
    base = body.get("base_resp") if isinstance(body, dict) else None
    code = base.get("status_code") if isinstance(base, dict) else None
    if isinstance(code, bool) or not isinstance(code, int | str):
        return None
    try:
        return int(code)
    except ValueError:
        return None


def failed_status(http_status: int, body: object) -> int | None:
    """The HTTP status a failed answer is mapped by, or None for a success.

    A non-zero ``base_resp.status_code`` is a failure even under HTTP 200; an HTTP failure
    stays one whatever the body says."""
    if not 200 <= http_status < 300:
        return http_status
    code = business_code(body)
    if code is None or code == 0:
        return None
    return BUSINESS_ERRORS.get(code, 400)


def parse_error(body: object) -> tuple[str | None, str | None]:
    """``(status_msg, status_code)`` of ``base_resp``; ``(None, None)`` for another shape."""
    base = body.get("base_resp") if isinstance(body, dict) else None
    message = base.get("status_msg") if isinstance(base, dict) else None
    code = business_code(body)
    return (
        _text(message),
        None if code is None else str(code),
    )


def map_status(raw: str) -> TaskStatus:
    status = STATUSES.get(raw.strip().lower())
    if status is None:
        logger.warning("minimax: unknown task status %r, treating it as in_progress", raw[:40])
        return TaskStatus.IN_PROGRESS
    return status


def parse_submitted(body: object) -> Submitted:
    """The create answer ``{"task_id", "base_resp"}``. Raises ValueError without a task id."""
    upstream_id = _text(body.get("task_id")) if isinstance(body, dict) else None
    if upstream_id is None:
        raise ValueError("no task id")
    return Submitted(upstream_id=upstream_id, status=TaskStatus.QUEUED, raw_status="")


def parse_query(body: object) -> tuple[UpstreamStatus, str | None]:
    """A query answer, and the ``file_id`` to retrieve when it says ``Success``.

    A ``Success`` without a ``file_id`` is kept in progress (and logged by its shape).
    Raises ValueError when there is no status at all."""
    raw = _text(body.get("status")) if isinstance(body, dict) else None
    if raw is None or not isinstance(body, dict):
        raise ValueError("no status")
    status = map_status(raw)
    if status is TaskStatus.COMPLETED:
        file_id = _text(body.get("file_id"))
        if file_id is None:
            logger.warning(
                "minimax: task is %r without a file_id (shape %s); keeping it in_progress",
                raw,
                describe_shape(body),
            )
            return UpstreamStatus(status=TaskStatus.IN_PROGRESS, raw_status=raw), None
        return UpstreamStatus(status=status, raw_status=raw), file_id
    if status is TaskStatus.FAILED:
        message = _text(body.get("error_message")) or _text(body.get("fail_reason"))
        refused = mentions_content_refusal(message)
        return UpstreamStatus(
            status=status,
            raw_status=raw,
            error_code="content_rejected" if refused else "generation_failed",
            error_message=message,
        ), None
    return UpstreamStatus(status=status, raw_status=raw), None


def parse_file(body: object) -> str:
    """``file.download_url`` of a ``files/retrieve`` answer. Raises ValueError without one."""
    file = body.get("file") if isinstance(body, dict) else None
    url = _text(file.get("download_url")) if isinstance(file, dict) else None
    if url is None:
        raise ValueError("no download_url")
    return url


class MiniMaxProvider(HTTPAdapter):
    """One MiniMax account."""

    kind: ClassVar[str] = MINIMAX.kind
    models: ClassVar[tuple[str, ...]] = MINIMAX.models
    text_to_video: ClassVar[bool] = MINIMAX.text_to_video
    data_uri_images: ClassVar[bool] = MINIMAX.data_uri_images  # URL or data URI (providers.md)

    async def create(self, job: VideoJob) -> Submitted:
        try:
            wire = to_wire(job)
        except ValueError as exc:
            raise RequestRejected(self.name, str(exc)) from exc
        return await self._submit(CREATE_PATH, wire, parse_submitted)

    async def status(self, upstream_id: str) -> UpstreamStatus:
        path = QUERY_PATH.format(task_id=quote(upstream_id, safe=""))
        status, file_id = await self._call(
            "GET", path, parse_query, unreadable="status answer without a status"
        )
        if file_id is None:
            return status
        url = await self._call(
            "GET",
            FILE_PATH.format(file_id=quote(file_id, safe="")),
            parse_file,
            unreadable="file answer without a download_url",
        )
        return status.model_copy(update={"video_url": url})

    def _failed_status(self, response: httpx.Response, body: object) -> int | None:
        return failed_status(response.status_code, body)

    def _parse_error(self, body: object) -> tuple[str | None, str | None]:
        return parse_error(body)

    def _error(self, response: httpx.Response, body: object, status: int) -> ProviderError:
        error = super()._error(response, body, status)
        code = business_code(body) if response.is_success else None
        if code == SENSITIVE and not isinstance(error, ContentRejected):
            return ContentRejected(
                self.name, error.message, http_status=status, upstream_code=error.upstream_code
            )
        if code == INVALID_PARAMS and not isinstance(error, RequestRejected):
            return RequestRejected(
                self.name, error.message, http_status=status, upstream_code=error.upstream_code
            )
        if code is not None and code not in BUSINESS_ERRORS:
            # Undocumented: refused like a 400 (not failed over), and reported with its code.
            return type(error)(
                self.name,
                f"MiniMax error {code}: {error.message}",
                http_status=status,
                upstream_code=error.upstream_code,
            )
        return error


def _text(node: object) -> str | None:
    """A non-blank string (ids may come as numbers), else None."""
    if isinstance(node, int) and not isinstance(node, bool):
        return str(node)
    if isinstance(node, str) and node.strip():
        return node.strip()
    return None
