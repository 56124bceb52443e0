"""The Cluster key layout and the shard bookkeeping, without a server: every key one script or
``MULTI`` touches hashes to one slot, and idle schedules are not visited."""

from __future__ import annotations

import time

import pytest
from redis.crc import key_slot

from gateway import redis_urls
from gateway.shards import SHARDS, DueHints, draw, new_token, shard_of
from gateway.store import Keys
from gateway.tasks import TaskRecord
from gateway.webhooks import new_delivery
from providers.base import VideoJob

JOB = VideoJob(model="hailuo-2.3", tier="standard", prompt="a fox",
               image="https://example.com/a.png", duration=6, resolution="768P")  # fmt: skip


def slot(key: str) -> int:
    return int(key_slot(key.encode()))


def test_every_key_of_a_keyed_task_shares_one_slot() -> None:
    shard = shard_of(Keys.idempotency_scope("demo", "order-42"))
    record = TaskRecord.new("demo", JOB, webhook_url=None, metadata={}, shard=shard)
    record.webhook_url = "https://hooks.example/v"
    delivery = new_delivery(record, record.webhook_url)
    token = new_token(shard_of(record.id))
    keys = [
        Keys.task(record.id),
        Keys.poll_lock(record.id),
        Keys.callback(token),
        Keys.webhook(delivery.id),
        Keys.idempotency("demo", "order-42"),
        Keys.due("poll", shard),
        Keys.due("webhooks", shard),
    ]
    assert {slot(k) for k in keys} == {slot(Keys.task(record.id))}
    assert shard_of(record.id) == shard


def test_tasks_spread_over_every_shard_and_more_than_one_slot() -> None:
    ids = [TaskRecord.new("demo", JOB, webhook_url=None, metadata={}).id for _ in range(400)]
    assert {shard_of(i) for i in ids} == set(range(SHARDS))
    assert len({slot(Keys.task(i)) for i in ids}) == SHARDS


def test_a_providers_keys_share_a_slot_and_a_clients_rate_key_has_its_own_tag() -> None:
    runapi = [Keys.circuit("runapi"), Keys.circuit_lease("runapi"),
              Keys.health_outcomes("runapi"), Keys.health_latency("runapi")]  # fmt: skip
    assert len({slot(k) for k in runapi}) == 1
    assert "{c:demo}" in Keys.rate("demo")


def test_draw_lands_in_the_asked_shard() -> None:
    for shard in range(SHARDS):
        assert shard_of(draw(lambda: new_token(0) + "x", shard)) == shard


def test_hints_visit_every_shard_first_then_only_where_something_is_due() -> None:
    hints = DueHints(rescan_s=1.0)
    first = hints.plan(100.0, limit=32)
    assert sorted(s for s, _ in first) == list(range(SHARDS))
    assert sum(n for _, n in first) == 32
    for shard in range(SHARDS):
        hints.learn(shard, None)  # every shard empty
    hints.learn(3, 100.5)
    assert hints.plan(100.2, limit=16) == []  # idle: no Redis call at all
    assert hints.plan(100.6, limit=16) == [(3, 16)]
    hints.learn(3, None)
    hints.note(7, 100.7)  # this instance scheduled something
    assert hints.plan(100.8, limit=16) == [(7, 16)]
    hints.learn(7, None)
    assert len(hints.plan(101.7, limit=16)) == SHARDS  # the periodic rescan


def test_a_small_limit_rotates_over_the_due_shards() -> None:
    hints = DueHints()
    seen = set()
    for tick in range(SHARDS):
        plan = hints.plan(50.0 + tick * 0.01, limit=2)
        assert sum(n for _, n in plan) == 2
        seen |= {s for s, _ in plan}
    assert seen == set(range(SHARDS))


def test_idle_rescans_back_off_to_one_visit_per_shard_every_four_seconds() -> None:
    hints = DueHints(rescan_s=1.0, max_rescan_s=4.0)
    now = time.time()
    rescans = []
    for tick in range(80):  # twenty seconds of a 0.25 s idle tick
        plan = hints.plan(now + tick * 0.25, limit=16)
        if plan:
            rescans.append(tick * 0.25)
        for shard, _ in plan:
            hints.learn(shard, None)
    assert rescans == [0.0, 1.0, 3.0, 7.0, 11.0, 15.0, 19.0]
    hints.note(5, now + 19.1)  # work again: back to a rescan every second
    assert hints.plan(now + 19.25, limit=16) == [(5, 16)]
    hints.learn(5, None)
    for at in (23.0, 24.0):  # the rescan at 23 still counts the work seen since 19
        plan = hints.plan(now + at, limit=16)
        assert len(plan) == SHARDS
        for shard, _ in plan:
            hints.learn(shard, None)
    assert hints.plan(now + 25.0, limit=16) == []  # idle again: backing off


@pytest.mark.parametrize(
    ("url", "topology", "nodes", "service", "db"),
    [
        ("redis://10.0.0.5:6379/0", "standalone", (), None, 0),
        ("rediss://cache.example:6380", "standalone", (), None, 0),
        ("unix:///tmp/r.sock", "standalone", (), None, 0),
        ("redis+sentinel://h1:26379,h2/mymaster", "sentinel",
         (("h1", 26379), ("h2", 26379)), "mymaster", 0),
        ("redis+sentinel://:pw@[::1]:26380/svc/2", "sentinel", (("::1", 26380),), "svc", 2),
        ("redis+cluster://h1:7000,h2:7001", "cluster", (("h1", 7000), ("h2", 7001)), None, 0),
    ],
)  # fmt: skip
def test_redis_urls_name_their_topology(
    url: str, topology: str, nodes: tuple[tuple[str, int], ...], service: str | None, db: int
) -> None:
    target = redis_urls.parse(url)
    assert (target.topology, target.nodes, target.service, target.db) == (
        topology, nodes, service, db)  # fmt: skip


def test_sentinel_credentials_and_tls_are_kept() -> None:
    target = redis_urls.parse("rediss+sentinel://app:s%40cret@h1:26379/mymaster")
    assert (target.username, target.password, target.ssl) == ("app", "s@cret", True)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("localhost:6379", "expected a URL"),
        ("http://h:1", "unknown scheme"),
        ("redis+mesh://h1:1", "unknown scheme"),
        ("redis+sentinel://h1:26379", "service name"),
        ("redis+sentinel://h1:26379/a/b/c", "service name"),
        ("redis+sentinel://h1:26379/mymaster/x", "database number"),
        ("redis+cluster://h1:7000/0", "no path"),
        ("redis+cluster://h1:notaport", "bad host:port"),
        ("redis+cluster:///", "no host"),
    ],
)
def test_bad_redis_urls_are_refused_saying_why(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        redis_urls.parse(url)
