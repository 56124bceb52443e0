"""The in-memory cache of final tasks: bounded, least recently used out first, and never past
the task's own expiry in Redis."""

from __future__ import annotations

from gateway.cache import FinalTask, FinalTasks


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def entry(client: str = "demo", expires_at: float = 2_000.0) -> FinalTask:
    return FinalTask(client=client, body=b'{"id":"x"}', expires_at=expires_at)


def test_remembered_task_is_returned_until_its_redis_key_expires() -> None:
    clock = Clock()
    cache = FinalTasks(10, clock=clock)
    cache.put("vid_a", entry(expires_at=1_500.0))
    assert cache.get("vid_a") == entry(expires_at=1_500.0)
    clock.now = 1_500.0
    assert cache.get("vid_a") is None
    assert len(cache) == 0


def test_already_expired_task_is_not_stored() -> None:
    cache = FinalTasks(10, clock=Clock())
    cache.put("vid_a", entry(expires_at=999.0))
    assert len(cache) == 0


def test_least_recently_used_task_leaves_first_at_the_bound() -> None:
    cache = FinalTasks(2, clock=Clock())
    cache.put("vid_a", entry())
    cache.put("vid_b", entry())
    assert cache.get("vid_a") is not None  # a is now the most recently used
    cache.put("vid_c", entry())
    assert len(cache) == 2
    assert cache.get("vid_b") is None
    assert cache.get("vid_a") is not None
    assert cache.get("vid_c") is not None


def test_zero_entries_turns_the_cache_off() -> None:
    cache = FinalTasks(0, clock=Clock())
    cache.put("vid_a", entry())
    assert cache.get("vid_a") is None
