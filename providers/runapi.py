"""RunAPI (runapi.ai): Hailuo 2.3 image-to-video.

The wire format comes from RunAPI's own SDKs (see ``shared/spec/providers.md``): current field
names only (``first_frame_image_url``, integer ``duration_seconds``, lower-case
``output_resolution``), null fields dropped. Hailuo 2.3 has no text-to-video route here.

The translation is pure: :func:`to_wire` builds the create body, :func:`parse_submitted`,
:func:`parse_status` and :func:`parse_error` read the answers. :class:`RunAPIProvider` only adds
the HTTP calls; :class:`providers.http.HTTPAdapter` maps failures onto the
:mod:`providers.errors` tree.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, ValidationError

from providers.base import (
    AccountBalance,
    Submitted,
    TaskStatus,
    Tier,
    UpstreamStatus,
    VideoJob,
)
from providers.capabilities import RUNAPI
from providers.errors import RequestRejected, mentions_content_refusal
from providers.http import HTTPAdapter, describe_shape

logger = logging.getLogger(__name__)

CREATE_PATH = "/api/v1/hailuo/image_to_video"
STATUS_PATH = "/api/v1/hailuo/image_to_video/{id}"
BALANCE_PATH = "/api/v1/me/balance"

MODEL_IDS: dict[Tier, str] = {
    "standard": "hailuo-2.3-image-to-video-standard",
    "pro": "hailuo-2.3-image-to-video-pro",
}

STATUSES: dict[str, TaskStatus] = {
    "pending": TaskStatus.QUEUED,
    "queued": TaskStatus.QUEUED,
    "processing": TaskStatus.IN_PROGRESS,
    "running": TaskStatus.IN_PROGRESS,
    "completed": TaskStatus.COMPLETED,
    "succeeded": TaskStatus.COMPLETED,
    "success": TaskStatus.COMPLETED,
    "failed": TaskStatus.FAILED,
}
"""RunAPI's status words (lower case) onto the public ones; anything else reads as in_progress."""


class _Task(BaseModel):
    """The create and the status answers share one shape."""

    model_config = ConfigDict(extra="ignore")

    id: str | int | None = None
    status: str | None = None
    videos: Any = None  # [{"url"}]: read by _video_url
    error: Any = None  # "…" or {"code", "message"}: read by _error_text, never trusted


class _ErrorBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    error: Any = None
    errors: Any = None  # {"field": ["msg", …]} from validation failures
    message: str | None = None


def to_wire(job: VideoJob) -> dict[str, object]:
    """The create body for ``job``. Raises ValueError for a text-to-video job."""
    if job.image is None:
        raise ValueError("RunAPI has no text-to-video route for Hailuo 2.3: an image is required")
    body: dict[str, object | None] = {
        "model": MODEL_IDS[job.tier],
        "prompt": job.prompt,
        "first_frame_image_url": job.image,
        "duration_seconds": int(job.duration),
        "output_resolution": job.resolution.lower(),
        "callback_url": job.callback_url,
    }
    return {key: value for key, value in body.items() if value is not None}


def map_status(raw: str) -> TaskStatus:
    """A RunAPI status word onto the public ones, case-insensitively."""
    status = STATUSES.get(raw.strip().lower())
    if status is None:
        logger.warning("runapi: unknown task status %r, treating it as in_progress", raw[:40])
        return TaskStatus.IN_PROGRESS
    return status


def parse_submitted(body: object) -> Submitted:
    """The create answer ``{"id", "status"}``. Raises ValueError when it carries no task id."""
    task = _Task.model_validate(body)
    upstream_id = _task_id(task)
    if upstream_id is None:
        raise ValueError("no task id")
    raw = task.status or ""
    return Submitted(
        upstream_id=upstream_id,
        status=map_status(raw) if raw else TaskStatus.QUEUED,
        raw_status=raw,
    )


def parse_status(body: object) -> UpstreamStatus:
    """A status answer. Raises ValueError when it has no readable ``status``."""
    task = _Task.model_validate(body)
    if not task.status:
        raise ValueError("no status")
    raw = task.status
    status = map_status(raw)
    if status is TaskStatus.COMPLETED:
        url = _video_url(task.videos)
        if url is None:
            logger.warning(
                "runapi: task is %r but has no videos[0].url (shape %s); keeping it in_progress",
                raw,
                describe_shape(body),
            )
            return UpstreamStatus(status=TaskStatus.IN_PROGRESS, raw_status=raw)
        return UpstreamStatus(status=status, raw_status=raw, video_url=url)
    if status is TaskStatus.FAILED:
        message, code = _error_text(task.error)
        refused = mentions_content_refusal(message, code)
        return UpstreamStatus(
            status=status,
            raw_status=raw,
            error_code="content_rejected" if refused else "generation_failed",
            error_message=message,
        )
    return UpstreamStatus(status=status, raw_status=raw)


class _Balance(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    balance_cents: int


def parse_balance(body: object) -> AccountBalance:
    """``{"balance_cents", "paid_balance_cents", …}`` → the spendable balance. Raises
    ValueError when ``balance_cents`` is missing or not an integer."""
    return AccountBalance(balance_cents=_Balance.model_validate(body).balance_cents)


def parse_error(body: object) -> tuple[str | None, str | None]:
    """``(message, code)`` from any documented error body; validation fields fold into message.

    Shapes: ``{"error": {"code", "message"}}``, ``{"error": "…"}``, and
    ``{"error": "Validation failed", "errors": {"field": ["…"]}}``. Anything else: ``(None, None)``
    and the caller quotes the raw body instead.
    """
    try:
        parsed = _ErrorBody.model_validate(body)
    except ValidationError:
        return None, None
    message, code = _error_text(parsed.error)
    message = message or parsed.message
    details = _fold_field_errors(parsed.errors)
    if details:
        message = f"{message}: {details}" if message else details
    return message, code


class RunAPIProvider(HTTPAdapter):
    """One RunAPI account."""

    kind: ClassVar[str] = RUNAPI.kind
    models: ClassVar[tuple[str, ...]] = RUNAPI.models
    text_to_video: ClassVar[bool] = RUNAPI.text_to_video
    data_uri_images: ClassVar[bool] = RUNAPI.data_uri_images  # URLs only (providers.md)

    async def create(self, job: VideoJob) -> Submitted:
        if job.image is None:
            raise RequestRejected(self.name, "Hailuo 2.3 text-to-video is not offered by RunAPI")
        return await self._submit(CREATE_PATH, to_wire(job), parse_submitted)

    async def status(self, upstream_id: str) -> UpstreamStatus:
        path = STATUS_PATH.format(id=quote(upstream_id, safe=""))
        return await self._poll(path, parse_status)

    async def balance(self) -> AccountBalance:
        """The account's balance (a free read; ``providers.base.BalanceReader``)."""
        return await self._call(
            "GET", BALANCE_PATH, parse_balance, unreadable="balance answer without balance_cents"
        )

    def _parse_error(self, body: object) -> tuple[str | None, str | None]:
        return parse_error(body)


def _task_id(task: _Task) -> str | None:
    text = "" if task.id is None else str(task.id).strip()
    return text or None


def _video_url(videos: object) -> str | None:
    """The first ``videos[].url``; entries of another shape are skipped."""
    if not isinstance(videos, list):
        return None
    for video in videos:
        url = video.get("url") if isinstance(video, dict) else None
        if isinstance(url, str) and url.strip():
            return url.strip()
    return None


def _error_text(error: object) -> tuple[str | None, str | None]:
    """``(message, code)`` from ``"…"`` or ``{"code", "message"}``; other shapes read as none."""
    if isinstance(error, str):
        return error.strip() or None, None
    if isinstance(error, dict):
        message, code = error.get("message"), error.get("code")
        return (
            message.strip() or None if isinstance(message, str) else None,
            str(code) if isinstance(code, str | int) and not isinstance(code, bool) else None,
        )
    return None, None


def _fold_field_errors(errors: object) -> str | None:
    """``{"prompt": ["too long"]}`` → ``"prompt: too long"`` so the gateway can report it."""
    if isinstance(errors, dict):
        parts = [f"{field}: {_join(messages)}" for field, messages in errors.items()]
    elif isinstance(errors, list):
        parts = [_join(errors)]
    else:
        return None
    return "; ".join(part for part in parts if part) or None


def _join(messages: object) -> str:
    if isinstance(messages, list):
        return ", ".join(str(m) for m in messages if isinstance(m, str | int | float))
    return str(messages) if isinstance(messages, str | int | float) else ""
