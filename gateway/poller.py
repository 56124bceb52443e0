"""The background poller: the loop that refreshes every unfinished task, spread over instances.

Every non-final task is on a Redis schedule (a sorted set by due time, sharded). Each instance
claims due tasks with a lease and refreshes them through :class:`gateway.status.Refresher` (the
only place that reads a status, resubmits or finalizes); a task whose instance died is due again
when the lease runs out, and another instance takes it over. A task still without an upstream id
once no create could be running is ended by :func:`gateway.status.end_interrupted_create`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from gateway.config import StatusSettings
from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics
from gateway.status import Finalizer, Refresher, end_interrupted_create, next_poll_delay
from gateway.store import TaskStore
from gateway.tasks import TaskRecord

logger = logging.getLogger(__name__)

IDLE_TICK_S = 0.25
"""How long the poller sleeps after finding nothing due."""
BUSY_TICK_S = 0.02
"""How soon it looks again after finding work."""
CLAIM = 16
"""Polls started per tick at most. Started together, polls share the event loop with the
requests being served: 64 at once (the old batch) held a create up to ~140 ms at its p99 in the
200 RPS benchmark; 16 every 20 ms keeps the bursts short and still starts 800 polls/s."""
IN_FLIGHT = 64
TURN_SLACK = 0.1
"""A poll turn taken with the task's read is renewed if the upstream read starts later than
this fraction of the poll interval after it (the poll waited for a provider slot)."""


class Poller:
    """Refreshes every non-final task in the background, spread over all instances."""

    def __init__(
        self,
        store: TaskStore,
        refresher: Refresher,
        settings: StatusSettings,
        *,
        create_timeout_s: float,
        lease_s: float,
        metrics: Metrics,
        finalizer: Finalizer,
    ) -> None:
        self._metrics = metrics
        self._finalizer = finalizer
        self._store = store
        self._refresher = refresher
        self._settings = settings
        self._create_timeout_s = create_timeout_s
        self._lease_s = lease_s
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._running: dict[asyncio.Task[None], str] = {}
        """Each poll in flight → the task id it claimed."""
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Poll until :meth:`stop`; errors are logged and the loop goes on."""
        while not self._stop.is_set():
            room = min(CLAIM, IN_FLIGHT - len(self._running))
            due: list[str] = []
            if room > 0:
                try:
                    due = await self._store.claim_due("poll", time.time(), self._lease_s,
                                                      room)  # fmt: skip
                except StoreUnavailable:
                    self._metrics.redis_error("polling")
                    logger.warning("poll schedule unreachable; retrying")
            for task_id in due:
                task = asyncio.create_task(self._poll(task_id))
                self._running[task] = task_id
                task.add_done_callback(self._finished)
            tick = BUSY_TICK_S if due or room <= 0 else IDLE_TICK_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), tick)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background poll failed", exc_info=task.exception())

    async def stop(self) -> None:
        """Stop claiming work. Resubmissions in flight (a paid create whose answer must be
        recorded) finish, for at most the longest a create can take; the other polls are
        cancelled and their leases handed back: those tasks are due again now, for another
        instance, instead of when the leases would run out."""
        self._stop.set()
        await self._refresher.stop(self._create_timeout_s)
        unfinished = {task: task_id for task, task_id in self._running.items() if not task.done()}
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        if not unfinished:
            return
        try:
            await self._store.hand_back(list(unfinished.values()), time.time())
        except StoreUnavailable:
            self._metrics.redis_error("polling")
            logger.warning(
                "leases not handed back: redis unreachable; they run out by themselves",
                extra={"tasks": len(unfinished)},
            )

    async def _poll(self, task_id: str) -> None:
        try:
            await self._poll_once(task_id)
        except StoreUnavailable:
            # A Redis blip: counted (by the store) and logged; the task is due again soon rather
            # than when its lease runs out (if Redis is still away, the lease brings it back).
            logger.warning("poll interrupted by Redis; retrying soon", extra={"task_id": task_id})
            with contextlib.suppress(StoreUnavailable):
                await self._store.schedule(task_id, time.time() + self._settings.poll_interval_s)

    async def _poll_once(self, task_id: str) -> None:
        interval_s = self._settings.poll_interval_s
        record, turn = await self._store.read_for_poll(task_id, interval_s)
        read_at = time.monotonic()
        if record is None or record.is_final or record.copy_state is not None:
            await self._store.unschedule(task_id)  # a task being copied is the copier's
            if record is not None and record.is_final:  # its budget settle was refused
                await self._finalizer.settle(record)
            return
        age = time.time() - record.created_at
        if record.provider_task_id is None:
            await self._unfinished_create(record, age)
            return
        limit = self._limits.setdefault(
            record.provider or "", asyncio.Semaphore(self._settings.poll_concurrency)
        )
        async with limit:
            if time.monotonic() - read_at > interval_s * TURN_SLACK:
                # The poll waited for a slot: the turn it took starts again now (the next
                # reader still waits a whole interval after this read), or is taken if free.
                turn = await self._store.renew_poll_turn(task_id, interval_s)
            record = await self._refresher.refresh(record, may_resubmit=True, turn=turn)
        if not record.is_final:
            age = time.time() - record.created_at
            await self._store.schedule(task_id, time.time() + next_poll_delay(age, self._settings))

    async def _unfinished_create(self, record: TaskRecord, age: float) -> None:
        """A task still without an upstream id: its create is running, or its instance died
        while submitting. Once no create could still be running, record what is known."""
        if age < self._create_timeout_s:
            await self._store.schedule(record.id, record.created_at + self._create_timeout_s)
            return
        await end_interrupted_create(record, self._finalizer)
