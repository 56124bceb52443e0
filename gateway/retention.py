"""Retention: stored videos are deleted ``storage.retention_days`` after they were copied.

Every object is put on a deletion schedule (a Redis sorted set of object keys by deletion time)
before its first byte is written, so a copy cut short, given up or retried is removed too.
:class:`Retention` runs on every instance and claims due deletions with a lease (as the poller
claims polls): one instance deletes each object; a failed deletion is tried again when its lease
runs out. Object stores can do the same with lifecycle rules (README "Stored videos"); the
sweeper runs anyway, and deleting an object that a rule removed already is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics
from gateway.storage import VideoStore, VideoStoreError
from gateway.store import TaskStore

logger = logging.getLogger(__name__)

SWEEP_EVERY_S = 5.0
BATCH = 32
LEASE_S = 60.0


class Retention:
    """The deletion schedule of stored videos, and the sweeper that works through it."""

    def __init__(self, store: TaskStore, videos: VideoStore, *, metrics: Metrics) -> None:
        self._store = store
        self._videos = videos
        self._metrics = metrics
        self._stop = asyncio.Event()

    async def schedule(self, key: str, at: float) -> None:
        """Delete ``key`` at ``at`` (Unix seconds); scheduling again moves the time."""
        await self._store.schedule_on("video_delete", key, at)

    async def delete_now(self, key: str) -> bool:
        """Delete ``key`` and take it off the schedule. False (logged, counted) when the store
        refused: the schedule keeps it, and the sweeper tries again at its time."""
        try:
            await self._videos.delete(key)
        except VideoStoreError as exc:
            self._metrics.video_deletion("failed")
            logger.warning("stored video not deleted", extra={"key": key, "error": str(exc)})
            return False
        try:
            await self._store.unschedule_from("video_delete", key)
        except StoreUnavailable:
            # Still scheduled: the sweeper deletes it again later (a no-op).
            self._metrics.redis_error("polling")
        self._metrics.video_deletion("deleted")
        return True

    async def sweep(self, now: float | None = None) -> int:
        """Delete every stored video due by ``now``; how many were deleted."""
        due = await self._store.claim_due(
            "video_delete", time.time() if now is None else now, LEASE_S, BATCH
        )
        deleted = 0
        for key in due:
            deleted += await self.delete_now(key)
        if due:
            logger.info("stored videos deleted by retention", extra={"count": deleted})
        return deleted

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                while await self.sweep() == BATCH:
                    pass
            except StoreUnavailable:
                self._metrics.redis_error("polling")
                logger.warning("video retention schedule unreachable; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), SWEEP_EVERY_S)

    async def stop(self) -> None:
        self._stop.set()
