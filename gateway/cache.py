"""Final tasks' public JSON, kept in process memory.

Lookups of finished tasks are the bulk of a video gateway's traffic (clients poll until the
video is there, then fetch it again to show it). A final task never changes: the store's
compare-and-set refuses to move a final record. So once an instance has read a final task, it
can answer it again from memory without Redis, pydantic or JSON encoding. Entries leave when the
bound is reached (least recently used first), when the task's Redis key expires, and when the
task is deleted (``DELETE /v1/videos/{id}``: every instance hears of it through Redis pub/sub,
:mod:`gateway.invalidation`), so the cache never answers a task Redis no longer has.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_ENTRIES = 10_000
"""About 8 MB of answers (a final task's public JSON is ~650 bytes, plus the entry)."""


@dataclass(frozen=True, slots=True)
class FinalTask:
    client: str
    body: bytes
    expires_at: float
    """Unix seconds; the task's Redis key expires at or after this."""


class FinalTasks:
    """A bounded LRU of task id → :class:`FinalTask`. ``max_entries`` 0 turns it off."""

    def __init__(
        self, max_entries: int = DEFAULT_ENTRIES, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, FinalTask] = OrderedDict()
        self._epoch = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, task_id: str) -> FinalTask | None:
        entry = self._entries.get(task_id)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            del self._entries[task_id]
            return None
        self._entries.move_to_end(task_id)
        return entry

    @property
    def epoch(self) -> int:
        """Changes whenever an entry is dropped on purpose (:meth:`evict`, :meth:`clear`)."""
        return self._epoch

    def evict(self, task_id: str) -> None:
        """The task was deleted: never answer it again."""
        self._entries.pop(task_id, None)
        self._epoch += 1

    def clear(self) -> None:
        """Deletions may have been missed (no subscription): forget everything."""
        self._entries.clear()
        self._epoch += 1

    def put(self, task_id: str, entry: FinalTask, *, epoch: int | None = None) -> None:
        """Keep ``entry``. ``epoch``: :attr:`epoch` from before the task was read; if anything
        was evicted since, the read may be of a task deleted meanwhile, so it is not kept."""
        if self._max <= 0 or entry.expires_at <= self._clock():
            return
        if epoch is not None and epoch != self._epoch:
            return
        self._entries[task_id] = entry
        self._entries.move_to_end(task_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
