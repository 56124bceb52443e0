"""Final tasks' public JSON, kept in process memory.

Lookups of finished tasks are the bulk of a video gateway's traffic (clients poll until the
video is there, then fetch it again to show it). A final task never changes: the store's
compare-and-set refuses to move a final record, and nothing deletes one before its TTL. So once
an instance has read a final task, it can answer it again from memory without Redis, pydantic
or JSON encoding. Entries leave when the bound is reached (least recently used first) and when
the task's Redis key expires, so the cache never answers a task Redis no longer has.
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

    def put(self, task_id: str, entry: FinalTask) -> None:
        if self._max <= 0 or entry.expires_at <= self._clock():
            return
        self._entries[task_id] = entry
        self._entries.move_to_end(task_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
