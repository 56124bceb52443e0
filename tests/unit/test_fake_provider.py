"""The scripted provider itself (``providers/fake.py``): answers in order, used once, every call
recorded, and a call nobody scripted fails loudly instead of answering a default."""

from __future__ import annotations

import asyncio
import time

import pytest

from providers import errors as perr
from providers.base import TaskStatus, UpstreamStatus, VideoJob
from providers.fake import FakeProvider, Scripted, UnscriptedCall, accepted

JOB = VideoJob(prompt="a kite over the dunes", callback_url="https://gw.example/callbacks/f/t")
RUNNING = UpstreamStatus(status=TaskStatus.IN_PROGRESS, raw_status="running")


async def test_answers_come_in_order_each_used_once() -> None:
    fake = FakeProvider("f")
    fake.on_create(perr.Unreachable("f", "connection refused"), accepted("up-1"))
    with pytest.raises(perr.Unreachable):
        await fake.create(JOB)
    assert (await fake.create(JOB)).upstream_id == "up-1"
    assert fake.creates == [JOB, JOB]
    assert fake.unused == 0
    with pytest.raises(UnscriptedCall, match="create #3 on fake provider 'f'"):
        await fake.create(JOB)


async def test_an_unscripted_status_read_names_the_upstream_id() -> None:
    fake = FakeProvider("f")
    fake.on_status(RUNNING)
    assert await fake.status("up-1") == RUNNING
    with pytest.raises(UnscriptedCall, match=r"status\('up-2'\) #2 on fake provider 'f'"):
        await fake.status("up-2")
    assert fake.status_reads == ["up-1", "up-2"]


async def test_a_gated_call_is_recorded_and_in_flight_until_the_gate_opens() -> None:
    fake = FakeProvider("f")
    started, gate = asyncio.Event(), asyncio.Event()
    fake.on_create(Scripted(accepted("up-1"), gate=gate, started=started))
    call = asyncio.create_task(fake.create(JOB))
    await asyncio.wait_for(started.wait(), 5)
    assert (fake.creates, fake.in_flight, call.done()) == ([JOB], 1, False)
    gate.set()
    assert (await call).upstream_id == "up-1"
    assert fake.in_flight == 0


async def test_a_delayed_answer_takes_its_delay() -> None:
    fake = FakeProvider("f")
    fake.on_status(Scripted(perr.OutcomeUnknown("f", "read timeout"), delay_s=0.05))
    started = time.monotonic()
    with pytest.raises(perr.OutcomeUnknown):
        await fake.status("up-1")
    assert time.monotonic() - started >= 0.05


async def test_aclose_is_recorded() -> None:
    fake = FakeProvider("f")
    await fake.aclose()
    assert fake.closed
