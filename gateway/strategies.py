"""Routing strategies: pure functions that order eligible candidates, best first.

Each takes the candidates (already filtered for eligibility) and returns a new list. None of
them calls anything or reads a clock; randomness comes in as an argument.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """A provider that can serve one request, with what the strategies weigh."""

    name: str
    price_usd: float
    priority: int
    weight: float
    file_order: int
    success_rate: float = 1.0
    """Recent share of good outcomes, 0–1; 1.0 when nothing is known yet."""
    latency_ms: float | None = None
    """Recent median create latency; None when nothing is known yet."""


def _latency(c: Candidate) -> float:
    # Unknown latency counts as the best, so a provider with no traffic yet gets tried and
    # measured, instead of losing every tie for good.
    return c.latency_ms if c.latency_ms is not None else 0.0


def cheapest(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The request's exact price first; ties by health, then file order."""
    return sorted(
        candidates, key=lambda c: (c.price_usd, -c.success_rate, _latency(c), c.file_order)
    )


def healthiest(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Recent success rate, then latency; ties by price, then file order."""
    return sorted(
        candidates, key=lambda c: (-c.success_rate, _latency(c), c.price_usd, c.file_order)
    )


def priority(candidates: Sequence[Candidate], preferred: Sequence[str] | None) -> list[Candidate]:
    """The request's own order when it gives one, else ascending ``priority``, then file order."""
    if preferred:
        rank = {name: i for i, name in enumerate(preferred)}
        return sorted(candidates, key=lambda c: (rank.get(c.name, len(rank)), c.file_order))
    return sorted(candidates, key=lambda c: (c.priority, c.file_order))


def weighted(candidates: Sequence[Candidate], rng: random.Random) -> list[Candidate]:
    """A random order where each provider comes first with probability ∝ its weight.

    Efraimidis–Spirakis: sort by ``u ** (1 / w)`` descending; weight 0 goes last.
    """

    def key(c: Candidate) -> tuple[int, float]:
        if c.weight <= 0:
            return (1, float(c.file_order))
        return (0, -(rng.random() ** (1.0 / c.weight)))

    return sorted(candidates, key=key)


Strategy = Callable[[Sequence[Candidate], Sequence[str] | None, random.Random], list[Candidate]]

STRATEGIES: dict[str, Strategy] = {
    "cheapest": lambda cands, _preferred, _rng: cheapest(cands),
    "healthiest": lambda cands, _preferred, _rng: healthiest(cands),
    "priority": lambda cands, preferred, _rng: priority(cands, preferred),
    "weighted": lambda cands, _preferred, rng: weighted(cands, rng),
}
