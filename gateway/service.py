"""The video service: what ``POST /v1/videos`` and ``GET /v1/videos/{id}`` do.

Create: validate against what is configured → write the task (refused if Redis is down, before
any upstream call) → record each attempt before it is made → route → save the mapping.
Look up: read the task; if it is not final and was not polled within the poll interval, ask its
upstream once (single-flight per task in this process) and save what changed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence

from gateway.config import StatusSettings
from gateway.errors import GatewayError, NotFound, StoreUnavailable
from gateway.health import Health
from gateway.idempotency import IdempotentCreates, Outcome
from gateway.router import Router
from gateway.schemas import Attempt, CreateVideoRequest, Task, TaskError
from gateway.store import TaskRecord, TaskStore, now_s
from gateway.strategies import Candidate
from providers.base import TaskStatus, UpstreamStatus, VideoJob
from providers.errors import ProviderError

logger = logging.getLogger(__name__)

TASK_ID = re.compile(r"^vid_[a-z2-7]{26}$")
SAVE_RETRIES = 3


class VideoService:
    def __init__(
        self,
        store: TaskStore,
        router: Router,
        health: Health,
        idempotent: IdempotentCreates,
        status: StatusSettings,
    ) -> None:
        self._store = store
        self._router = router
        self._health = health
        self._idempotent = idempotent
        self._status = status
        self._inflight: dict[str, asyncio.Future[TaskRecord]] = {}

    async def create(
        self, client: str, request: CreateVideoRequest, idempotency_key: str | None = None
    ) -> Outcome:
        job = VideoJob(
            model=request.model,
            tier=request.tier,
            prompt=request.prompt,
            image=request.image,
            duration=request.duration,
            resolution=request.resolution,
        )
        record = TaskRecord.new(
            client, job, webhook_url=request.webhook_url, metadata=request.metadata
        )
        if idempotency_key is None:
            return Outcome(await self._create(record, request), replayed=False)
        return await self._idempotent.run(
            client, idempotency_key, request, record, lambda: self._create(record, request)
        )

    async def _create(self, record: TaskRecord, request: CreateVideoRequest) -> Task:
        job = record.job
        if job is None:
            raise RuntimeError("a new task record carries its job")
        candidates = await self._router.plan(job, request.routing)
        # The first pending attempt goes in with the task itself: one write before the upstream
        # call, and a refusal (store_unavailable) if Redis cannot take it.
        record.attempts = [Attempt(provider=candidates[0].name, outcome="pending")]
        await self._store.create(record)

        async def before_attempt(candidate: Candidate, done: Sequence[Attempt]) -> None:
            pending = Attempt(provider=candidate.name, outcome="pending")
            if not done and record.attempts == [pending]:
                return  # already written with the task
            record.attempts = [*done, pending]
            await self._store.save(record)

        try:
            placement = await self._router.submit(candidates, job, before_attempt)
        except GatewayError as exc:
            await self._record_refusal(record, exc)
            raise
        record.provider = placement.candidate.name
        record.provider_task_id = placement.submitted.upstream_id
        record.price_usd = placement.candidate.price_usd
        record.status = placement.submitted.status
        record.attempts = placement.attempts
        record.updated_at = now_s()
        await self._save_accepted(record)
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
        """Keep a trace of a create that ended in an error (the client got no task id)."""
        if isinstance(exc, StoreUnavailable):
            return
        record.attempts = list(exc.attempts or record.attempts)
        record.finish(TaskStatus.FAILED, error=TaskError(code=exc.code, message=str(exc)))
        try:
            await self._store.save(record)
        except StoreUnavailable:
            logger.exception("could not record a refused create", extra={"task_id": record.id})

    async def _save_accepted(self, record: TaskRecord) -> None:
        """An upstream has accepted a paid task: its mapping must not be lost."""
        for attempt in range(SAVE_RETRIES):
            try:
                await self._store.save(record)
            except StoreUnavailable:
                if attempt == SAVE_RETRIES - 1:
                    # The pending attempt written before the call names the provider, so the
                    # task can be reconciled; this line carries the upstream id too.
                    logger.critical(
                        "accepted task not recorded",
                        extra={"task_id": record.id, "provider": record.provider,
                               "provider_task_id": record.provider_task_id},
                    )  # fmt: skip
                    raise
                await asyncio.sleep(0.1 * 2**attempt)
            else:
                return

    async def get(self, client: str, task_id: str) -> Task:
        record = await self._store.get(task_id) if TASK_ID.match(task_id) else None
        if record is None or record.client != client:
            raise NotFound(f"no task {task_id}")
        if self._needs_refresh(record):
            record = await self._refresh_once(record)
        return record.public()

    def _needs_refresh(self, record: TaskRecord) -> bool:
        if record.is_final or record.provider is None or record.provider_task_id is None:
            return False
        return (
            record.polled_at is None
            or time.time() - record.polled_at >= self._status.poll_interval_s
        )

    async def _refresh_once(self, record: TaskRecord) -> TaskRecord:
        """One upstream read per task at a time in this process; others wait for its result."""
        running = self._inflight.get(record.id)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[TaskRecord] = asyncio.get_running_loop().create_future()
        self._inflight[record.id] = future
        try:
            refreshed = await self._refresh(record)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters may be none
            raise
        else:
            future.set_result(refreshed)
            return refreshed
        finally:
            del self._inflight[record.id]

    async def _refresh(self, record: TaskRecord) -> TaskRecord:
        adapter = self._router.adapter(record.provider or "")
        if adapter is None or record.provider_task_id is None:
            logger.warning("task's provider is no longer configured", extra={"task_id": record.id})
            return record
        record.polled_at = time.time()
        try:
            upstream = await adapter.status(record.provider_task_id)
        except ProviderError as exc:
            # A failed read changes nothing: serve what is stored and try again next interval.
            logger.warning(
                "upstream status failed",
                extra={"task_id": record.id, "provider": record.provider, "outcome": exc.outcome},
            )
            upstream = None
        if upstream is not None:
            self._apply(record, upstream)
            if record.is_final and not _refused_content(record):
                await self._health.record_task(
                    record.provider or "", completed=record.status is TaskStatus.COMPLETED
                )
        if not record.is_final and time.time() - record.created_at > self._status.deadline_s:
            record.finish(
                TaskStatus.FAILED,
                error=TaskError(code="timeout", message="the task did not finish in time"),
            )
        await self._store.save(record)
        return record

    @staticmethod
    def _apply(record: TaskRecord, upstream: UpstreamStatus) -> None:
        if upstream.status is TaskStatus.COMPLETED:
            record.finish(TaskStatus.COMPLETED, video_url=upstream.video_url)
        elif upstream.status is TaskStatus.FAILED:
            record.finish(
                TaskStatus.FAILED,
                error=TaskError(
                    code=upstream.error_code or "generation_failed",
                    message=upstream.error_message or "the upstream reported a failure",
                ),
            )
        elif upstream.status != record.status:
            record.status = upstream.status
            record.updated_at = now_s()


def _refused_content(record: TaskRecord) -> bool:
    """A content refusal says nothing about the reseller's health."""
    return record.error is not None and record.error.code == "content_rejected"
