"""Deleted tasks leave every instance's memory of final answers (:mod:`gateway.cache`).

Each instance (each worker process) keeps final tasks' answers in memory and serves them without
Redis. A ``DELETE`` on one instance must make the task ``404`` on all of them, so the deleting
instance publishes the id on a Redis pub/sub channel and every instance's
:class:`Invalidations` loop evicts it. Pub/sub delivers only to connected subscribers, so the
loop forgets the whole cache whenever it (re)subscribes or loses its connection: a deletion it
may have missed can then not be answered from memory. A lookup racing a deletion cannot put a
stale answer back either: the cache refuses an answer read before the latest eviction
(``FinalTasks.put(..., epoch=)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.cache import FinalTasks
from gateway.metrics import Metrics
from gateway.redis_client import REDIS_FAILURES, RedisClient
from gateway.store import Keys

logger = logging.getLogger(__name__)

RECONNECT_S = 1.0
WAIT_S = 1.0
"""How long one wait for a message lasts (:meth:`Invalidations.stop` does not wait for it: it
cancels the listener)."""


class Invalidations:
    def __init__(self, redis: RedisClient, final: FinalTasks, *, metrics: Metrics) -> None:
        self._redis = redis
        self._final = final
        self._metrics = metrics
        self._stop = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    async def publish(self, task_id: str) -> None:
        """Tell every instance that ``task_id`` is gone. The caller evicts its own copy; if
        Redis cannot take the message, the others' subscriptions are broken too, and they
        forget everything when they resubscribe."""
        try:
            await self._redis.publish(Keys.DELETED_TASKS, task_id)
        except REDIS_FAILURES:
            self._metrics.redis_error("invalidation")
            logger.warning("task deletion not published", extra={"task_id": task_id})

    async def run(self) -> None:
        """Listen until :meth:`stop`; connection errors are logged, counted and retried."""
        self._listener = asyncio.current_task()
        while not self._stop.is_set():
            try:
                await self._listen()
            except REDIS_FAILURES as exc:
                self._final.clear()
                self._metrics.redis_error("invalidation")
                logger.warning("deletion channel lost; retrying", extra={"error": repr(exc)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), RECONNECT_S)

    async def _listen(self) -> None:
        # A Cluster client learns the slot map on its first command, and its pub/sub needs
        # that map: without this, a subscription made first fails (KeyError, not RedisError).
        await self._redis.ping()
        async with self._redis.pubsub() as pubsub:
            await pubsub.subscribe(Keys.DELETED_TASKS)
            while not self._stop.is_set():
                message = await pubsub.get_message(timeout=WAIT_S)
                if message is None:
                    continue
                if message["type"] == "subscribe":  # the first time, and after a reconnect
                    self._final.clear()
                elif message["type"] == "message":
                    data = message["data"]
                    self._final.evict(data.decode() if isinstance(data, bytes) else str(data))

    async def stop(self) -> None:
        """Stop listening now: the listener is cancelled rather than left to finish its wait
        for a message (up to :data:`WAIT_S`, which every shutdown used to take)."""
        self._stop.set()
        if self._listener is not None and self._listener is not asyncio.current_task():
            self._listener.cancel()
