"""The status flow: how a placed task becomes final, in one place.

- :class:`Finalizer` is the one way a task becomes final (a status read, a resubmission's end,
  an interrupted create, a refused create, a stored video): a compare-and-set in
  ``TaskStore.finalize`` that queues the webhook in the same step, then the budget, the metrics,
  the provider's health and one log line, exactly once.
- :class:`Refresher` reads one task's status from its upstream and applies it; lookups, the
  background :class:`~gateway.poller.Poller` and upstream callbacks all go through it, so the
  rules hold for all:

  - at most one upstream status call per task per ``poll_interval_s`` across instances (a
    Redis turn key), and concurrent lookups in one process share that call;
  - a generation that failed for a reason other than content is resubmitted to the next
    eligible provider under the same public id (``status.resubmit_failed`` times; failed
    generations are not billed), by the background poller only, after marking the task
    ``resubmitting``; a resubmission without an answer ends ``upstream_outcome_unknown``;
  - a task still not final after ``status.deadline_s`` fails with ``error.code`` ``timeout``.
- :func:`end_interrupted_create`: a create whose instance died before recording its outcome.

Where a task is placed (:func:`gateway.tasks.place`) and how it is stored (:mod:`gateway.store`)
live in their own modules; the loop that polls tasks in the background is
:mod:`gateway.poller`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from gateway.budgets import Budgets
from gateway.config import StatusSettings
from gateway.errors import GatewayError, StoreUnavailable, UpstreamOutcomeUnknown
from gateway.health import Health
from gateway.metrics import Metrics
from gateway.router import Router
from gateway.schemas import Attempt, TaskError
from gateway.store import TaskStore
from gateway.strategies import Candidate
from gateway.tasks import TaskRecord, now_s, place
from gateway.video_copy import CopyQueue
from gateway.webhooks import new_delivery
from providers.base import Provider, TaskStatus, UpstreamStatus, VideoJob
from providers.errors import ProviderError

logger = logging.getLogger(__name__)

SETTLE_RETRY_S = 5.0
"""How soon the background poller tries again a budget settle Redis refused."""


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


class Finalizer:
    """The one way a task becomes final, whoever ends it."""

    def __init__(
        self,
        store: TaskStore,
        health: Health,
        *,
        budgets: Budgets,
        metrics: Metrics,
        webhooks_enabled: bool,
    ) -> None:
        self._store = store
        self._health = health
        self._budgets = budgets
        self._metrics = metrics
        self._webhooks_enabled = webhooks_enabled

    async def finalize(self, record: TaskRecord, *, announce: bool = True) -> TaskRecord:
        """Make the final ``record`` the task's end, unless the task is final already; the
        task as stored. The call that ends it (and only that one) queues the webhook (with
        ``announce``: a refused create's client has its answer already), settles the budget,
        counts the task, logs it and tells the provider's health. Raises StoreUnavailable."""
        webhook = None
        if announce and record.webhook_url and self._webhooks_enabled:
            delivery = new_delivery(record, record.webhook_url)
            webhook = (delivery.id, delivery.model_dump_json(), time.time())
        if not await self._store.finalize(record, webhook):
            return await self._store.get(record.id) or record  # someone else ended it
        if not await self._budgets.finalized(record):
            await self._settle_later(record)
        logger.info("task final", extra={"task_id": record.id, "provider": record.provider,
                                         "status": record.status.value})  # fmt: skip
        if record.provider:  # placed with an upstream (a refused create never was)
            self._metrics.task_finished(
                record.provider,
                record.status.value,
                (record.completed_at or now_s()) - record.created_at,
            )
            if not _refused_content(record):
                await self._health.record_task(
                    record.provider, completed=record.status is TaskStatus.COMPLETED
                )
        return record

    async def settle(self, record: TaskRecord) -> None:
        """Settle the final ``record``'s budget reservation again: the poller calls this for a
        final task it finds on its schedule, where :meth:`finalize` put it when Redis refused
        the settle. A no-op for a reservation settled already."""
        if not await self._budgets.settle(record):
            await self._settle_later(record)

    async def _settle_later(self, record: TaskRecord) -> None:
        """Put the final task back on the poll schedule: the background poller settles it (any
        instance, even after this one dies). The task's shard is often up while the client's
        budget slot is not (a Cluster primary failing over)."""
        try:
            await self._store.schedule(record.id, time.time() + SETTLE_RETRY_S)
        except StoreUnavailable:  # counted by the store
            logger.exception(
                "reservation held: its settle could not be rescheduled either",
                extra={"task_id": record.id, "client": record.client},
            )


class Refresher:
    def __init__(
        self,
        store: TaskStore,
        router: Router,
        finalizer: Finalizer,
        settings: StatusSettings,
        *,
        health: Health,
        metrics: Metrics,
        budgets: Budgets,
        public_url: str | None = None,
        copies: CopyQueue | None = None,
        create_timeout_s: float = 130.0,
    ) -> None:
        self._finalizer = finalizer
        self._copies = copies
        self._metrics = metrics
        self._budgets = budgets
        self._public_url = public_url
        self._store = store
        self._router = router
        self._health = health
        self._settings = settings
        self._create_timeout_s = create_timeout_s
        self._inflight: dict[str, asyncio.Task[TaskRecord]] = {}
        self._paying: set[str] = set()
        """Tasks whose refresh is resubmitting them: a paid create may be in flight."""

    async def stop(self, timeout_s: float) -> None:
        """At shutdown: cancel the refreshes in flight that are only reading a status, and let
        those resubmitting a task (a paid create) finish, for at most ``timeout_s``."""
        paying = [t for task_id, t in self._inflight.items() if task_id in self._paying]
        for task_id, task in list(self._inflight.items()):
            if task_id not in self._paying:
                task.cancel()
        if paying:
            await asyncio.wait(paying, timeout=timeout_s)

    def due(self, record: TaskRecord) -> bool:
        """Is it time to ask the upstream about this task again? (Never while a resubmission
        is in flight, the poller that resubmits owns the task until it is placed; nor while its
        video is being copied.)"""
        if (
            record.is_final
            or record.provider_task_id is None
            or record.resubmitting
            or record.copy_state is not None
        ):
            return False
        if record.polled_at is None:
            return True
        return time.time() - record.polled_at >= self._settings.poll_interval_s

    async def refresh(
        self, record: TaskRecord, *, may_resubmit: bool = False, turn: bool | None = None
    ) -> TaskRecord:
        """The task as its upstream now sees it. Concurrent callers in this process share one
        refresh; an instance that is not this interval's poller returns ``record`` as stored.
        Only the background poller passes ``may_resubmit``: a lookup never sends a create.
        ``turn``: the poll turn, taken by the caller already (True) or held by another reader
        (False); None: taken here (:meth:`TaskStore.take_poll_turn`).

        The refresh runs as its own asyncio task and every caller waits on it shielded: a
        caller that goes away (a client disconnecting) cancels neither the shared read nor what
        follows it (a finalize, a resubmission's paid create)."""
        running = self._inflight.get(record.id)
        if running is None:
            running = asyncio.create_task(
                self._refresh(record, may_resubmit=may_resubmit, turn=turn)
            )
            self._inflight[record.id] = running
            running.add_done_callback(lambda _: self._inflight.pop(record.id, None))
        return await asyncio.shield(running)

    async def _refresh(
        self, record: TaskRecord, *, may_resubmit: bool, turn: bool | None
    ) -> TaskRecord:
        if record.resubmitting:
            return await self._check_resubmission(record)
        adapter = self._router.adapter(record.provider or "")
        upstream = None
        if adapter is None or record.provider_task_id is None:
            # Disabled or removed since: nothing to ask, but the deadline still applies.
            logger.warning("task's provider is not configured", extra={"task_id": record.id})
        elif not await self._poll_turn(record.id, turn):
            return record
        else:
            record.polled_at = time.time()
            upstream = await self._read(adapter, record, record.provider_task_id)
        if upstream is not None and self._resubmittable(record, upstream):
            if may_resubmit:
                return await self._resubmit(record, upstream)
            # Only the background poller resubmits: have it read the task now.
            await self._store.give_back_poll_turn(record.id)
            await self._store.schedule(record.id, time.time())
            upstream = None
        if upstream is not None:
            _apply(record, upstream)
        if self._copies is not None and self._copies.wants(record):
            return await self._copies.begin(record)  # completed once its video is stored
        if not record.is_final and time.time() - record.created_at > self._settings.deadline_s:
            record.finish(TaskStatus.FAILED, error=TaskError(
                code="timeout", message="the task did not finish before the deadline"))  # fmt: skip
        return await self._store_outcome(record)

    async def _poll_turn(self, task_id: str, taken: bool | None) -> bool:
        """Is this refresh the one that reads the upstream this interval?"""
        if taken is not None:
            return taken
        return await self._store.take_poll_turn(task_id, self._settings.poll_interval_s)

    async def _read(
        self, adapter: Provider, record: TaskRecord, upstream_id: str
    ) -> UpstreamStatus | None:
        """One upstream status read, logged and counted; None when it failed."""
        started = time.perf_counter()
        try:
            upstream = await adapter.status(upstream_id)
        except ProviderError as exc:
            self._metrics.upstream_call(
                record.provider or "", "status", exc.outcome, time.perf_counter() - started
            )
            # A failed read changes nothing: serve what is stored and ask again next interval.
            logger.warning(
                "upstream status failed",
                extra={"task_id": record.id, "provider": record.provider, "outcome": exc.outcome},
            )
            return None
        seconds = time.perf_counter() - started
        self._metrics.upstream_call(record.provider or "", "status", "ok", seconds)
        # Status reads are the hot path: one line each at DEBUG; failures log at WARNING.
        logger.debug(
            "upstream status read",
            extra={"task_id": record.id, "provider": record.provider, "operation": "status",
                   "outcome": "ok", "upstream_status": upstream.raw_status,
                   "latency_ms": round(seconds * 1000, 1)},
        )  # fmt: skip
        return upstream

    def _resubmittable(self, record: TaskRecord, upstream: UpstreamStatus) -> bool:
        """A failed generation another provider may be asked to make (resellers do not bill
        failed generations): not a content refusal, and resubmissions left. Only the
        background poller resubmits, so without it a failure stands."""
        return (
            upstream.status is TaskStatus.FAILED
            and upstream.error_code != "content_rejected"
            and record.job is not None
            and record.resubmits < self._settings.resubmit_failed
            and self._settings.background_polling
        )

    async def _store_outcome(self, record: TaskRecord) -> TaskRecord:
        """Save a refreshed task; a final one goes through the :class:`Finalizer`."""
        if record.is_final:
            return await self._finalizer.finalize(record)
        if not await self._store.save(record):
            return await self._store.get(record.id) or record  # finished, or copying
        return record

    async def _check_resubmission(self, record: TaskRecord) -> TaskRecord:
        """A task marked ``resubmitting`` belongs to the instance resubmitting it, unless that
        instance died mid-call: once no create could still be running, the outcome is
        unknown (the provider may hold a task) and the task ends so."""
        if time.time() - record.updated_at < self._create_timeout_s:
            return record
        last = record.attempts[-1].provider if record.attempts else "an upstream"
        record.resubmitting = False
        record.resubmits += 1
        record.finish(TaskStatus.FAILED, error=TaskError(
            code="upstream_outcome_unknown",
            message=f"the gateway stopped while resubmitting to {last}; it may hold (and bill) "
            "a task there",
        ))  # fmt: skip
        self._metrics.resubmission("outcome_unknown")
        logger.error("resubmission interrupted; reconcile with the upstream",
                     extra={"task_id": record.id, "provider": last})  # fmt: skip
        return await self._store_outcome(record)

    async def _resubmit(self, record: TaskRecord, upstream: UpstreamStatus) -> TaskRecord:
        """Send a failed generation to another provider under the same id (see
        :meth:`_resubmit_marked`); shutdown lets it finish (:meth:`stop`)."""
        self._paying.add(record.id)  # before any await: a stop sees it or cancels before it
        try:
            return await self._resubmit_marked(record, upstream)
        finally:
            self._paying.discard(record.id)

    async def _resubmit_marked(self, record: TaskRecord, upstream: UpstreamStatus) -> TaskRecord:
        """The task is marked ``resubmitting`` (atomically, over the placement read) before the
        paid call; an instance that loses that race leaves the task alone."""
        failed = Attempt(provider=record.provider or "", outcome="generation_failed",
                         message=(upstream.error_message or "")[:300] or None)  # fmt: skip
        job = record.job
        candidates = await self._resubmit_candidates(record, failed.provider)
        if job is None or not candidates:
            self._metrics.resubmission("no_candidate")
            _apply(record, upstream)
            return await self._store_outcome(record)
        history = [*record.attempts, failed]
        marked = record.model_copy(deep=True)
        marked.resubmitting = True
        marked.attempts = history
        marked.updated_at = now_s()
        if not await self._store.mark_resubmitting(marked, record.provider_task_id or ""):
            self._metrics.resubmission("lost_race")
            return await self._store.get(record.id) or record
        record = marked
        return await self._place_resubmission(record, job, candidates, history, upstream)

    async def _resubmit_candidates(self, record: TaskRecord, failed: str) -> list[Candidate]:
        if record.job is None:
            return []
        tried = {a.provider for a in record.attempts if a.outcome == "generation_failed"}
        tried.add(failed)
        try:
            planned = await self._router.plan(record.job, record.routing)
        except GatewayError as exc:
            # No provider can take it now (none serves it any more, every circuit open): the
            # failure stands. Counted (no_candidate) and logged.
            logger.warning("no provider to resubmit to",
                           extra={"task_id": record.id, "reason": exc.code})  # fmt: skip
            return []
        return [c for c in planned if c.name not in tried]

    async def _place_resubmission(
        self,
        record: TaskRecord,
        job: VideoJob,
        candidates: Sequence[Candidate],
        history: list[Attempt],
        upstream: UpstreamStatus,
    ) -> TaskRecord:
        ceiling = max(c.price_usd for c in candidates)

        async def before_attempt(candidate: Candidate, done: Sequence[Attempt]) -> None:
            # The failed generation is not billed: its reservation moves to this price.
            await self._budgets.reserve(record, candidate.price_usd, ceiling)
            record.attempts = [*history, *done, Attempt(provider=candidate.name, outcome="pending")]
            await self._store.save(record)

        old_provider = record.provider
        try:
            placement = await self._router.submit(
                candidates, job, before_attempt,
                callback_urls(self._public_url, record.callback_token),
            )  # fmt: skip
        except GatewayError as exc:
            record.attempts = [*history, *(exc.attempts or [])]
            record.resubmitting = False
            record.resubmits += 1
            if isinstance(exc, UpstreamOutcomeUnknown):
                # A bill may exist: the client must learn it, never read a plain failure.
                where = record.attempts[-1].provider
                self._metrics.resubmission("outcome_unknown")
                record.finish(TaskStatus.FAILED, error=TaskError(
                    code="upstream_outcome_unknown",
                    message=f"the resubmission to {where} got no answer; it may have created "
                    "(and bill) a task there",
                ))  # fmt: skip
            else:
                self._metrics.resubmission("refused")
                _apply(record, upstream)  # the generation's failure stands
            return await self._store_outcome(record)
        if old_provider:
            await self._health.record_task(old_provider, completed=False)
        record.attempts = [*history, *placement.attempts]
        record.resubmitting = False
        record.resubmits += 1
        place(record, placement)
        self._metrics.task_created(placement.candidate.name, record.tier, record.resolution)
        self._metrics.resubmission("resubmitted")
        await self._record_placed(record)
        logger.info(
            "failed generation resubmitted",
            extra={"task_id": record.id, "provider": record.provider, "failed": old_provider},
        )
        return record

    async def _record_placed(self, record: TaskRecord) -> None:
        """Save a resubmission's placement. A refusal is never ignored: the new upstream task
        is then mapped to no public id (logged critical and counted for reconciliation)."""
        record.polled_at = None
        if not await self._store.save(record):
            self._metrics.unrecorded_task(record.provider or "")
            logger.critical(
                "resubmitted task not recorded: the task had ended; reconcile",
                extra={"task_id": record.id, "provider": record.provider,
                       "provider_task_id": record.provider_task_id},
            )  # fmt: skip
            return
        await self._store.schedule(record.id, time.time() + self._settings.poll_interval_s)


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


async def end_interrupted_create(record: TaskRecord, finalizer: Finalizer) -> TaskRecord:
    """End a task whose create never recorded its outcome (its instance died, or could not
    write the answer), once no create could still be running. The pending attempt written
    before the call names the provider that may hold (and bill) a task: the outcome is
    ``upstream_outcome_unknown``, never a plain failure, and the budget keeps the reservation."""
    last = record.attempts[-1] if record.attempts else None
    if last is None:
        error = TaskError(
            code="submit_interrupted",
            message="the gateway stopped before submitting; nothing was sent",
        )
    else:
        error = TaskError(
            code="upstream_outcome_unknown",
            message=f"the gateway stopped while submitting to {last.provider}; it may have "
            "created (and bill) a task there",
        )
    record.finish(TaskStatus.FAILED, error=error)
    logger.error(
        "create interrupted; reconcile with the upstream",
        extra={"task_id": record.id, "provider": last.provider if last else None},
    )
    return await finalizer.finalize(record)
