"""Copying a finished video into the gateway's storage before the task is reported completed.

When an upstream reports a task completed, the status refresh hands it to :class:`CopyQueue`
instead of finalizing it: the task stays ``in_progress`` (no more upstream reads), its reseller
link is kept as ``upstream_video_url``, and it is put on the copy schedule (a Redis sorted set).
:class:`VideoCopier` runs on every instance and claims due copies with a lease, as the poller
claims polls: one instance copies a task at a time; a copier that dies (SIGKILL) stops
extending its lease, and another instance takes the copy over when it runs out.

A copy streams the video from the reseller (:mod:`gateway.video_source`) into the store
(:mod:`gateway.storage`), then finalizes the task with ``video_url`` pointing at the gateway
(``/v1/videos/{id}/content``), ``expires_at`` = the copy's deletion time. A failure that may
pass (store down, reseller 5xx, a truncated download) is retried with backoff; one that will
not (404, expired link, not a video, over ``storage.max_bytes``, an unsafe address), or reaching
``storage.copy_deadline_s``, completes the task with the reseller's link instead (logged and
counted ``gave_up``). Finalizing goes through the same step as every other final state, so the
webhook fires once, after the copy, with the stable link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from gateway.config import StorageSettings
from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics
from gateway.retention import Retention
from gateway.storage import VideoStore, VideoStoreError
from gateway.store import TaskStore
from gateway.tasks import CopyState, StoredVideo, TaskRecord, now_s
from gateway.video_source import VideoRejected, VideoSource, VideoUnavailable
from providers.base import TaskStatus

logger = logging.getLogger(__name__)

TICK_S = 0.25
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 60.0
ERROR_CHARS = 300

Finalize = Callable[[TaskRecord], Awaitable[TaskRecord]]
"""The one step that makes a task final (queues its webhook, counts it)."""


def content_link(public_url: str | None, task_id: str) -> str:
    """The gateway's own link to a stored video (a ``/v1/`` path without ``public_url``)."""
    path = f"/v1/videos/{task_id}/content"
    return f"{public_url.rstrip('/')}{path}" if public_url else path


def object_key(task_id: str) -> str:
    """Where a task's stored video lives in the store."""
    return f"{task_id}.video"


def retry_delay(attempts: int) -> float:
    """Seconds before copy attempt ``attempts + 1``: 1, 2, 4 … up to a minute."""
    return float(min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** max(attempts - 1, 0)))


class CopyQueue:
    """The hook in the status refresh: a completed task whose video must be copied first."""

    def __init__(self, store: TaskStore, wake: asyncio.Event | None = None) -> None:
        self._store = store
        self._wake = wake

    @staticmethod
    def wants(record: TaskRecord) -> bool:
        """Has the upstream just reported this task completed, with a link to copy?"""
        return (
            record.status is TaskStatus.COMPLETED
            and record.copy_state is None
            and record.video_url is not None
        )

    async def begin(self, record: TaskRecord) -> TaskRecord:
        """Keep the task ``in_progress`` and schedule its copy now; the stored task when it
        is final already or its copy has begun (another instance read the completion first:
        scheduling the copy again would download the video twice)."""
        record.upstream_video_url = record.video_url
        record.video_url = None
        record.completed_at = None
        record.status = TaskStatus.IN_PROGRESS
        record.copy_state = CopyState(started_at=time.time())
        if not await self._store.begin_copy(record, time.time(), first=True):
            return await self._store.get(record.id) or record
        if self._wake is not None:
            self._wake.set()
        logger.info("video copy scheduled", extra={"task_id": record.id})
        return record


class VideoCopier:
    """Claims due copies (a lease per task), runs them, finalizes their tasks."""

    def __init__(
        self,
        store: TaskStore,
        videos: VideoStore,
        source: VideoSource,
        retention: Retention,
        settings: StorageSettings,
        *,
        finalize: Finalize,
        public_url: str | None,
        metrics: Metrics,
        wake: asyncio.Event | None = None,
    ) -> None:
        self._store = store
        self._videos = videos
        self._source = source
        self._retention = retention
        self._settings = settings
        self._finalize = finalize
        self._public_url = public_url
        self._metrics = metrics
        self._wake = wake or asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Copy until :meth:`stop`; a Redis outage is logged and counted, and the loop goes on."""
        while not self._stop.is_set():
            room = self._settings.copy_concurrency - len(self._running)
            due: list[str] = []
            if room > 0:
                try:
                    due = await self._store.claim_due(
                        "video_copy", time.time(), self._settings.copy_lease_s, room
                    )
                except StoreUnavailable:
                    self._metrics.redis_error("polling")
                    logger.warning("video copy schedule unreachable; retrying")
            for task_id in due:
                task = asyncio.create_task(self._copy(task_id))
                self._running.add(task)
                task.add_done_callback(self._finished)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error("video copy failed", exc_info=task.exception())

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        await self._source.aclose()

    async def _copy(self, task_id: str) -> None:
        record = await self._store.get(task_id)
        if record is None or record.is_final or record.copy_state is None:
            await self._store.unschedule_from("video_copy", task_id)
            return
        state = record.copy_state
        if time.time() >= state.started_at + self._settings.copy_deadline_s:
            await self._give_up(record, f"not copied within storage.copy_deadline_s; last error: "
                                        f"{state.last_error or 'none'}")  # fmt: skip
            return
        started = time.perf_counter()
        left_s = state.started_at + self._settings.copy_deadline_s - time.time()
        deadline = asyncio.timeout(left_s)
        try:
            async with self._leased(task_id), deadline:
                stored = await self._transfer(record)
        except TimeoutError:
            if not deadline.expired():
                raise
            await self._give_up(record, "still copying at storage.copy_deadline_s")
            return
        except VideoRejected as exc:
            await self._give_up(record, str(exc))
            return
        except (VideoUnavailable, VideoStoreError, StoreUnavailable) as exc:
            await self._retry(record, str(exc))
            return
        self._metrics.video_stored(stored.size, time.perf_counter() - started)
        await self._finish(record, stored)

    @contextlib.asynccontextmanager
    async def _leased(self, task_id: str) -> AsyncIterator[None]:
        """Keep this instance's claim on the copy while it runs."""
        lease_s = self._settings.copy_lease_s

        async def extend() -> None:
            while True:
                await asyncio.sleep(lease_s / 3)
                try:
                    await self._store.extend_lease("video_copy", task_id, time.time() + lease_s)
                except StoreUnavailable:
                    self._metrics.redis_error("polling")
                    logger.warning("video copy lease not extended", extra={"task_id": task_id})

        keeper = asyncio.create_task(extend())
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _transfer(self, record: TaskRecord) -> StoredVideo:
        """Download the reseller's video into the store, scheduled for deletion first (so a
        copy cut short is removed too)."""
        url = record.upstream_video_url or ""
        key = object_key(record.id)
        retention_end = now_s() + int(self._settings.retention_days * 86400)
        delete_at = min(retention_end, int(self._store.expires_at(record)))
        await self._retention.schedule(key, delete_at)
        async with self._source.open(url) as download:
            try:
                await self._videos.put(key, download.chunks())
            except VideoStoreError:
                if download.failure is not None:
                    raise download.failure from None
                raise
            if download.failure is not None:
                raise download.failure
        return StoredVideo(
            key=key, size=download.size, sha256=download.sha256,
            content_type=download.content_type, stored_at=now_s(), delete_at=delete_at,
        )  # fmt: skip

    async def _finish(self, record: TaskRecord, stored: StoredVideo) -> None:
        record.stored = stored
        record.expires_at = stored.delete_at
        record.finish(TaskStatus.COMPLETED, video_url=content_link(self._public_url, record.id))
        logger.info(
            "video stored",
            extra={"task_id": record.id, "bytes": stored.size, "sha256": stored.sha256},
        )
        await self._finalize(record)

    async def _give_up(self, record: TaskRecord, reason: str) -> None:
        """Complete the task with the reseller's link; nothing of it stays stored."""
        state = record.copy_state or CopyState(started_at=time.time())
        state.gave_up = reason[:ERROR_CHARS]
        record.copy_state = state
        record.expires_at = None
        record.finish(TaskStatus.COMPLETED, video_url=record.upstream_video_url)
        self._metrics.video_copy("gave_up")
        logger.warning(
            "video not copied; the task keeps the reseller's link",
            extra={"task_id": record.id, "provider": record.provider, "reason": state.gave_up},
        )
        await self._retention.delete_now(object_key(record.id))
        await self._finalize(record)

    async def _retry(self, record: TaskRecord, error: str) -> None:
        state = record.copy_state or CopyState(started_at=time.time())
        state.attempts += 1
        state.last_error = error[:ERROR_CHARS]
        record.copy_state = state
        deadline = state.started_at + self._settings.copy_deadline_s
        at = min(time.time() + retry_delay(state.attempts), deadline)
        self._metrics.video_copy("retried")
        logger.warning(
            "video copy failed; retrying",
            extra={"task_id": record.id, "attempt": state.attempts, "error": state.last_error,
                   "retry_in_s": round(at - time.time(), 1)},
        )  # fmt: skip
        try:
            await self._store.begin_copy(record, at)
        except StoreUnavailable:
            # The lease runs out and the copy is claimed again: nothing is lost.
            self._metrics.redis_error("polling")
            logger.warning("video copy retry not recorded", extra={"task_id": record.id})
