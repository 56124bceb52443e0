"""What every simulated reseller shares: the knobs, the task table and the counters.

Tasks progress with time rather than with a worker: a task is queued for ``queue_s`` after its
creation, processing until ``complete_after_s``, then final. The timings and the outcome are
fixed when the task is created, so changing the knobs later never rewrites a task's history.

Three prompt markers let one set of knobs serve many tests:

- ``[sandbox:fail]``: the task ends failed with :data:`FAILURE_MESSAGE`;
- ``[sandbox:content]``: the create call is refused as a content refusal;
- ``[sandbox:slow]``: the task never completes (it stays processing).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

CreateFault = Literal[
    "none",
    "http_500",
    "html_502",
    "http_503",
    "http_429",
    "http_402",
    "http_401",
    "http_403",
    "http_400",
    "content",
    "hang",
    "drop",
]
StatusFault = Literal["none", "http_500", "hang"]
VideoFault = Literal["none", "http_404", "expired", "html", "truncated", "http_500"]
"""How a finished video's link misbehaves (``providers.sandbox.videos``)."""
Outcome = Literal["completed", "failed"]

FAIL_MARKER = "[sandbox:fail]"
CONTENT_MARKER = "[sandbox:content]"
SLOW_MARKER = "[sandbox:slow]"
FAILURE_MESSAGE = "generation failed: internal render error"

# Faults answered before the key is even looked at, as an overloaded edge or gateway would.
EDGE_FAULTS: frozenset[CreateFault] = frozenset({"http_500", "html_502", "http_503", "http_429"})
# Faults answered after authentication, about the account or the request.
ACCOUNT_FAULTS: frozenset[CreateFault] = frozenset({"http_400", "http_401", "http_402", "http_403"})


class Knobs(BaseModel):
    """How a simulated reseller behaves. The defaults make a healthy, fast reseller."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float = Field(default=0, ge=0, description="Added delay on every create/status.")
    create_fault: CreateFault = "none"
    hang_s: float = Field(default=60, ge=0, description="How long `hang` waits before answering.")
    retry_after: str | None = Field(default="2", description="Retry-After header of a 429.")
    queue_s: float = Field(default=0.5, ge=0, description="Queued until this long after create.")
    complete_after_s: float = Field(default=3.0, ge=0, description="Final this long after create.")
    task_outcome: Outcome = "completed"
    status_fault: StatusFault = "none"
    video_bytes: int = Field(
        default=64 * 1024, ge=64, le=2**31, description="Size of each finished video's file."
    )
    video_fault: VideoFault = "none"
    video_bytes_per_s: float | None = Field(
        default=None, gt=0, description="Pace of video downloads (a slow reseller)."
    )
    business_code: int | None = Field(
        default=None,
        description="MiniMax only: answer every create HTTP 200 with this base_resp.status_code.",
    )
    balance_cents: int | None = Field(
        default=None,
        description="Set the account balance (RunAPI): each accepted create is charged its "
        "price and a create it cannot cover answers 402; null: unlimited.",
    )
    url_base: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#]+$",
        description="fal: the origin its status_url/response_url name (None: its own).",
    )


class Counters(BaseModel):
    """What one simulated reseller has seen since its start or last reset."""

    create_calls: int = 0
    accepted_creates: int = 0
    status_calls: int = 0
    file_calls: int = 0
    """MiniMax's ``files/retrieve``."""
    challenges_sent: int = 0
    challenges_echoed: int = 0
    """Callback handshakes (MiniMax) answered with the challenge within 3 s."""
    callbacks_sent: int = 0
    balance_calls: int = 0
    video_downloads: int = 0
    """Downloads of finished videos started (``/files/...``)."""


class Stats(BaseModel):
    """The answer of ``GET /_sandbox/stats``."""

    reseller: str
    counters: Counters
    knobs: Knobs
    tasks: int
    authorizations: list[str] = Field(default_factory=list)
    """Every distinct ``Authorization`` header its API routes received (sandbox keys are no
    secrets), so a test can prove which credentials reached which host."""


class TaskList(BaseModel):
    """The answer of ``GET /_sandbox/tasks``: every task this reseller accepted (and so would
    bill), oldest first, so a test can check that the gateway knows each one."""

    reseller: str
    tasks: list[str]


class Phase(StrEnum):
    """Where a task is; each reseller maps these onto its own status words."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What was asked for, in canonical terms (``resolution`` is ``"768P"`` or ``"1080P"``)."""

    model: str
    prompt: str
    duration: int
    resolution: str


@dataclass(frozen=True, slots=True)
class SimTask:
    """One accepted generation and the timeline it will follow."""

    task_id: str
    spec: TaskSpec
    created_at: float
    queue_s: float
    complete_after_s: float | None  # None: never completes
    outcome: Outcome
    refusal: str | None = None
    """Why a queue-style reseller (fal) fails the task at its end rather than refusing the
    create: ``"content"``, or a validation message."""

    def phase(self, now: float) -> Phase:
        elapsed = now - self.created_at
        if elapsed < self.queue_s:
            return Phase.QUEUED
        if self.complete_after_s is None or elapsed < self.complete_after_s:
            return Phase.PROCESSING
        return Phase.COMPLETED if self.outcome == "completed" else Phase.FAILED

    @property
    def error(self) -> str:
        return FAILURE_MESSAGE


class SandboxState:
    """The mutable state of one simulated reseller, shared by its handlers.

    ``reset`` returns the knobs to the ones the reseller was started with, which are
    ``Knobs()`` unless the caller chose others.
    """

    def __init__(
        self,
        name: str,
        api_key: str,
        knobs: Knobs | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.api_key = api_key
        self.initial_knobs = knobs or Knobs()
        self.knobs = self.initial_knobs
        self.counters = Counters()
        self.tasks: dict[str, SimTask] = {}
        self.balance_cents = self.knobs.balance_cents
        """What the account can still spend; None: unlimited. Set by the knob, lowered by
        each accepted create's price (:meth:`charge`)."""
        self.spent_cents = 0
        self.authorizations: set[str] = set()
        self.stopping = asyncio.Event()
        self.outbound: httpx.AsyncBaseTransport | None = None
        """How the reseller's own requests (callbacks) travel; None: real sockets. In-process
        tests point it at the gateway's ASGI app."""
        self.background: set[asyncio.Task[None]] = set()
        """Requests the reseller makes on its own (MiniMax's callbacks), until they end."""
        self._clock = clock or time.monotonic

    def now(self) -> float:
        return self._clock()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, held until it ends."""
        task = asyncio.get_running_loop().create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def until_final(self, task: SimTask) -> bool:
        """Sleep until ``task`` is final; False when the server starts stopping first (or the
        task never ends), so a reseller's own requests never delay a shutdown."""
        if task.complete_after_s is None:
            return False
        wait = task.created_at + task.complete_after_s - self.now()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=max(0.0, wait) + 0.01)
        return not self.stopping.is_set()

    def reset(self) -> None:
        self.knobs = self.initial_knobs
        self.counters = Counters()
        self.tasks.clear()
        self.balance_cents = self.knobs.balance_cents
        self.spent_cents = 0
        self.authorizations.clear()

    def update_knobs(self, patch: dict[str, object]) -> Knobs:
        """Apply a partial update; raises ``pydantic.ValidationError`` and changes nothing."""
        self.knobs = Knobs.model_validate({**self.knobs.model_dump(), **patch})
        if "balance_cents" in patch:
            self.balance_cents = self.knobs.balance_cents
        return self.knobs

    def charge(self, cents: int) -> bool:
        """Take ``cents`` from the balance; False (nothing taken) when it cannot cover them."""
        if self.balance_cents is not None:
            if self.balance_cents < cents:
                return False
            self.balance_cents -= cents
        self.spent_cents += cents
        return True

    async def delay(self) -> None:
        """The ``latency_ms`` every create and status answer waits."""
        if self.knobs.latency_ms > 0:
            await asyncio.sleep(self.knobs.latency_ms / 1000)

    def refuses_content(self, prompt: str) -> bool:
        return self.knobs.create_fault == "content" or CONTENT_MARKER in prompt

    def accept(self, task_id: str, spec: TaskSpec, *, refusal: str | None = None) -> SimTask:
        """Record an accepted create; its timeline comes from the knobs and prompt markers.

        A ``refusal`` makes the task end failed for that reason (see :attr:`SimTask.refusal`).
        """
        knobs = self.knobs
        never = SLOW_MARKER in spec.prompt
        failed = knobs.task_outcome == "failed" or FAIL_MARKER in spec.prompt or bool(refusal)
        task = SimTask(
            task_id=task_id,
            spec=spec,
            created_at=self.now(),
            queue_s=knobs.queue_s,
            complete_after_s=None if never else max(knobs.complete_after_s, knobs.queue_s),
            outcome="failed" if failed else "completed",
            refusal=refusal,
        )
        self.tasks[task_id] = task
        self.counters.accepted_creates += 1
        return task

    def stats(self) -> Stats:
        return Stats(
            reseller=self.name,
            counters=self.counters.model_copy(),
            knobs=self.knobs,
            tasks=len(self.tasks),
            authorizations=sorted(self.authorizations),
        )

    def task_list(self) -> TaskList:
        return TaskList(reseller=self.name, tasks=list(self.tasks))
