"""Status refresh: one upstream read per task per poll interval, wherever it is asked for.

:class:`Refresher` reads one task's status from its upstream and applies it; lookups, the
background :class:`Poller` and upstream callbacks all go through it, so the rules hold for all:

- at most one upstream status call per task per ``poll_interval_s`` across instances (a Redis
  turn key), and concurrent lookups in one process share that call;
- a final state is reached once (compare-and-set in ``TaskStore.finalize``), which queues the
  webhook in the same step, so two pollers never fire two webhooks;
- a generation that failed for a reason other than content is resubmitted to the next eligible
  provider under the same public id (``status.resubmit_failed`` times; failed generations are
  not billed);
- a task still not final after ``status.deadline_s`` fails with ``error.code`` ``timeout``.

The :class:`Poller` keeps every non-final task on a Redis schedule (a sorted set by due time).
Each instance claims due tasks with a lease; a task whose instance died is due again when the
lease runs out, and another instance takes it over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from gateway.budgets import Budgets
from gateway.config import StatusSettings
from gateway.errors import GatewayError, StoreUnavailable
from gateway.health import Health
from gateway.metrics import Metrics
from gateway.router import Router
from gateway.schemas import Attempt, TaskError
from gateway.store import TaskRecord, TaskStore, now_s
from gateway.strategies import Candidate
from gateway.video_copy import CopyQueue
from gateway.webhooks import new_delivery
from providers.base import TaskStatus, UpstreamStatus
from providers.errors import ProviderError

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


def callback_urls(public_url: str | None, token: str | None) -> Callable[[str], str] | None:
    """``{public_url}/callbacks/{provider}/{token}`` for each provider, when public (the
    older ``/v1/callbacks/…`` still answers, for tasks created before the move)."""
    if public_url is None or token is None:
        return None
    base = public_url.rstrip("/")
    return lambda provider: f"{base}/callbacks/{provider}/{token}"


def next_poll_delay(age_s: float, settings: StatusSettings) -> float:
    """When to ask again about a task ``age_s`` old.

    Early on, every poll interval (quick failures show up early); then half the time left
    until the expected render time, so polls close in on it; past it, a quarter of the time
    overdue. Always between ``poll_interval_s`` and ``max_poll_interval_s``.
    """
    low, high = settings.poll_interval_s, settings.max_poll_interval_s
    if age_s < 10:
        delay = low
    elif age_s < settings.expected_render_s:
        delay = (settings.expected_render_s - age_s) / 2
    else:
        delay = (age_s - settings.expected_render_s) / 4
    return min(high, max(low, delay))


class Refresher:
    def __init__(
        self,
        store: TaskStore,
        router: Router,
        health: Health,
        settings: StatusSettings,
        *,
        webhooks_enabled: bool,
        public_url: str | None = None,
        metrics: Metrics,
        budgets: Budgets,
        copies: CopyQueue | None = None,
    ) -> None:
        self._copies = copies
        self._metrics = metrics
        self._budgets = budgets
        self._public_url = public_url
        self._store = store
        self._router = router
        self._health = health
        self._settings = settings
        self._webhooks_enabled = webhooks_enabled
        self._inflight: dict[str, asyncio.Future[TaskRecord]] = {}

    def due(self, record: TaskRecord) -> bool:
        """Is it time to ask the upstream about this task again?"""
        if record.is_final or record.provider_task_id is None or record.copy_state is not None:
            return False
        if record.polled_at is None:
            return True
        return time.time() - record.polled_at >= self._settings.poll_interval_s

    async def refresh(self, record: TaskRecord) -> TaskRecord:
        """The task as its upstream now sees it. Concurrent callers in this process share one
        refresh; an instance that is not this interval's poller returns ``record`` as stored."""
        running = self._inflight.get(record.id)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[TaskRecord] = asyncio.get_running_loop().create_future()
        self._inflight[record.id] = future
        try:
            refreshed = await self._refresh(record)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: there may be no other waiter
            raise
        else:
            future.set_result(refreshed)
            return refreshed
        finally:
            del self._inflight[record.id]

    async def _refresh(self, record: TaskRecord) -> TaskRecord:
        adapter = self._router.adapter(record.provider or "")
        if adapter is None or record.provider_task_id is None:
            logger.warning("task's provider is not configured", extra={"task_id": record.id})
            return record
        if not await self._store.take_poll_turn(record.id, self._settings.poll_interval_s):
            return record
        record.polled_at = time.time()
        started = time.perf_counter()
        try:
            upstream = await adapter.status(record.provider_task_id)
            seconds = time.perf_counter() - started
            self._metrics.upstream_call(record.provider or "", "status", "ok", seconds)
            # Status reads are the hot path: one line each at DEBUG; failures log at WARNING.
            logger.debug(
                "upstream status read",
                extra={"task_id": record.id, "provider": record.provider, "operation": "status",
                       "outcome": "ok", "upstream_status": upstream.raw_status,
                       "latency_ms": round(seconds * 1000, 1)},
            )  # fmt: skip
        except ProviderError as exc:
            self._metrics.upstream_call(
                record.provider or "", "status", exc.outcome, time.perf_counter() - started
            )
            # A failed read changes nothing: serve what is stored and ask again next interval.
            logger.warning(
                "upstream status failed",
                extra={"task_id": record.id, "provider": record.provider, "outcome": exc.outcome},
            )
            upstream = None
        if upstream is not None and upstream.status is TaskStatus.FAILED:
            resubmitted = await self._resubmit(record, upstream)
            if resubmitted is not None:
                return resubmitted
        if upstream is not None:
            _apply(record, upstream)
        if self._copies is not None and self._copies.wants(record):
            return await self._copies.begin(record)  # completed once its video is stored
        if not record.is_final and time.time() - record.created_at > self._settings.deadline_s:
            record.finish(TaskStatus.FAILED, error=TaskError(
                code="timeout", message="the task did not finish before the deadline"))  # fmt: skip
        return await self._store_outcome(record)

    async def finalize(self, record: TaskRecord) -> TaskRecord:
        """Store a final ``record`` (queues its webhook, counts it) unless the task is final
        already; the task as stored."""
        return await self._store_outcome(record)

    async def _store_outcome(self, record: TaskRecord) -> TaskRecord:
        if not record.is_final:
            if not await self._store.save(record):
                return await self._store.get(record.id) or record  # someone finished it
            return record
        webhook = None
        if record.webhook_url and self._webhooks_enabled:
            delivery = new_delivery(record, record.webhook_url)
            webhook = (delivery.id, delivery.model_dump_json(), time.time())
        if await self._store.finalize(record, webhook):
            await self._budgets.finalized(record)
            self._metrics.task_finished(
                record.provider or "",
                record.status.value,
                (record.completed_at or now_s()) - record.created_at,
            )
            logger.info("task final", extra={"task_id": record.id, "provider": record.provider,
                                             "status": record.status.value})  # fmt: skip
            if record.provider and not _refused_content(record):
                await self._health.record_task(
                    record.provider, completed=record.status is TaskStatus.COMPLETED
                )
            return record
        return await self._store.get(record.id) or record

    async def _resubmit(self, record: TaskRecord, upstream: UpstreamStatus) -> TaskRecord | None:
        """Send a failed generation to another provider under the same id; None when not."""
        if (
            upstream.error_code == "content_rejected"
            or record.job is None
            or record.resubmits >= self._settings.resubmit_failed
            or not await self._store.take_resubmission(record.id, record.resubmits + 1)
        ):
            return None
        failed = Attempt(provider=record.provider or "", outcome="generation_failed",
                         message=(upstream.error_message or "")[:300] or None)  # fmt: skip
        tried = {a.provider for a in record.attempts if a.outcome == "generation_failed"}
        tried.add(failed.provider)
        try:
            candidates = [
                c for c in await self._router.plan(record.job, record.routing)
                if c.name not in tried
            ]  # fmt: skip
        except GatewayError:
            candidates = []
        if not candidates:
            return None
        history = [*record.attempts, failed]
        ceiling = max(c.price_usd for c in candidates)

        async def before_attempt(candidate: Candidate, done: Sequence[Attempt]) -> None:
            # The failed generation is not billed: its reservation moves to this price.
            await self._budgets.reserve(record, candidate.price_usd, ceiling)
            record.attempts = [*history, *done, Attempt(provider=candidate.name, outcome="pending")]
            await self._store.save(record)

        try:
            placement = await self._router.submit(
                candidates, record.job, before_attempt,
                callback_urls(self._public_url, record.callback_token),
            )  # fmt: skip
        except GatewayError as exc:
            record.attempts = [*history, *(exc.attempts or [])]
            return None
        if record.provider:
            await self._health.record_task(record.provider, completed=False)
        record.provider = placement.candidate.name
        record.provider_task_id = placement.submitted.upstream_id
        record.price_usd = placement.candidate.price_usd
        record.status = placement.submitted.status
        record.attempts = [*history, *placement.attempts]
        record.resubmits += 1
        self._metrics.task_created(record.provider, record.tier, record.resolution)
        record.polled_at = None
        record.updated_at = now_s()
        await self._store.save(record)
        await self._store.schedule(record.id, time.time() + self._settings.poll_interval_s)
        logger.info(
            "failed generation resubmitted",
            extra={"task_id": record.id, "provider": record.provider, "failed": failed.provider},
        )
        return record


def _apply(record: TaskRecord, upstream: UpstreamStatus) -> None:
    if upstream.progress is not None:
        record.upstream_progress = upstream.progress
    if upstream.status is TaskStatus.COMPLETED:
        record.upstream_video_url = upstream.video_url
        record.finish(TaskStatus.COMPLETED, video_url=upstream.video_url)
    elif upstream.status is TaskStatus.FAILED:
        record.finish(TaskStatus.FAILED, error=TaskError(
            code=upstream.error_code or "generation_failed",
            message=upstream.error_message or "the upstream reported a failure",
        ))  # fmt: skip
    elif upstream.status != record.status:
        record.status = upstream.status
        record.updated_at = now_s()


def _refused_content(record: TaskRecord) -> bool:
    """A content refusal says nothing about the reseller's health."""
    return record.error is not None and record.error.code == "content_rejected"


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
        budgets: Budgets,
    ) -> None:
        self._metrics = metrics
        self._budgets = budgets
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
        """Stop claiming, cancel the polls in flight and hand their leases back: those tasks
        are due again now, for another instance, instead of when the leases would run out."""
        self._stop.set()
        unfinished = dict(self._running)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        try:
            await self._store.hand_back(list(unfinished.values()), time.time())
        except StoreUnavailable:
            self._metrics.redis_error("polling")
            logger.warning(
                "leases not handed back: redis unreachable; they run out by themselves",
                extra={"tasks": len(unfinished)},
            )

    async def _poll(self, task_id: str) -> None:
        record = await self._store.get(task_id)
        if record is None or record.is_final or record.copy_state is not None:
            await self._store.unschedule(task_id)  # a task being copied is the copier's
            return
        age = time.time() - record.created_at
        if record.provider_task_id is None:
            await self._unfinished_create(record, age)
            return
        limit = self._limits.setdefault(
            record.provider or "", asyncio.Semaphore(self._settings.poll_concurrency)
        )
        async with limit:
            record = await self._refresher.refresh(record)
        if not record.is_final:
            age = time.time() - record.created_at
            await self._store.schedule(task_id, time.time() + next_poll_delay(age, self._settings))

    async def _unfinished_create(self, record: TaskRecord, age: float) -> None:
        """A task still without an upstream id: its create is running, or its instance died
        while submitting. Once no create could still be running, record what is known."""
        if age < self._create_timeout_s:
            await self._store.schedule(record.id, record.created_at + self._create_timeout_s)
            return
        last = record.attempts[-1] if record.attempts else None
        record.finish(TaskStatus.FAILED, error=TaskError(
            code="submit_interrupted",
            message=(f"the gateway stopped while submitting to {last.provider}; it may hold a "
                     "task there" if last else "the gateway stopped before submitting"),
        ))  # fmt: skip
        logger.error(
            "create interrupted; reconcile with the upstream",
            extra={"task_id": record.id, "provider": last.provider if last else None},
        )
        if await self._store.finalize(record):
            await self._budgets.finalized(record)  # keeps the reservation: it may be billed
