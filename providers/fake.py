"""A scripted, in-memory :class:`~providers.base.Provider` for tests (as httpx ships
``MockTransport``): routing and the task flow run against it with no HTTP at all.

A test says, call by call, what the "reseller" answers, then asserts what was sent::

    fake = FakeProvider("runapi")
    fake.on_create(Unreachable("runapi", "connection refused"), accepted("up-1"))
    fake.on_status(UpstreamStatus(status=TaskStatus.FAILED, raw_status="failed"))
    route = Route("runapi", config, adapter=fake, file_order=0)
    ...
    assert [job.callback_url for job in fake.creates] == [...]   # every create, in order
    assert fake.status_reads == ["up-1"]

- Each answer is used once, in the order given: a ``Submitted`` (or ``UpstreamStatus``) is
  returned, a :class:`~providers.errors.ProviderError` is raised. Wrap one in :class:`Scripted`
  to delay it or hold it on an ``asyncio.Event`` (a call kept in flight while the test acts)::

      started, answer = asyncio.Event(), asyncio.Event()
      fake.on_create(Scripted(accepted("up-1"), gate=answer, started=started))
      creating = asyncio.create_task(router.submit(...))
      await started.wait()          # the create is in flight: act, then let it answer
      answer.set()

- A call with no answer left raises :class:`UnscriptedCall` (an ``AssertionError``: routing
  never catches it), naming the call: a test never passes on a silent default.
- Every call is recorded before it is answered (``creates``, ``status_reads``), so a held call
  is already visible, and ``in_flight`` counts the calls not answered yet.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from providers.base import Submitted, TaskStatus, UpstreamStatus, VideoJob
from providers.capabilities import MODELS
from providers.errors import ProviderError

Answer = TypeVar("Answer", Submitted, UpstreamStatus)


class UnscriptedCall(AssertionError):
    """A call the test did not script an answer for."""


@dataclass(frozen=True)
class Scripted(Generic[Answer]):
    """One answer with its timing: returned (or raised) after ``delay_s``, and only once
    ``gate`` is set when one is given. ``started`` is set when the call reaches this answer:
    a test awaits it to act while the call is in flight."""

    answer: Answer | ProviderError
    delay_s: float = 0.0
    gate: asyncio.Event | None = None
    started: asyncio.Event | None = None


def accepted(upstream_id: str, status: TaskStatus = TaskStatus.QUEUED) -> Submitted:
    """A create answer: the upstream took the task as ``upstream_id``."""
    return Submitted(upstream_id=upstream_id, status=status, raw_status=status.value)


class FakeProvider:
    """One scripted reseller account; see the module docstring."""

    kind: ClassVar[str] = "fake"
    models: ClassVar[tuple[str, ...]] = MODELS
    text_to_video: ClassVar[bool] = True
    data_uri_images: ClassVar[bool] = True

    def __init__(self, name: str = "fake") -> None:
        self._name = name
        self._creates: deque[Scripted[Submitted]] = deque()
        self._statuses: deque[Scripted[UpstreamStatus]] = deque()
        self.creates: list[VideoJob] = []
        """Every job ``create`` got, in order (with the ``callback_url`` it was given)."""
        self.status_reads: list[str] = []
        """Every upstream id ``status`` was asked about, in order."""
        self.in_flight = 0
        self.closed = False

    @property
    def name(self) -> str:
        return self._name

    def on_create(self, *answers: Submitted | ProviderError | Scripted[Submitted]) -> None:
        """Queue the answers of the next creates, in order."""
        self._creates.extend(a if isinstance(a, Scripted) else Scripted(a) for a in answers)

    def on_status(
        self, *answers: UpstreamStatus | ProviderError | Scripted[UpstreamStatus]
    ) -> None:
        """Queue the answers of the next status reads, in order."""
        self._statuses.extend(a if isinstance(a, Scripted) else Scripted(a) for a in answers)

    @property
    def unused(self) -> int:
        """Answers scripted and not used yet (a test may assert it is 0)."""
        return len(self._creates) + len(self._statuses)

    async def create(self, job: VideoJob) -> Submitted:
        self.creates.append(job)
        if not self._creates:
            raise UnscriptedCall(
                f"unscripted create #{len(self.creates)} on fake provider {self._name!r} "
                f"(prompt {job.prompt!r})"
            )
        return await self._answer(self._creates.popleft())

    async def status(self, upstream_id: str) -> UpstreamStatus:
        self.status_reads.append(upstream_id)
        if not self._statuses:
            raise UnscriptedCall(
                f"unscripted status({upstream_id!r}) #{len(self.status_reads)} on fake "
                f"provider {self._name!r}"
            )
        return await self._answer(self._statuses.popleft())

    async def _answer(self, scripted: Scripted[Answer]) -> Answer:
        self.in_flight += 1
        if scripted.started is not None:
            scripted.started.set()
        try:
            if scripted.delay_s:
                await asyncio.sleep(scripted.delay_s)
            if scripted.gate is not None:
                await scripted.gate.wait()
        finally:
            self.in_flight -= 1
        if isinstance(scripted.answer, ProviderError):
            raise scripted.answer
        return scripted.answer

    async def aclose(self) -> None:
        self.closed = True
