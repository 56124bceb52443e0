"""Every failover verdict of ``Router.submit``, against scripted providers (``providers/fake.py``).

Circuits and half-open leases live in the suite's real redis-server; nothing else is real, so
each test is a few milliseconds. The rule under test: move on only after an answer proving the
upstream created nothing (or after no answer, when ``failover_on_timeout`` allows it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.config import Settings
from gateway.errors import (
    AllProvidersFailed,
    ContentRejected,
    ProvidersUnavailable,
    StoreUnavailable,
    UpstreamOutcomeUnknown,
    UpstreamRejected,
)
from gateway.health import Health
from gateway.live import LiveSettings
from gateway.redis_client import RedisClient
from gateway.router import Router
from gateway.schemas import Attempt
from gateway.strategies import Candidate
from providers import errors as perr
from providers.base import Provider
from providers.fake import FakeProvider, Scripted, UnscriptedCall, accepted
from tests.fake_routes import JOB, NAMES, candidates, fake_routes, fake_settings

FAILOVER_SAFE: tuple[type[perr.ProviderError], ...] = (
    perr.NotTaken,
    perr.Unreachable,
    perr.UpstreamServerError,
    perr.RateLimited,
    perr.AccountError,
)
NOT_FAILOVER_NOT_SPECIAL: tuple[type[perr.ProviderError], ...] = (
    perr.ProviderError,
    perr.TaskNotFound,
)
"""Errors that stop routing without a verdict of their own: ``all_providers_failed``."""


class Clock:
    """The circuits' clock, moved by the test (a cooldown passes at once)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Stack:
    router: Router
    fakes: dict[str, FakeProvider]
    redis: RedisClient
    clock: Clock
    settings: Settings

    def health(self) -> Health:
        """Another instance's view of the circuits (same Redis, same clock)."""
        return Health(self.redis, self.settings.routing.circuit, NAMES, clock=self.clock)


@dataclass
class BeforeAttempts:
    """A ``before_attempt`` that records what it was given, and how many creates each fake
    had received when it ran."""

    fakes: dict[str, FakeProvider]
    seen: list[tuple[str, list[str], int]] = field(default_factory=list)

    async def __call__(self, candidate: Candidate, done: Sequence[Attempt]) -> None:
        made = sum(len(f.creates) for f in self.fakes.values())
        self.seen.append((candidate.name, [f"{a.provider}:{a.outcome}" for a in done], made))


def stack(redis: RedisClient, **routing: Any) -> Stack:
    settings = fake_settings(routing={"circuit": {"failures_to_open": 1}, **routing})
    routes, fakes = fake_routes(settings)
    clock = Clock()
    health = Health(redis, settings.routing.circuit, NAMES, clock=clock)
    return Stack(Router(routes, LiveSettings(settings), health), fakes, redis, clock, settings)


async def submit(s: Stack, *names: str, **kwargs: Any) -> Any:
    return await s.router.submit(candidates(*names), JOB, BeforeAttempts(s.fakes), **kwargs)


def outcomes(attempts: Sequence[Attempt] | None) -> list[str]:
    return [f"{a.provider}:{a.outcome}" for a in attempts or []]


def test_the_fake_is_a_provider() -> None:
    assert isinstance(FakeProvider("a"), Provider)


async def test_an_unscripted_create_fails_loudly_naming_the_call(redis: RedisClient) -> None:
    s = stack(redis)
    with pytest.raises(UnscriptedCall, match="create #1 on fake provider 'a'"):
        await submit(s, "a", "b")
    assert s.fakes["b"].creates == []


async def test_the_first_candidate_accepting_ends_routing(redis: RedisClient) -> None:
    s = stack(redis)
    s.fakes["a"].on_create(accepted("up-a-1"))
    placement = await submit(s, "a", "b")
    assert placement.candidate.name == "a"
    assert placement.submitted.upstream_id == "up-a-1"
    assert outcomes(placement.attempts) == ["a:accepted"]
    assert s.fakes["b"].creates == []


def _subclasses(cls: type[perr.ProviderError]) -> set[type[perr.ProviderError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_the_failover_safe_errors_tested_are_every_one_the_tree_has() -> None:
    tree = _subclasses(perr.ProviderError)
    assert {c for c in tree if c.failover} == set(FAILOVER_SAFE)
    assert all(c.taken is False for c in FAILOVER_SAFE)


@pytest.mark.parametrize("error", FAILOVER_SAFE, ids=lambda c: c.__name__)
async def test_a_failover_safe_error_moves_on_and_records_both_attempts(
    redis: RedisClient, error: type[perr.ProviderError]
) -> None:
    s = stack(redis)
    s.fakes["a"].on_create(error("a", "nothing created", http_status=503))
    s.fakes["b"].on_create(accepted("up-b-1"))
    placement = await submit(s, "a", "b", "c")
    assert placement.candidate.name == "b"
    assert placement.submitted.upstream_id == "up-b-1"
    assert outcomes(placement.attempts) == [f"a:{error.outcome}", "b:accepted"]
    assert placement.attempts[0].message == "nothing created"
    assert len(s.fakes["a"].creates) == 1
    assert s.fakes["c"].creates == []


async def test_an_unanswered_create_stops_without_calling_the_next_provider(
    redis: RedisClient,
) -> None:
    s = stack(redis, failover_on_timeout=False)
    s.fakes["a"].on_create(perr.OutcomeUnknown("a", "read timeout"))
    with pytest.raises(UpstreamOutcomeUnknown) as raised:
        await submit(s, "a", "b")
    assert outcomes(raised.value.attempts) == ["a:outcome_unknown"]
    assert raised.value.status == 504
    assert s.fakes["b"].creates == []


async def test_an_unanswered_create_moves_on_when_failover_on_timeout_allows_it(
    redis: RedisClient,
) -> None:
    s = stack(redis, failover_on_timeout=True)
    s.fakes["a"].on_create(perr.OutcomeUnknown("a", "read timeout"))
    s.fakes["b"].on_create(accepted("up-b-1"))
    placement = await submit(s, "a", "b")
    assert placement.candidate.name == "b"
    assert outcomes(placement.attempts) == ["a:outcome_unknown", "b:accepted"]


async def test_an_answer_proving_the_task_was_taken_stops_even_with_failover_on_timeout(
    redis: RedisClient,
) -> None:
    s = stack(redis, failover_on_timeout=True)
    s.fakes["a"].on_create(perr.UnusableAnswer("a", "status URL on another host"))
    with pytest.raises(UpstreamOutcomeUnknown, match="answered unusably") as raised:
        await submit(s, "a", "b")
    assert outcomes(raised.value.attempts) == ["a:outcome_unknown"]
    assert s.fakes["b"].creates == []


async def test_a_content_refusal_is_content_rejected_and_never_sent_elsewhere(
    redis: RedisClient,
) -> None:
    s = stack(redis)
    s.fakes["a"].on_create(perr.ContentRejected("a", "prompt refused by moderation"))
    with pytest.raises(ContentRejected) as raised:
        await submit(s, "a", "b")
    assert raised.value.status == 422
    assert outcomes(raised.value.attempts) == ["a:content_rejected"]
    assert s.fakes["b"].creates == []


async def test_a_request_refusal_is_upstream_rejected_and_never_sent_elsewhere(
    redis: RedisClient,
) -> None:
    s = stack(redis)
    s.fakes["a"].on_create(perr.RequestRejected("a", "duration must be 6", http_status=400))
    with pytest.raises(UpstreamRejected) as raised:
        await submit(s, "a", "b")
    assert raised.value.status == 502
    assert outcomes(raised.value.attempts) == ["a:upstream_rejected"]
    assert s.fakes["b"].creates == []


@pytest.mark.parametrize("error", NOT_FAILOVER_NOT_SPECIAL, ids=lambda c: c.__name__)
async def test_a_non_failover_error_is_all_providers_failed_without_another_call(
    redis: RedisClient, error: type[perr.ProviderError]
) -> None:
    s = stack(redis)
    s.fakes["a"].on_create(error("a", "an answer we cannot place"))
    with pytest.raises(AllProvidersFailed) as raised:
        await submit(s, "a", "b")
    assert outcomes(raised.value.attempts) == [f"a:{error.outcome}"]
    assert s.fakes["b"].creates == []


async def test_max_attempts_caps_the_creates(redis: RedisClient) -> None:
    s = stack(redis, max_attempts=2)
    s.fakes["a"].on_create(perr.Unreachable("a", "connection refused"))
    s.fakes["b"].on_create(perr.UpstreamServerError("b", "502 bad gateway"))
    with pytest.raises(AllProvidersFailed) as raised:
        await submit(s, "a", "b", "c")
    assert outcomes(raised.value.attempts) == ["a:upstream_unreachable", "b:upstream_unavailable"]
    assert s.fakes["c"].creates == []


async def test_every_candidate_failing_is_all_providers_failed_carrying_every_attempt(
    redis: RedisClient,
) -> None:
    s = stack(redis)
    s.fakes["a"].on_create(perr.Unreachable("a", "connection refused"))
    s.fakes["b"].on_create(perr.RateLimited("b", "slow down", retry_after_s=30))
    s.fakes["c"].on_create(perr.AccountError("c", "out of credits", http_status=402))
    with pytest.raises(AllProvidersFailed) as raised:
        await submit(s, "a", "b", "c")
    assert raised.value.status == 502
    assert outcomes(raised.value.attempts) == [
        "a:upstream_unreachable", "b:rate_limited", "c:account_error",
    ]  # fmt: skip
    assert [a.message for a in raised.value.attempts or []] == [
        "connection refused", "slow down", "out of credits",
    ]  # fmt: skip


async def half_open(s: Stack, name: str) -> None:
    """Open ``name``'s circuit (one failure opens it here) and let its cooldown pass."""
    await s.health().record(name, perr.Unreachable(name, "connection refused"))
    s.clock.now += s.settings.routing.circuit.cooldown_s + 1


async def test_a_half_open_candidate_gets_one_trial_create(redis: RedisClient) -> None:
    s = stack(redis)
    await half_open(s, "a")
    s.fakes["a"].on_create(accepted("up-a-1"))
    placement = await submit(s, "a", "b")
    assert placement.candidate.name == "a"


async def test_a_half_open_candidate_whose_lease_is_held_elsewhere_is_skipped(
    redis: RedisClient,
) -> None:
    s = stack(redis)
    await half_open(s, "a")
    assert await s.health().acquire("a", lease_s=60)  # another instance's trial call
    s.fakes["b"].on_create(accepted("up-b-1"))
    placement = await submit(s, "a", "b")
    assert placement.candidate.name == "b"
    assert outcomes(placement.attempts) == ["b:accepted"]
    assert s.fakes["a"].creates == []


async def test_a_half_open_trial_in_flight_sends_a_concurrent_request_elsewhere(
    redis: RedisClient,
) -> None:
    s = stack(redis)
    await half_open(s, "a")
    started, answer = asyncio.Event(), asyncio.Event()
    s.fakes["a"].on_create(Scripted(accepted("up-a-1"), gate=answer, started=started))
    s.fakes["b"].on_create(accepted("up-b-1"))
    trial = asyncio.create_task(submit(s, "a", "b"))
    await asyncio.wait_for(started.wait(), 5)
    meanwhile = await submit(s, "a", "b")
    answer.set()
    assert (await trial).candidate.name == "a"
    assert meanwhile.candidate.name == "b"
    assert len(s.fakes["a"].creates) == 1


async def test_nothing_tried_is_providers_unavailable(redis: RedisClient) -> None:
    s = stack(redis)
    for name in ("a", "b"):
        await half_open(s, name)
        assert await s.health().acquire(name, lease_s=60)
    with pytest.raises(ProvidersUnavailable) as raised:
        await submit(s, "a", "b")
    assert raised.value.status == 503
    assert raised.value.headers == {"Retry-After": "1"}
    assert s.fakes["a"].creates == s.fakes["b"].creates == []


async def test_before_attempt_runs_before_each_create_with_the_attempts_so_far(
    redis: RedisClient,
) -> None:
    s = stack(redis)
    s.fakes["a"].on_create(perr.Unreachable("a", "connection refused"))
    s.fakes["b"].on_create(perr.UpstreamServerError("b", "503"))
    s.fakes["c"].on_create(accepted("up-c-1"))
    before = BeforeAttempts(s.fakes)
    await s.router.submit(candidates("a", "b", "c"), JOB, before)
    assert before.seen == [
        ("a", [], 0),
        ("b", ["a:upstream_unreachable"], 1),
        ("c", ["a:upstream_unreachable", "b:upstream_unavailable"], 2),
    ]


async def test_a_before_attempt_that_fails_sends_no_create(redis: RedisClient) -> None:
    s = stack(redis)
    s.fakes["a"].on_create(perr.Unreachable("a", "connection refused"))

    async def redis_down_on_the_second(candidate: Candidate, done: Sequence[Attempt]) -> None:
        if done:
            raise StoreUnavailable("redis: ConnectionError")

    with pytest.raises(StoreUnavailable):
        await s.router.submit(candidates("a", "b"), JOB, redis_down_on_the_second)
    assert s.fakes["b"].creates == []


async def test_each_provider_gets_its_own_callback_url(redis: RedisClient) -> None:
    s = stack(redis)
    s.fakes["a"].on_create(perr.Unreachable("a", "connection refused"))
    s.fakes["b"].on_create(accepted("up-b-1"))
    await submit(s, "a", "b", callback_url=lambda name: f"https://gw.example/callbacks/{name}/t")
    assert [j.callback_url for j in s.fakes["a"].creates] == ["https://gw.example/callbacks/a/t"]
    assert [j.callback_url for j in s.fakes["b"].creates] == ["https://gw.example/callbacks/b/t"]
    assert s.fakes["b"].creates[0].model_copy(update={"callback_url": None}) == JOB


async def test_without_a_callback_url_the_job_goes_out_as_given(redis: RedisClient) -> None:
    s = stack(redis)
    s.fakes["a"].on_create(accepted("up-a-1"))
    await submit(s, "a")
    assert s.fakes["a"].creates == [JOB]
