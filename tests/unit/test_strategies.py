from __future__ import annotations

import random
from collections import Counter

from gateway.strategies import Candidate, cheapest, healthiest, priority, weighted


def cand(name: str, price: float, **kw: object) -> Candidate:
    defaults: dict[str, object] = {"priority": 1, "weight": 1.0, "file_order": 0}
    defaults.update(kw)
    return Candidate(name=name, price_usd=price, **defaults)  # type: ignore[arg-type]


def names(cands: list[Candidate]) -> list[str]:
    return [c.name for c in cands]


def test_cheapest_orders_by_exact_price() -> None:
    cands = [cand("a", 0.50, file_order=0), cand("b", 0.45, file_order=1)]
    assert names(cheapest(cands)) == ["b", "a"]


def test_cheapest_breaks_price_ties_by_health_then_file_order() -> None:
    cands = [
        cand("a", 0.30, file_order=0, success_rate=0.5),
        cand("b", 0.30, file_order=1, success_rate=0.9),
        cand("c", 0.30, file_order=2, success_rate=0.9),
    ]
    assert names(cheapest(cands)) == ["b", "c", "a"]


def test_healthiest_prefers_success_rate_then_latency_then_price() -> None:
    cands = [
        cand("a", 0.30, success_rate=0.8, latency_ms=10),
        cand("b", 0.50, success_rate=0.99, latency_ms=90),
        cand("c", 0.40, success_rate=0.99, latency_ms=50),
    ]
    assert names(healthiest(cands)) == ["c", "b", "a"]


def test_priority_uses_the_request_order_when_given() -> None:
    cands = [cand("a", 0.3, priority=1, file_order=0), cand("b", 0.3, priority=2, file_order=1)]
    assert names(priority(cands, ["b", "a"])) == ["b", "a"]
    assert names(priority(cands, None)) == ["a", "b"]


def test_priority_breaks_ties_by_file_order() -> None:
    cands = [cand("x", 0.3, priority=1, file_order=1), cand("y", 0.3, priority=1, file_order=0)]
    assert names(priority(cands, None)) == ["y", "x"]


def test_weighted_puts_each_first_in_proportion_to_weight() -> None:
    cands = [cand("a", 0.3, weight=3.0), cand("b", 0.3, weight=1.0, file_order=1)]
    rng = random.Random(7)
    firsts = Counter(weighted(cands, rng)[0].name for _ in range(4000))
    assert 0.70 < firsts["a"] / 4000 < 0.80


def test_weighted_never_puts_zero_weight_first() -> None:
    cands = [cand("off", 0.3, weight=0.0), cand("on", 0.3, weight=0.1, file_order=1)]
    rng = random.Random(1)
    assert all(weighted(cands, rng)[0].name == "on" for _ in range(200))
