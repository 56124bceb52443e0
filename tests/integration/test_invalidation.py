"""The deletion channel (:mod:`gateway.invalidation`) on the suite's real redis-server."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from gateway import invalidation
from gateway.cache import FinalTasks
from gateway.invalidation import Invalidations
from gateway.metrics import Metrics
from gateway.store import Keys


async def subscribed(redis: Redis) -> None:
    for _ in range(100):
        counts = dict(await redis.pubsub_numsub(Keys.DELETED_TASKS))
        if counts.get(Keys.DELETED_TASKS.encode(), 0) > 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the listener never subscribed")


async def test_stop_ends_the_listener_without_waiting_out_its_wait_for_a_message(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every shutdown used to wait for the listener's wait for a message to run out (1 s, and
    about 300 s over the test suite's app teardowns): stop cancels it instead."""
    monkeypatch.setattr(invalidation, "WAIT_S", 60.0)
    listener = Invalidations(redis, FinalTasks(), metrics=Metrics([]))
    run = asyncio.create_task(listener.run())
    await subscribed(redis)
    await listener.stop()
    await asyncio.wait_for(asyncio.gather(run, return_exceptions=True), 5)
    assert run.done()
