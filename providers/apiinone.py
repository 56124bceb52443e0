"""API in One (apiin.one): Hailuo 2.3 image-to-video.

Every answer comes in one envelope, ``{"code", "message", "data"}``, whose ``code`` may disagree
with the HTTP status: whichever of the two reports a failure is trusted (the envelope's when
both do, being the reseller's own word). Most of the status body is inferred (see
``shared/spec/providers.md``), so it is read defensively: status words case-insensitively, the
video URL from several known places (:data:`VIDEO_URL_PATHS`), an unknown shape logged by its
keys and kept in progress.

The translation is pure: :func:`to_wire`, :func:`parse_submitted`, :func:`parse_status`,
:func:`parse_error`. :class:`APIInOneProvider` adds the HTTP calls, and trusts
:func:`envelope_failure` over the HTTP status to tell a failed answer.
"""

from __future__ import annotations

import logging
from typing import ClassVar
from urllib.parse import quote

import httpx

from providers.base import (
    Submitted,
    TaskStatus,
    Tier,
    UpstreamStatus,
    VideoJob,
)
from providers.capabilities import APIINONE
from providers.errors import RequestRejected, mentions_content_refusal
from providers.http import HTTPAdapter, describe_shape

logger = logging.getLogger(__name__)

CREATE_PATH = "/api/v1/videos/generations"
STATUS_PATH = "/api/v1/tasks/{task_id}"

MODEL_IDS: dict[Tier, str] = {
    "standard": "hailuo/2-3-image-to-video-standard",
    "pro": "hailuo/2-3-image-to-video-pro",
}

STATUSES: dict[str, TaskStatus] = {
    "PENDING": TaskStatus.QUEUED,
    "QUEUED": TaskStatus.QUEUED,
    "SUBMITTED": TaskStatus.QUEUED,
    "IN_PROGRESS": TaskStatus.IN_PROGRESS,
    "PROCESSING": TaskStatus.IN_PROGRESS,
    "RUNNING": TaskStatus.IN_PROGRESS,
    "COMPLETED": TaskStatus.COMPLETED,
    "SUCCESS": TaskStatus.COMPLETED,
    "SUCCEEDED": TaskStatus.COMPLETED,
    "FAILED": TaskStatus.FAILED,
    "ERROR": TaskStatus.FAILED,
    "FAILURE": TaskStatus.FAILED,
}
"""Status words (upper case) onto the public ones; anything else reads as in_progress."""

Path = tuple[str | int, ...]

VIDEO_URL_PATHS: tuple[Path, ...] = (
    ("output", "video_url"),
    ("video_url",),
    ("result", "video_url"),
    ("result", "urls", 0),
    ("resultUrls", 0),
)
"""Where, under ``data``, a finished task's video URL has been seen, tried in this order."""

ERROR_MESSAGE_PATHS: tuple[Path, ...] = (
    ("error", "message"),
    ("error",),
    ("error_message",),
    ("fail_reason",),
)
"""Where, under ``data``, a failed task's reason may be."""


def to_wire(job: VideoJob) -> dict[str, object]:
    """The create body for ``job``. Raises ValueError for a text-to-video job."""
    if job.image is None:
        raise ValueError("API in One has no Hailuo 2.3 text-to-video model: an image is required")
    body: dict[str, object | None] = {
        "model": MODEL_IDS[job.tier],
        "prompt": job.prompt,
        "image": job.image,
        "duration": str(job.duration),
        "resolution": job.resolution.upper(),
        "callback_url": job.callback_url,
    }
    return {key: value for key, value in body.items() if value is not None}


def map_status(raw: str) -> TaskStatus:
    """An API in One status word onto the public ones, case-insensitively."""
    status = STATUSES.get(raw.strip().upper())
    if status is None:
        logger.warning("apiinone: unknown task status %r, treating it as in_progress", raw[:40])
        return TaskStatus.IN_PROGRESS
    return status


def envelope_failure(http_status: int, body: object) -> int | None:
    """The status of a failed answer, or None when neither HTTP nor the envelope reports one.

    An envelope ``code`` of 400-599 is a failure even under HTTP 200 (``{"code": 402}`` is out
    of credits); a success ``code`` does not hide an HTTP failure.
    """
    code = _envelope_code(body)
    if code is not None and 400 <= code < 600:
        return code
    if not 200 <= http_status < 300:
        return http_status
    return None


def parse_submitted(body: object) -> Submitted:
    """The create envelope's ``data: {"task_id", "status"}``. ValueError without a task id."""
    data = _dig(body, ("data",))
    upstream_id = _text(_dig(data, ("task_id",))) or _text(_dig(data, ("id",)))
    if upstream_id is None:
        raise ValueError("no task id")
    raw = _text(_dig(data, ("status",))) or ""
    return Submitted(
        upstream_id=upstream_id,
        status=map_status(raw) if raw else TaskStatus.QUEUED,
        raw_status=raw,
    )


def parse_status(body: object) -> UpstreamStatus:
    """A status envelope. Raises ValueError when ``data.status`` is missing."""
    data = _dig(body, ("data",))
    raw = _text(_dig(data, ("status",)))
    if raw is None:
        raise ValueError("no status")
    status = map_status(raw)
    if status is TaskStatus.COMPLETED:
        url = next(filter(None, (_text(_dig(data, path)) for path in VIDEO_URL_PATHS)), None)
        if url is None:
            logger.warning(
                "apiinone: task is %r but no known field holds its video URL (data shape %s); "
                "keeping it in_progress",
                raw,
                describe_shape(data),
            )
            return UpstreamStatus(status=TaskStatus.IN_PROGRESS, raw_status=raw)
        return UpstreamStatus(status=status, raw_status=raw, video_url=url)
    if status is TaskStatus.FAILED:
        message = next(
            filter(None, (_text(_dig(data, path)) for path in ERROR_MESSAGE_PATHS)), None
        )
        code = _text(_dig(data, ("error", "code")))
        refused = mentions_content_refusal(message, code)
        return UpstreamStatus(
            status=status,
            raw_status=raw,
            error_code="content_rejected" if refused else "generation_failed",
            error_message=message,
        )
    return UpstreamStatus(status=status, raw_status=raw)


def parse_error(body: object) -> tuple[str | None, str | None]:
    """``(message, code)`` of a failure envelope ``{"code": 402, "message": "…", "data": null}``.

    Also reads ``{"error": "…"}`` and ``{"error": {"code", "message"}}``, in case the edge or
    a framework answers instead of the application.
    """
    code = _envelope_code(body)
    # A success code's "success" says nothing about an HTTP failure.
    message = _text(_dig(body, ("message",))) if code is None or code >= 400 else None
    message = message or _text(_dig(body, ("error", "message"))) or _text(_dig(body, ("error",)))
    upstream_code = str(code) if code is not None else _text(_dig(body, ("error", "code")))
    return message or None, upstream_code


class APIInOneProvider(HTTPAdapter):
    """One API in One account."""

    kind: ClassVar[str] = APIINONE.kind
    models: ClassVar[tuple[str, ...]] = APIINONE.models
    text_to_video: ClassVar[bool] = APIINONE.text_to_video
    data_uri_images: ClassVar[bool] = APIINONE.data_uri_images  # URLs only (providers.md)

    async def create(self, job: VideoJob) -> Submitted:
        if job.image is None:
            raise RequestRejected(
                self.name, "Hailuo 2.3 text-to-video is not offered by API in One"
            )
        return await self._submit(CREATE_PATH, to_wire(job), parse_submitted)

    async def status(self, upstream_id: str) -> UpstreamStatus:
        path = STATUS_PATH.format(task_id=quote(upstream_id, safe=""))
        return await self._poll(path, parse_status)

    def _failed_status(self, response: httpx.Response, body: object) -> int | None:
        return envelope_failure(response.status_code, body)

    def _parse_error(self, body: object) -> tuple[str | None, str | None]:
        return parse_error(body)


def _envelope_code(body: object) -> int | None:
    code = _dig(body, ("code",))
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.strip().isdigit() and code.strip().isascii():
        return int(code)
    return None


def _dig(node: object, path: Path) -> object:
    """``node[path[0]][path[1]]…``, or None as soon as a step does not fit the shape."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(node, list) or len(node) <= step:
                return None
            node = node[step]
        elif isinstance(node, dict):
            node = node.get(step)
        else:
            return None
    return node


def _text(node: object) -> str | None:
    """A non-blank string (ids may come as numbers), else None."""
    if isinstance(node, int) and not isinstance(node, bool):
        return str(node)
    if isinstance(node, str) and node.strip():
        return node.strip()
    return None
