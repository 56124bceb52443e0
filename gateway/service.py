"""The video service: what ``POST /v1/videos`` and ``GET /v1/videos/{id}`` do.

Create: check the request against what is configured → write the task (refused if Redis is
down, before any upstream call) → record each attempt before it is made → route → save the
mapping and put the task on the poll schedule.
Look up: read the task; if it is not final and its poll interval has passed, refresh it
through the :class:`~gateway.status.Refresher` (one upstream read per interval).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.budgets import Budgets
from gateway.cache import FinalTask, FinalTasks
from gateway.config import WebhookSettings
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    StoreUnavailable,
    UpstreamOutcomeUnknown,
)
from gateway.idempotency import IdempotentCreates, Outcome
from gateway.metrics import Metrics
from gateway.router import Router
from gateway.schemas import Attempt, CreateVideoRequest, Task, TaskError
from gateway.shards import new_token, shard_of
from gateway.status import Finalizer, Refresher, callback_urls
from gateway.store import Keys, TaskStore
from gateway.strategies import Candidate
from gateway.tasks import TASK_ID, TaskRecord, place
from gateway.webhooks import refusal
from providers.base import TaskStatus, VideoJob

logger = logging.getLogger(__name__)

ACCEPT_MARGIN_S = 5.0
"""The background accept write stops this long before the poller may take the create for
interrupted (``create_timeout_s`` after the task's creation)."""
AcceptOutcome = Literal["saved", "final", "unwritten"]
REFUSAL_RETRY_S = 60.0
"""How long the trace of a refused create is retried during a Redis outage."""


@dataclass(frozen=True)
class ServiceOptions:
    """What the service needs to know about this gateway's own setup."""

    listen_host: str
    listen_port: int
    public_url: str | None
    webhooks_enabled: bool
    webhooks: WebhookSettings
    create_timeout_s: float
    """An upper bound on one create; the poller checks an unfinished create after it."""
    first_poll_s: float
    accept_retry_s: float = 20.0
    """How long a create keeps retrying to record an accepted task before answering 504."""
    expected_render_s: float | None = None
    """Recorded on each task for its ``progress`` estimate (``status.expected_render_s``)."""


@dataclass(frozen=True)
class TaskJson:
    """A task's public JSON, and whether the task is final (its answer never changes)."""

    body: bytes
    final: bool


class VideoService:
    def __init__(
        self,
        store: TaskStore,
        router: Router,
        refresher: Refresher,
        finalizer: Finalizer,
        idempotent: IdempotentCreates,
        options: ServiceOptions,
        *,
        metrics: Metrics,
        budgets: Budgets,
        final_tasks: FinalTasks | None = None,
        on_named: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        """``on_named(client, task id)`` runs once the client is given a task's id: an upstream
        took the task and it is recorded, or a ``504 upstream_outcome_unknown`` names it (the
        client's task list, :mod:`gateway.listing`); it must not raise."""
        self._on_named = on_named
        self._metrics = metrics
        self._budgets = budgets
        self._final = final_tasks if final_tasks is not None else FinalTasks()
        self._store = store
        self._router = router
        self._refresher = refresher
        self._finalizer = finalizer
        self._idempotent = idempotent
        self._options = options
        self._background: set[asyncio.Task[object]] = set()

    async def create(
        self, client: str, request: CreateVideoRequest, idempotency_key: str | None = None
    ) -> Outcome:
        await self._check_webhook(request.webhook_url)
        job = VideoJob(
            model=request.model,
            tier=request.tier,
            prompt=request.prompt,
            image=request.image,
            duration=request.duration,
            resolution=request.resolution,
        )
        # A task created under an Idempotency-Key lives in the key's shard, with its callback
        # token: one Cluster slot for everything a create and its replay touch.
        shard = (
            None if idempotency_key is None
            else shard_of(Keys.idempotency_scope(client, idempotency_key))
        )  # fmt: skip
        record = TaskRecord.new(
            client, job, webhook_url=request.webhook_url, metadata=request.metadata,
            routing=request.routing, shard=shard,
            expected_render_s=self._options.expected_render_s,
        )  # fmt: skip
        if self._options.public_url:
            record.callback_token = new_token(shard_of(record.id))
        if idempotency_key is None:
            return Outcome(await self._create(record), replayed=False)
        return await self._idempotent.run(
            client, idempotency_key, request, record, lambda: self._create(record)
        )

    async def _check_webhook(self, url: str | None) -> None:
        if url is None:
            return
        if not self._options.webhooks_enabled:
            raise InvalidRequest.field(
                "webhook_url", "webhooks are not configured on this gateway (webhooks.secret_env)"
            )
        listen = (self._options.listen_host, self._options.listen_port)
        refused = await refusal(url, self._options.webhooks, listen)
        if refused is not None:
            raise InvalidRequest.field("webhook_url", refused)

    async def _create(self, record: TaskRecord) -> Task:
        job = record.job
        if job is None:
            raise RuntimeError("a new task record carries its job")
        candidates = await self._router.plan(job, record.routing)
        ceiling = max(c.price_usd for c in candidates)
        # The budget is checked (and the first price reserved) before anything is written, so
        # a refusal leaves no trace but the metric.
        await self._budgets.reserve(record, candidates[0].price_usd, ceiling)
        # The first pending attempt goes in with the task itself: one write before the upstream
        # call, and a refusal (store_unavailable) if Redis cannot take it.
        record.attempts = [Attempt(provider=candidates[0].name, outcome="pending")]
        try:
            await self._store.create(record, check_at=time.time() + self._options.create_timeout_s)
        except StoreUnavailable:
            await self._budgets.settle(record)  # nothing was sent: give the reservation back
            raise
        first_write = list(record.attempts)

        async def before_attempt(candidate: Candidate, done: Sequence[Attempt]) -> None:
            pending = Attempt(provider=candidate.name, outcome="pending")
            if not done and first_write == [pending]:
                return  # already written (and reserved) with the task
            # One reservation per task, at the price of the provider about to be called.
            await self._budgets.reserve(record, candidate.price_usd, ceiling)
            record.attempts = [*done, pending]
            await self._store.save(record)

        try:
            placement = await self._router.submit(
                candidates, job, before_attempt,
                callback_urls(self._options.public_url, record.callback_token),
            )  # fmt: skip
        except GatewayError as exc:
            await self._record_refusal(record, exc)
            if isinstance(exc, UpstreamOutcomeUnknown) and exc.task_id is None:
                exc.task_id = record.id  # recorded before the call: the client may poll it
                await self._named(record)
            raise
        record.attempts = placement.attempts
        place(record, placement)
        self._metrics.task_created(placement.candidate.name, record.tier, record.resolution)
        await self._save_accepted(record)
        await self._named(record)
        logger.info(
            "task accepted",
            extra={
                "task_id": record.id,
                "provider": record.provider,
                "price_usd": record.price_usd,
            },
        )
        return record.public()

    async def _record_refusal(self, record: TaskRecord, exc: GatewayError) -> None:
        """Keep a trace of a create that ended in an error (the client got no task id). During
        a Redis outage the trace is written in the background, so that the task ends as what
        it was rather than, much later, as an interrupted create that may hold a task."""
        if isinstance(exc, StoreUnavailable):
            await self._budgets.settle(record)  # best effort: Redis is failing
            # The pending attempt last written was never sent: writing it is what failed.
            record.attempts = [a for a in record.attempts if a.outcome != "pending"]
        else:
            record.attempts = list(exc.attempts or record.attempts)
        record.finish(TaskStatus.FAILED, error=TaskError(code=exc.code, message=str(exc)))
        if not await self._finalize_refusal(record, deadline=0.0):
            self._spawn(self._finalize_refusal(record, time.monotonic() + REFUSAL_RETRY_S))

    async def _finalize_refusal(self, record: TaskRecord, deadline: float) -> bool:
        """Finalize a refused create, retrying until ``deadline`` (monotonic); False if not."""
        delay = 0.05
        while True:
            try:
                await self._finalizer.finalize(record, announce=False)  # the answer told it
            except StoreUnavailable:  # counted by the store
                if time.monotonic() >= deadline:
                    logger.warning("refused create not recorded yet", extra={"task_id": record.id})
                    return False
            else:
                return True
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)

    async def _named(self, record: TaskRecord) -> None:
        """The client is given this task's id (accepted, or named by a 504): list it."""
        if self._on_named is not None:
            await self._on_named(record.client, record.id)

    def _spawn(self, write: Coroutine[Any, Any, object]) -> None:
        """A write that goes on after the answer (bounded by its own deadline); shutdown waits
        for it (:meth:`drain`)."""
        task = asyncio.create_task(write)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _save_accepted(self, record: TaskRecord) -> None:
        """An upstream has accepted a paid task: its mapping must not be lost.

        A Redis restart or failover takes about a second: the write is retried with backoff for
        ``accept_retry_s``. After that the client gets ``504 upstream_outcome_unknown`` naming
        the task (never ``store_unavailable``, which promises nothing was sent) while the write
        goes on in the background until the poller could take the create for interrupted.
        """
        deadline = time.monotonic() + self._options.accept_retry_s
        outcome = await self._accept_until(record, deadline)
        if outcome == "saved":
            return
        if outcome == "unwritten":
            left = record.created_at + self._options.create_timeout_s - ACCEPT_MARGIN_S
            self._spawn(self._accept_late(record, time.monotonic() + max(0.0, left - time.time())))
        await self._named(record)  # the 504 names it: the client may poll it, and list it
        raise UpstreamOutcomeUnknown(
            f"{record.provider} accepted the task but the gateway could not record it yet; "
            "poll the task id, and do not resubmit it blindly",
            attempts=record.attempts,
            task_id=record.id,
        )

    async def _accept_late(self, record: TaskRecord, deadline: float) -> None:
        """The accepted mapping written after the 504 went out; listed again once written, as
        listing it with the 504 likely failed too (listing an id twice keeps its first time)."""
        if await self._accept_until(record, deadline) == "saved":
            await self._named(record)

    async def _accept_until(self, record: TaskRecord, deadline: float) -> AcceptOutcome:
        """Write the accepted mapping, retrying until ``deadline`` (monotonic seconds)."""
        delay = 0.05
        extra = {"task_id": record.id, "provider": record.provider,
                 "provider_task_id": record.provider_task_id}  # fmt: skip
        while True:
            first_poll = time.time() + self._options.first_poll_s
            try:
                result = await self._store.accept(record, first_poll)
                if result == "missing":  # Redis lost the task (restarted without its data)
                    await self._store.create(record, check_at=first_poll)
                    result = "saved"
            except StoreUnavailable:
                result = None
            if result == "saved":
                return "saved"
            if result == "final":
                # The poller gave the create up for interrupted before it answered.
                logger.critical("accepted task had already ended; reconcile", extra=extra)
                return "final"
            if time.monotonic() >= deadline:
                # The pending attempt written before the call names the provider, so the
                # task can be reconciled; this line carries the upstream id too.
                logger.critical("accepted task not recorded", extra=extra)
                return "unwritten"
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)

    async def drain(self) -> None:
        """Wait (bounded by the writes' own deadlines) for accepted tasks still being recorded
        in the background: called at shutdown, before Redis is closed."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    @property
    def poll_interval_s(self) -> float:
        """How often an unfinished task's upstream is asked: what clients should poll at."""
        return self._options.first_poll_s

    def cached_final(self, task_id: str) -> FinalTask | None:
        """A final task this process has answered before (see :mod:`gateway.shortcut`)."""
        return self._final.get(task_id)

    async def get_json(self, client: str, task_id: str) -> TaskJson:
        """The task's public view (:class:`~gateway.schemas.Task`) as the JSON body of the
        answer, refreshed from its upstream when a poll is due. A final task is answered from
        this process's :class:`~gateway.cache.FinalTasks` once it has been read."""
        cached = self._final.get(task_id)
        if cached is not None and cached.client == client:
            return TaskJson(cached.body, final=True)
        epoch = self._final.epoch
        record = await self._store.get(task_id) if TASK_ID.match(task_id) else None
        if record is None or record.client != client:
            raise NotFound(f"no task {task_id}")
        if self._refresher.due(record):
            record = await self._refresher.refresh(record)
        body = record.public().model_dump_json().encode()
        if record.is_final:
            self._final.put(
                record.id,
                FinalTask(record.client, body, self._store.expires_at(record)),
                epoch=epoch,
            )
        return TaskJson(body, final=record.is_final)

    async def callback(self, provider: str, token: str, *, hint: bool = True) -> None:
        """An upstream says a task changed. Only a hint: the status is read from the upstream,
        never taken from the callback's body. The token is valid from the moment it is sent,
        for every provider the task was sent to: a challenge may come before the create has
        answered (``hint=False``: nothing to read then)."""
        task_id = await self._store.task_for_callback(token)
        record = await self._store.get(task_id) if task_id else None
        if record is None or provider not in {a.provider for a in record.attempts}:
            raise NotFound("no such callback")
        if hint and record.provider == provider and self._refresher.due(record):
            await self._refresher.refresh(record)
