"""Routing: eligible providers → strategy → create, failing over only when it cannot bill twice.

The failover rule lives in the ProviderError tree (``providers/errors.py``): an error whose
class says the upstream did not take the task may be tried elsewhere; anything else stops here.
Each create call is logged and counted (outcome, latency), and so is each failover and each
ambiguous submit.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from gateway.balance import Balances
from gateway.config import ProviderConfig, RoutingSettings
from gateway.errors import (
    AllProvidersFailed,
    ContentRejected,
    InvalidRequest,
    ProvidersUnavailable,
    Unsupported,
    UpstreamOutcomeUnknown,
    UpstreamRejected,
)
from gateway.health import Circuit, Health, ProviderHealth
from gateway.live import LiveSettings
from gateway.metrics import Metrics
from gateway.schemas import Attempt, RoutingOverrides
from gateway.strategies import STRATEGIES, Candidate
from providers import errors as perr
from providers.base import Provider, Submitted, VideoJob

logger = logging.getLogger(__name__)

BeforeAttempt = Callable[[Candidate, Sequence[Attempt]], Awaitable[None]]
"""Called before each upstream create, with the attempts so far: the place to persist a trace."""


@dataclass(frozen=True)
class Route:
    """A configured provider and its adapter. ``config`` is the provider's settings at start
    (its address and timeouts); what a reload may change is read from the live settings."""

    name: str
    config: ProviderConfig
    adapter: Provider
    file_order: int


@dataclass(frozen=True)
class Placement:
    """Where a task went: the accepting candidate, its answer and every attempt made."""

    candidate: Candidate
    submitted: Submitted
    attempts: list[Attempt]


class Router:
    def __init__(
        self,
        routes: Sequence[Route],
        live: LiveSettings,
        health: Health,
        *,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
        balances: Balances | None = None,
    ) -> None:
        self._metrics = metrics if metrics is not None else Metrics([r.name for r in routes])
        self._balances = balances
        self._routes = {r.name: r for r in routes}
        self._live = live
        self._health = health
        self._rng = rng or random.Random()  # noqa: S311 - load spreading, not security

    @property
    def routes(self) -> Mapping[str, Route]:
        return self._routes

    @property
    def _settings(self) -> RoutingSettings:
        """The routing settings in force now (a reload may change them between requests)."""
        return self._live.settings.routing

    def _config(self, route: Route) -> ProviderConfig:
        """``route``'s provider settings in force now: prices, weight, priority, enabled."""
        return self._live.settings.providers.get(route.name, route.config)

    def adapter(self, name: str) -> Provider | None:
        route = self._routes.get(name)
        return route.adapter if route else None

    def served_models(self) -> set[str]:
        configs = [self._config(r) for r in self._routes.values()]
        return {m for cfg in configs if cfg.enabled for m in cfg.served_models}

    async def plan(self, job: VideoJob, overrides: RoutingOverrides | None) -> list[Candidate]:
        """The eligible candidates, best first. Refuses before any upstream call:
        ``unsupported`` when no configured provider serves the request, ``providers_unavailable``
        when every one that does has an open circuit."""
        eligible = self._eligible(job, overrides)
        snapshot = await self._health.snapshot()
        now = self._health.now()
        usable = [
            _with_health(c, snapshot.get(c.name))
            for c in eligible
            if c.name not in snapshot or snapshot[c.name].circuit(now) is not Circuit.OPEN
        ]
        if not usable:
            wait = min(snapshot[c.name].open_until for c in eligible) - now
            raise ProvidersUnavailable(
                f"every eligible provider is cooling down ({', '.join(c.name for c in eligible)})",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        usable = self._funded(usable)
        allow = overrides.providers if overrides and overrides.providers else None
        strategy = (overrides.strategy if overrides else None) or self._settings.strategy
        return STRATEGIES[strategy](usable, allow, self._rng)

    def _funded(self, candidates: list[Candidate]) -> list[Candidate]:
        """Leave out accounts whose known balance cannot pay (``gateway.balance``)."""
        if self._balances is None:
            return candidates
        balances = self._balances
        funded = [c for c in candidates if balances.allows(c.name, c.price_usd)]
        if not funded:
            raise ProvidersUnavailable(
                "every eligible provider's account balance is below the price or its minimum "
                f"({', '.join(c.name for c in candidates)})",
                headers={"Retry-After": str(max(1, math.ceil(balances.retry_after_s())))},
            )
        return funded

    def _eligible(self, job: VideoJob, overrides: RoutingOverrides | None) -> list[Candidate]:
        if job.model not in self.served_models():
            served = ", ".join(sorted(self.served_models()))
            raise InvalidRequest.field(
                "model", f"no provider serves {job.model!r}; served: {served}"
            )
        allow = overrides.providers if overrides and overrides.providers else None
        if allow:
            unknown = [n for n in allow if n not in self._routes]
            if unknown:
                raise InvalidRequest.field("routing.providers", f"unknown providers {unknown}")
        max_price = overrides.max_price_usd if overrides else None
        candidates: list[Candidate] = []
        for route in self._routes.values():
            cfg = self._config(route)
            price = cfg.price(job.model, job.tier, job.price_key)
            if (
                not cfg.enabled
                or job.model not in cfg.served_models
                or job.mode not in cfg.modes(job.model)
                or (_is_data_uri(job.image) and not cfg.takes_data_uri_images)
                or price is None
                or (allow is not None and route.name not in allow)
                or (max_price is not None and price > max_price)
            ):
                continue
            candidates.append(
                Candidate(
                    name=route.name,
                    price_usd=price,
                    priority=cfg.priority,
                    weight=cfg.weight,
                    file_order=route.file_order,
                )
            )
        if not candidates:
            raise Unsupported(self._why_unsupported(job, allow, max_price))
        return candidates

    def _why_unsupported(
        self, job: VideoJob, allow: Sequence[str] | None, max_price: float | None
    ) -> str:
        what = f"{job.model} {job.tier} {job.mode} {job.duration}s {job.resolution}"
        if _is_data_uri(job.image):
            what += " with a data-URI image (send an https URL)"
        limits = []
        if allow:
            limits.append(f"among {list(allow)}")
        if max_price is not None:
            limits.append(f"at or under ${max_price:.2f}")
        return f"no enabled provider serves {what}" + (" " + " ".join(limits) if limits else "")

    async def submit(
        self,
        candidates: Sequence[Candidate],
        job: VideoJob,
        before_attempt: BeforeAttempt,
        callback_url: Callable[[str], str] | None = None,
    ) -> Placement:
        """Create the task with the first candidate that takes it.

        Moves on only after a failure that proves the upstream created nothing (or after an
        unanswered request, when ``failover_on_timeout`` allows it). ``callback_url`` gives
        each provider its own callback address.
        """
        attempts: list[Attempt] = []
        for candidate in candidates:
            if len(attempts) >= self._settings.max_attempts:
                break
            route = self._routes[candidate.name]
            if not await self._health.acquire(candidate.name, lease_s=_lease_s(route)):
                continue  # half-open, and another request is the one let through
            await before_attempt(candidate, attempts)
            if attempts:
                self._metrics.failover(attempts[-1].provider, candidate.name, attempts[-1].outcome)
            started = time.perf_counter()
            try:
                submitted = await route.adapter.create(
                    job if callback_url is None
                    else job.model_copy(update={"callback_url": callback_url(candidate.name)})
                )  # fmt: skip
            except perr.ProviderError as exc:
                attempts.append(_attempt(candidate.name, exc.outcome, started, exc.message))
                self._observe(candidate.name, exc.outcome, started, exc.http_status)
                if isinstance(exc, perr.OutcomeUnknown):
                    self._metrics.ambiguous_submit(candidate.name, candidate.price_usd)
                await self._health.record(candidate.name, exc)
                self._stop_unless_safe(exc, attempts)
                continue
            accepted = _attempt(candidate.name, "accepted", started, None)
            attempts.append(accepted)
            self._observe(candidate.name, accepted.outcome, started, None)
            await self._health.record(candidate.name, None, latency_ms=accepted.latency_ms)
            if self._balances is not None:
                self._balances.spent(candidate.name, candidate.price_usd)
            return Placement(candidate=candidate, submitted=submitted, attempts=attempts)
        if not attempts:
            raise ProvidersUnavailable(
                "every eligible provider is cooling down", headers={"Retry-After": "1"}
            )
        raise AllProvidersFailed(f"{len(attempts)} attempt(s), none accepted", attempts=attempts)

    def _observe(
        self, provider: str, outcome: str, started: float, http_status: int | None
    ) -> None:
        """One log line and the metrics of one upstream create call."""
        seconds = time.perf_counter() - started
        self._metrics.upstream_call(provider, "create", outcome, seconds)
        logger.log(
            logging.INFO if outcome == "accepted" else logging.WARNING,
            "upstream create accepted" if outcome == "accepted" else "upstream create failed",
            extra={"provider": provider, "operation": "create", "outcome": outcome,
                   "latency_ms": round(seconds * 1000, 1), "http_status": http_status},
        )  # fmt: skip

    def _stop_unless_safe(self, exc: perr.ProviderError, attempts: list[Attempt]) -> None:
        if isinstance(exc, perr.OutcomeUnknown):
            # Only an unanswered request may be tried elsewhere, never a task known to be taken.
            if self._settings.failover_on_timeout and exc.taken is None:
                return
            what = "did not answer" if exc.taken is None else f"answered unusably: {exc.message}"
            raise UpstreamOutcomeUnknown(
                f"{exc.provider} received the request but {what}; it may have created "
                "the task, so it was not sent elsewhere",
                attempts=attempts,
            )
        if isinstance(exc, perr.ContentRejected):
            raise ContentRejected(exc.message, attempts=attempts)
        if isinstance(exc, perr.RequestRejected):
            raise UpstreamRejected(
                f"{exc.provider} refused the translated request: {exc.message}", attempts=attempts
            )
        if not exc.failover:
            raise AllProvidersFailed(exc.message, attempts=attempts)


def _is_data_uri(image: str | None) -> bool:
    return image is not None and image.startswith("data:")


def _with_health(candidate: Candidate, health: ProviderHealth | None) -> Candidate:
    if health is None:
        return candidate
    return replace(
        candidate,
        success_rate=health.success_rate if health.success_rate is not None else 1.0,
        latency_ms=health.latency_p50_ms,
    )


def _lease_s(route: Route) -> float:
    """How long a half-open trial call holds its lease: as long as the call can take."""
    return route.config.connect_timeout_s + route.config.timeout_s + 5.0


def _attempt(provider: str, outcome: str, started: float, message: str | None) -> Attempt:
    latency_ms = round((time.perf_counter() - started) * 1000)
    return Attempt(
        provider=provider,
        outcome=outcome,
        latency_ms=latency_ms,
        message=message[:300] if message else None,
    )
