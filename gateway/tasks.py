"""A task as the gateway keeps it: :class:`TaskRecord`, its public id, and :func:`place`.

A task is created by ``POST /v1/videos`` (:mod:`gateway.service`), placed with an upstream
(:func:`place`, by a create or a resubmission), refreshed until final (:mod:`gateway.status`)
and stored as JSON in Redis (:mod:`gateway.store`). Its public id is ``vid_`` and 26 base32
characters (:data:`TASK_ID`); :meth:`TaskRecord.public` is what a client sees.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from gateway.progress import progress
from gateway.schemas import Attempt, Mode, RoutingOverrides, Task, TaskError
from gateway.shards import draw
from providers.base import Duration, Resolution, TaskStatus, Tier, VideoJob

if TYPE_CHECKING:  # the router builds placements; tasks only read them
    from gateway.router import Placement

TASK_ID = re.compile(r"^vid_[a-z2-7]{26}$")
"""What :func:`new_task_id` draws: anything else is no task of ours (answered 404 unread)."""


def new_task_id(shard: int | None = None) -> str:
    """``vid_`` + 26 base32 characters of 128 random bits: opaque, URL-safe, unguessable; in
    ``shard`` when given (a task created under an ``Idempotency-Key`` lives in the key's)."""
    return draw(
        lambda: "vid_" + base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower(),
        shard,
    )


def now_s() -> int:
    return int(time.time())


class CopyState(BaseModel):
    """A finished video's copy into the gateway's storage, while it runs (and how it ended)."""

    started_at: float
    attempts: int = 0
    last_error: str | None = None
    gave_up: str | None = None
    """Why the reseller's link was kept instead of a stored copy."""


class StoredVideo(BaseModel):
    """The gateway's own copy of a finished video."""

    key: str
    """The object's key in the store."""
    size: int
    sha256: str
    content_type: str
    stored_at: int
    delete_at: int
    """When retention deletes it (Unix seconds); the task's ``expires_at``."""


class TaskRecord(BaseModel):
    """What the store keeps for one task; :meth:`public` is what a client sees."""

    id: str
    client: str
    status: TaskStatus = TaskStatus.QUEUED
    job: VideoJob | None
    """The canonical request; dropped once the task is final (it is only needed to submit)."""
    mode: Mode
    model: str
    tier: Tier
    duration: Duration
    resolution: Resolution
    webhook_url: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    provider: str | None = None
    provider_task_id: str | None = None
    price_usd: float | None = None
    video_url: str | None = None
    error: TaskError | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    created_at: int
    updated_at: int
    completed_at: int | None = None
    polled_at: float | None = None
    """When the upstream was last asked for this task's status (Unix seconds, fractional)."""
    routing: RoutingOverrides | None = None
    """The request's routing overrides, kept for a resubmission."""
    resubmits: int = 0
    resubmitting: bool = False
    """A resubmission's paid create is in flight (set atomically before it, cleared with its
    outcome): other pollers leave the task alone."""
    callback_token: str | None = None
    expected_render_s: float | None = None
    """``status.expected_render_s`` when the task was created: its ``progress`` estimate."""
    upstream_progress: int | None = None
    """The upstream's own progress figure, where it reports one."""
    upstream_video_url: str | None = None
    """The reseller's own link to the finished video."""
    expires_at: int | None = None
    """Until when ``video_url`` works; None when unknown (the reseller's link)."""
    copy_state: CopyState | None = None
    """Set while (and after) the finished video is copied; None: no copy was tried."""
    stored: StoredVideo | None = None

    @classmethod
    def new(
        cls,
        client: str,
        job: VideoJob,
        *,
        webhook_url: str | None,
        metadata: dict[str, str],
        routing: RoutingOverrides | None = None,
        shard: int | None = None,
        expected_render_s: float | None = None,
    ) -> TaskRecord:
        created = now_s()
        return cls(
            routing=routing,
            expected_render_s=expected_render_s,
            id=new_task_id(shard),
            client=client,
            job=job,
            mode=job.mode,
            model=job.model,
            tier=job.tier,
            duration=job.duration,
            resolution=job.resolution,
            webhook_url=webhook_url,
            metadata=metadata,
            created_at=created,
            updated_at=created,
        )

    @property
    def is_final(self) -> bool:
        return self.status.is_final

    def finish(
        self,
        status: TaskStatus,
        *,
        video_url: str | None = None,
        error: TaskError | None = None,
    ) -> None:
        """Move to a final state; the job is no longer needed."""
        at = now_s()
        self.status = status
        self.video_url = video_url
        self.error = error
        self.updated_at = at
        self.completed_at = at
        self.job = None

    def public(self) -> Task:
        # The record was validated when read; building the public view without validating it
        # again keeps lookups cheap (tests check it matches Task's schema).
        return Task.model_construct(
            id=self.id,
            status=self.status,
            progress=progress(
                self.status,
                age_s=time.time() - self.created_at,
                expected_render_s=self.expected_render_s,
                upstream=self.upstream_progress,
            ),
            model=self.model,
            tier=self.tier,
            duration=self.duration,
            resolution=self.resolution,
            seconds=str(self.duration),
            size=self.resolution,
            mode=self.mode,
            provider=self.provider,
            provider_task_id=self.provider_task_id,
            price_usd=self.price_usd,
            video_url=self.video_url,
            expires_at=self.expires_at,
            upstream_video_url=self.upstream_video_url,
            error=self.error,
            metadata=self.metadata,
            attempts=self.attempts,
            created_at=self.created_at,
            updated_at=self.updated_at,
            completed_at=self.completed_at,
        )


def place(record: TaskRecord, placement: Placement) -> None:
    """Apply where a create went to the task: its provider, upstream id, price and status.
    Every path that places a task calls this (a create, a resubmission).

    A create answer that is already final is not applied as final: the task stays open with
    a poll due now, so that its end goes through the one finalize path
    (:class:`gateway.status.Finalizer`: webhook, completed_at, the video URL read from the
    status)."""
    record.provider = placement.candidate.name
    record.provider_task_id = placement.submitted.upstream_id
    record.price_usd = placement.candidate.price_usd
    status = placement.submitted.status
    record.status = TaskStatus.IN_PROGRESS if status.is_final else status
    record.polled_at = None
    record.updated_at = now_s()
