"""Virtual shards: how the gateway's keys spread over a Redis Cluster, and which shards to visit.

A Redis Cluster hashes a key's ``{…}`` tag to one of 16,384 slots and keeps each slot on one
primary; a Lua script or a ``MULTI`` may only touch keys of one slot. The gateway therefore
puts every key of one task (its record, callback token, poll turn, resubmission lock, webhook
delivery), its idempotency record and its place on the schedules under one tag ``{s<N>}``, one
of :data:`SHARDS` virtual shards. Which shard is a pure function of an id (:func:`shard_of`);
an id that must land in a given shard (a task created under an ``Idempotency-Key`` goes to the
key's shard, its callback token and webhook delivery to the task's) is drawn until it does
(:func:`draw`; 16 tries on average, microseconds).

The schedules (polls, webhooks) are one sorted set per shard. :class:`DueHints` keeps, per
shard, the earliest due time this instance knows of, so an idle instance visits only the
shards with something due, plus every shard once per ``rescan_s`` (work scheduled by other
instances, leases that ran out there), backing off to once per ``MAX_RESCAN_S`` while every
shard is empty: 8 claims a second for an idle instance (polls and webhooks), against 32 at a
fixed 1 s.
"""

from __future__ import annotations

import math
import secrets
import zlib
from collections.abc import Callable
from typing import Final

SHARDS: Final = 16
"""Virtual shards. 16 tags spread 6/4/6 over the slot ranges of a 3-primary Cluster; the
number is part of the data layout (changing it moves every task to another key)."""
RESCAN_S: Final = 1.0
"""How often every shard of a schedule is looked at, whatever the hints say, while there is
work; each rescan that finds every shard empty doubles the interval, up to MAX_RESCAN_S."""
MAX_RESCAN_S: Final = 4.0
MAX_DRAWS: Final = 10_000


def shard_of(value: str) -> int:
    """The virtual shard of an id (task id, callback token, delivery id, idempotency scope)."""
    return zlib.crc32(value.encode()) % SHARDS


def shard_tag(shard: int) -> str:
    """The Cluster hash tag of a shard: every key with it lives in one slot."""
    return f"{{s{shard}}}"


def draw(make: Callable[[], str], shard: int | None) -> str:
    """A fresh ``make()`` value whose shard is ``shard`` (any shard for None)."""
    for _ in range(MAX_DRAWS):
        value = make()
        if shard is None or shard_of(value) == shard:
            return value
    raise RuntimeError(f"no value drawn for shard {shard}")  # 1 in e^625: a broken ``make``


def new_token(shard: int) -> str:
    """An unguessable URL-safe token (192 bits) in ``shard``."""
    return draw(lambda: secrets.token_urlsafe(24), shard)


class DueHints:
    """Which shards of one schedule to visit now; pure bookkeeping, no Redis.

    ``next_due[s]`` is the earliest time anything in shard ``s`` is known to be due: learnt
    from each claim (the script returns the earliest score left) and lowered by this
    instance's own writes. Every ``rescan_s`` all shards are visited regardless.
    """

    def __init__(self, *, rescan_s: float = RESCAN_S, max_rescan_s: float = MAX_RESCAN_S) -> None:
        self._base_s = rescan_s
        self._max_s = max_rescan_s
        self._rescan_s = rescan_s
        self._next_due = [0.0] * SHARDS
        self._rescanned_at = -math.inf
        self._start = 0
        self._busy = True
        """Anything seen or scheduled since the last rescan."""

    def note(self, shard: int, at: float) -> None:
        """This instance put something due at ``at`` into ``shard``."""
        self._next_due[shard] = min(self._next_due[shard], at)
        self._busy = True

    def learn(self, shard: int, next_due: float | None) -> None:
        """A claim left ``next_due`` as the shard's earliest score (None: the shard is empty)."""
        self._next_due[shard] = math.inf if next_due is None else next_due
        self._busy = self._busy or next_due is not None

    def plan(self, now: float, limit: int) -> list[tuple[int, int]]:
        """(shard, how many to claim there) for this tick: at most ``limit`` in all, shared
        over the shards due now, starting at a rotating shard so none is starved."""
        if now - self._rescanned_at >= self._rescan_s:
            busy, self._busy = self._busy, False
            self._rescan_s = self._base_s if busy else min(self._max_s, self._rescan_s * 2)
            self._rescanned_at = now
            self._next_due = [min(d, now) for d in self._next_due]
        due = [
            s
            for s in (*range(self._start, SHARDS), *range(self._start))
            if self._next_due[s] <= now
        ]
        self._start = (self._start + 1) % SHARDS
        if limit <= 0 or not due:
            return []
        due = due[:limit]
        base, extra = divmod(limit, len(due))
        return [(s, base + (1 if i < extra else 0)) for i, s in enumerate(due)]
