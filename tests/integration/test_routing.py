"""Strategies, overrides, circuits and ``GET /v1/providers`` through the real app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.integration.conftest import IMAGE, Harness

BODY = {"prompt": "a tram at night", "image": IMAGE}


async def test_request_strategy_and_allow_list_order_override_the_price(harness: Harness) -> None:
    task = (
        await harness.create(
            {**BODY, "routing": {"strategy": "priority", "providers": ["apiinone", "runapi"]}}
        )
    ).json()
    assert task["provider"] == "apiinone"
    assert task["price_usd"] == 0.32


async def test_configured_priority_strategy_uses_priorities(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(routing={"strategy": "priority"})
    assert h.settings.providers["apiinone"].priority == h.settings.providers["runapi"].priority
    task = (await h.create(BODY)).json()
    assert task["provider"] == "runapi"  # equal priority: file order


async def test_max_price_filters_out_the_dearer_provider(harness: Harness) -> None:
    task = (
        await harness.create({**BODY, "duration": 10, "routing": {"max_price_usd": 0.46}})
    ).json()
    assert task["provider"] == "apiinone"
    response = await harness.create({**BODY, "routing": {"providers": ["apiinone"],
                                                         "max_price_usd": 0.31}})  # fmt: skip
    assert response.status_code == 422
    assert response.json()["code"] == "unsupported"


async def test_open_circuits_everywhere_answer_503_with_retry_after(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(
        routing={"circuit": {"failures_to_open": 1, "cooldown_s": 30}}
    )
    h.runapi.update_knobs({"create_fault": "http_500"})
    h.apiinone.update_knobs({"create_fault": "http_503"})
    assert (await h.create(BODY)).json()["code"] == "all_providers_failed"
    calls = h.upstream_creates
    response = await h.create(BODY)
    assert response.status_code == 503
    assert response.json()["code"] == "providers_unavailable"
    assert 1 <= int(response.headers["retry-after"]) <= 30
    assert h.upstream_creates == calls
    ready = await h.client.get("/readyz")
    assert ready.status_code == 503


async def test_open_circuit_is_skipped_without_a_call(harness_factory: Callable[..., Any]) -> None:
    h: Harness = await harness_factory(routing={"circuit": {"failures_to_open": 2}})
    h.runapi.update_knobs({"create_fault": "html_502"})
    for _ in range(2):
        assert (await h.create(BODY)).json()["provider"] == "apiinone"
    assert h.runapi.counters.create_calls == 2
    task = (await h.create(BODY)).json()
    assert [a["provider"] for a in task["attempts"]] == ["apiinone"]
    assert h.runapi.counters.create_calls == 2


async def test_rate_limited_provider_is_skipped_for_its_retry_after(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory()
    h.runapi.update_knobs({"create_fault": "http_429", "retry_after": "60"})
    first = (await h.create(BODY)).json()
    assert [a["outcome"] for a in first["attempts"]] == ["rate_limited", "accepted"]
    await h.create(BODY)
    assert h.runapi.counters.create_calls == 1


async def test_max_attempts_caps_the_failover(harness_factory: Callable[..., Any]) -> None:
    h: Harness = await harness_factory(routing={"max_attempts": 1})
    h.runapi.update_knobs({"create_fault": "http_500"})
    response = await h.create(BODY)
    assert response.status_code == 502
    assert len(response.json()["attempts"]) == 1
    assert h.apiinone.counters.create_calls == 0


async def test_providers_lists_circuits_health_and_prices(harness: Harness) -> None:
    await harness.create(BODY)
    listing = (await harness.client.get("/v1/providers", headers=harness.headers())).json()
    by_name = {p["name"]: p for p in listing["data"]}
    assert set(by_name) == {"runapi", "apiinone"}
    runapi = by_name["runapi"]
    assert runapi["kind"] == "runapi"
    assert runapi["enabled"] is True
    assert runapi["circuit"] == "closed"
    assert runapi["success_rate"] == 1.0
    assert runapi["latency_ms"]["p50"] is not None
    assert runapi["prices_usd"]["standard"]["6s_768P"] == 0.30
    assert by_name["apiinone"]["success_rate"] is None


async def test_providers_needs_a_key(harness: Harness) -> None:
    assert (await harness.client.get("/v1/providers")).status_code == 401


async def test_failed_generations_count_against_the_provider(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(
        routing={"circuit": {"failures_to_open": 2}}, status={"resubmit_failed": 0}
    )
    for _ in range(2):
        task_id = (await h.create({**BODY, "prompt": "x [sandbox:fail]"})).json()["id"]
        assert (await h.read(task_id)).json()["status"] == "failed"
    task = (await h.create(BODY)).json()
    assert task["provider"] == "apiinone"
