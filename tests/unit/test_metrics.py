"""``gateway.metrics`` on its own: names, initial series, bounded labels, recording methods."""

from __future__ import annotations

import pytest

from gateway import __version__
from gateway.health import Circuit
from gateway.metrics import CONTENT_TYPE, ERROR_OUTCOMES, FAILOVER_REASONS, Metrics
from tests.scrape import Scrape

PROVIDERS = ["runapi", "apiinone"]


def scrape(metrics: Metrics) -> Scrape:
    return Scrape(metrics.exposition().decode())


def test_every_metric_follows_the_naming_conventions() -> None:
    families = list(Metrics(PROVIDERS).registry.collect())
    kinds = {f.name: f.type for f in families}
    assert kinds == {
        "gateway_build_info": "gauge",
        "gateway_http_requests": "counter",
        "gateway_http_request_duration_seconds": "histogram",
        "gateway_upstream_calls": "counter",
        "gateway_upstream_request_duration_seconds": "histogram",
        "gateway_failovers": "counter",
        "gateway_ambiguous_submits": "counter",
        "gateway_resubmissions": "counter",
        "gateway_unrecorded_upstream_tasks": "counter",
        "gateway_tasks_created": "counter",
        "gateway_spend_usd": "counter",
        "gateway_spend_at_risk_usd": "counter",
        "gateway_price_routing_saving_usd": "counter",
        "gateway_client_spend_usd": "counter",
        "gateway_budget_refusals": "counter",
        "gateway_provider_balance_usd": "gauge",
        "gateway_client_budget_usd": "gauge",
        "gateway_client_budget_used_usd": "gauge",
        "gateway_tasks_finished": "counter",
        "gateway_task_time_to_finish_seconds": "histogram",
        "gateway_circuit_state": "gauge",
        "gateway_redis_errors": "counter",
        "gateway_webhook_deliveries": "counter",
        "gateway_config_reloads": "counter",
        "gateway_video_copies": "counter",
        "gateway_video_copy_bytes": "counter",
        "gateway_video_copy_duration_seconds": "histogram",
        "gateway_video_served_bytes": "counter",
        "gateway_video_deletions": "counter",
    }
    for family in families:
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name in (f"{family.name}_total", f"{family.name}_created")


def test_build_info_carries_the_version() -> None:
    assert scrape(Metrics(PROVIDERS)).value("gateway_build_info", version=__version__) == 1


def test_known_series_exist_at_zero_before_any_event() -> None:
    s = scrape(Metrics(PROVIDERS))
    for provider in PROVIDERS:
        for operation, ok in (("create", "accepted"), ("status", "ok")):
            for outcome in (ok, *ERROR_OUTCOMES):
                labels = {"provider": provider, "operation": operation, "outcome": outcome}
                assert s.value("gateway_upstream_calls_total", **labels) == 0
            assert (
                s.value(
                    "gateway_upstream_request_duration_seconds_count",
                    provider=provider,
                    operation=operation,
                )
                == 0
            )
        assert s.value("gateway_spend_usd_total", provider=provider) == 0
        assert s.value("gateway_ambiguous_submits_total", provider=provider) == 0
        assert s.value("gateway_circuit_state", provider=provider) == 0
        for status in ("completed", "failed"):
            assert s.value("gateway_tasks_finished_total", provider=provider, status=status) == 0
        for tier in ("standard", "pro"):
            for resolution in ("768P", "1080P"):
                labels = {"provider": provider, "tier": tier, "resolution": resolution}
                assert s.value("gateway_tasks_created_total", **labels) == 0
    for reason in FAILOVER_REASONS:
        labels = {"from_provider": "runapi", "to_provider": "apiinone", "reason": reason}
        assert s.value("gateway_failovers_total", **labels) == 0
    assert not s.nonzero("gateway_failovers_total", "from_provider", "to_provider", "reason")
    for operation in ("ping", "health", "tasks", "idempotency", "polling", "webhooks"):
        assert s.value("gateway_redis_errors_total", operation=operation) == 0
    for outcome in ("delivered", "rejected", "unreachable", "abandoned"):
        assert s.value("gateway_webhook_deliveries_total", outcome=outcome) == 0


def test_no_failover_series_from_a_provider_to_itself() -> None:
    s = scrape(Metrics(PROVIDERS))
    assert all(
        x.labels["from_provider"] != x.labels["to_provider"]
        for x in s
        if x.name == "gateway_failovers_total"
    )


def test_failover_reasons_are_the_outcomes_that_may_move_on() -> None:
    assert set(FAILOVER_REASONS) == {
        "upstream_unreachable",
        "upstream_unavailable",
        "rate_limited",
        "account_error",
        "upstream_error",  # a bare NotTaken
        "outcome_unknown",
    }


def test_each_instance_has_a_registry_of_its_own() -> None:
    first, second = Metrics(PROVIDERS), Metrics(PROVIDERS)
    first.ambiguous_submit("runapi", 0.30)
    assert scrape(first).value("gateway_ambiguous_submits_total", provider="runapi") == 1
    assert scrape(second).value("gateway_ambiguous_submits_total", provider="runapi") == 0


def test_a_created_task_counts_once_and_spends_nothing_until_it_completes() -> None:
    m = Metrics(PROVIDERS)
    m.task_created("runapi", "standard", "768P")
    m.task_created("runapi", "pro", "1080P")
    m.task_created("apiinone", "standard", "768P")
    s = scrape(m)
    assert s.nonzero("gateway_tasks_created_total", "provider", "tier", "resolution") == {
        ("runapi", "standard", "768P"): 1,
        ("runapi", "pro", "1080P"): 1,
        ("apiinone", "standard", "768P"): 1,
    }
    assert s.nonzero("gateway_spend_usd_total", "provider") == {}


def test_a_completed_task_adds_its_price_to_the_provider_and_client_spend() -> None:
    m = Metrics(PROVIDERS, clients=["demo", "ops"])
    m.spent("runapi", "demo", 0.30)
    m.spent("runapi", "demo", 0.80)
    m.spent("apiinone", "ops", 0.32)
    m.spent("apiinone", "stranger", 0.45)  # not a configured client: "other", never its name
    s = scrape(m)
    assert s.value("gateway_spend_usd_total", provider="runapi") == pytest.approx(1.10)
    assert s.value("gateway_spend_usd_total", provider="apiinone") == pytest.approx(0.77)
    assert s.value("gateway_client_spend_usd_total", client="demo") == pytest.approx(1.10)
    assert s.value("gateway_client_spend_usd_total", client="ops") == pytest.approx(0.32)
    assert s.value("gateway_client_spend_usd_total", client="other") == pytest.approx(0.45)


def test_an_ambiguous_submit_puts_its_price_at_risk() -> None:
    m = Metrics(PROVIDERS)
    m.ambiguous_submit("runapi", 0.45)
    s = scrape(m)
    assert s.value("gateway_ambiguous_submits_total", provider="runapi") == 1
    assert s.value("gateway_spend_at_risk_usd_total", provider="runapi") == pytest.approx(0.45)
    assert s.value("gateway_spend_usd_total", provider="runapi") == 0


def test_money_series_by_client_start_at_zero_and_balances_only_once_known() -> None:
    m = Metrics(PROVIDERS, clients=["demo"])
    s = scrape(m)
    assert s.value("gateway_client_spend_usd_total", client="demo") == 0
    assert s.value("gateway_budget_refusals_total", client="demo") == 0
    assert not [x for x in s if x.name == "gateway_provider_balance_usd"]
    m.provider_balance("runapi", 12.5)
    m.budget_refusal("demo")
    s = scrape(m)
    assert s.value("gateway_provider_balance_usd", provider="runapi") == 12.5
    assert s.value("gateway_budget_refusals_total", client="demo") == 1


def test_client_names_follow_the_settings_a_reload_brings_and_stay_bounded() -> None:
    m = Metrics(PROVIDERS, clients=["demo"])
    m.spent("runapi", "late", 0.30)
    m.follow_clients(["demo", "late"])
    s = scrape(m)
    assert s.value("gateway_client_spend_usd_total", client="late") == 0
    assert s.value("gateway_budget_refusals_total", client="late") == 0
    m.spent("runapi", "late", 0.45)
    m.budget_refusal("late")
    m.follow_clients(["late"])  # a client removed from the file keeps its name and totals
    m.spent("runapi", "demo", 0.10)
    m.spent("runapi", "guessed", 0.20)
    s = scrape(m)
    assert s.value("gateway_client_spend_usd_total", client="late") == pytest.approx(0.45)
    assert s.value("gateway_budget_refusals_total", client="late") == 1
    assert s.value("gateway_client_spend_usd_total", client="demo") == pytest.approx(0.10)
    assert s.value("gateway_client_spend_usd_total", client="other") == pytest.approx(0.50)
    clients = {x.labels["client"] for x in s if x.name == "gateway_client_spend_usd_total"}
    assert clients == {"demo", "late", "other"}


def test_a_finished_task_counts_by_status_and_observes_its_time_to_finish() -> None:
    m = Metrics(PROVIDERS)
    m.task_finished("runapi", "completed", 42.0)
    m.task_finished("runapi", "failed", 7.0)
    s = scrape(m)
    assert s.nonzero("gateway_tasks_finished_total", "provider", "status") == {
        ("runapi", "completed"): 1,
        ("runapi", "failed"): 1,
    }
    bucket = "gateway_task_time_to_finish_seconds_bucket"
    assert s.value(bucket, provider="runapi", status="completed", le="30.0") == 0
    assert s.value(bucket, provider="runapi", status="completed", le="45.0") == 1
    assert s.value(bucket, provider="runapi", status="failed", le="10.0") == 1
    assert (
        s.value("gateway_task_time_to_finish_seconds_sum", provider="runapi", status="completed")
        == 42.0
    )


def test_upstream_calls_count_by_outcome_and_observe_latency() -> None:
    m = Metrics(PROVIDERS)
    m.upstream_call("runapi", "create", "accepted", 0.2)
    m.upstream_call("runapi", "create", "upstream_unavailable", 0.01)
    m.upstream_call("apiinone", "status", "ok", 0.05)
    s = scrape(m)
    assert s.nonzero("gateway_upstream_calls_total", "provider", "operation", "outcome") == {
        ("runapi", "create", "accepted"): 1,
        ("runapi", "create", "upstream_unavailable"): 1,
        ("apiinone", "status", "ok"): 1,
    }
    count = "gateway_upstream_request_duration_seconds_count"
    assert s.value(count, provider="runapi", operation="create") == 2
    bucket = "gateway_upstream_request_duration_seconds_bucket"
    assert s.value(bucket, provider="runapi", operation="create", le="0.005") == 0
    assert s.value(bucket, provider="runapi", operation="create", le="0.25") == 2


def test_latency_buckets_span_the_documented_ranges() -> None:
    s = scrape(Metrics(PROVIDERS))

    def bounds(name: str, **labels: str) -> list[float]:
        return sorted(
            float(x.labels["le"])
            for x in s
            if x.name == name and labels.items() <= x.labels.items()
        )

    create = bounds("gateway_upstream_request_duration_seconds_bucket", provider="runapi",
                    operation="create")  # fmt: skip
    assert (create[0], create[-2]) == (0.005, 60)
    finish = bounds("gateway_task_time_to_finish_seconds_bucket", provider="runapi",
                    status="completed")  # fmt: skip
    assert (finish[0], finish[-2]) == (5, 3600)


def test_a_failover_counts_from_to_and_reason() -> None:
    m = Metrics(PROVIDERS)
    m.failover("runapi", "apiinone", "rate_limited")
    s = scrape(m)
    assert s.nonzero("gateway_failovers_total", "from_provider", "to_provider", "reason") == {
        ("runapi", "apiinone", "rate_limited"): 1
    }


def test_circuit_states_are_numbered_closed_half_open_open() -> None:
    m = Metrics(PROVIDERS)
    m.circuit_state("runapi", Circuit.OPEN)
    m.circuit_state("apiinone", Circuit.HALF_OPEN)
    s = scrape(m)
    assert s.value("gateway_circuit_state", provider="runapi") == 2
    assert s.value("gateway_circuit_state", provider="apiinone") == 1
    m.circuit_state("runapi", Circuit.CLOSED)
    assert scrape(m).value("gateway_circuit_state", provider="runapi") == 0


def test_http_requests_are_labelled_by_route_template_and_unknown_routes_are_unmatched() -> None:
    m = Metrics(PROVIDERS)
    m.routes({"/v1/videos/{task_id}": {"GET"}})
    m.http_request("/v1/videos/{task_id}", "GET", 200, 0.01)
    m.http_request("/v1/videos/vid_secret", "get", 404, 0.01)
    m.http_request("/v1/videos/{task_id}", "BREW", 405, 0.01)
    s = scrape(m)
    assert s.nonzero("gateway_http_requests_total", "route", "method", "status") == {
        ("/v1/videos/{task_id}", "GET", "200"): 1,
        ("unmatched", "GET", "404"): 1,
        ("/v1/videos/{task_id}", "other", "405"): 1,
    }
    assert "vid_secret" not in s.text


def test_declared_routes_start_with_zero_durations() -> None:
    m = Metrics(PROVIDERS)
    m.routes({"/v1/videos": {"POST"}, "/schema": set()})
    s = scrape(m)
    count = "gateway_http_request_duration_seconds_count"
    assert s.value(count, route="/v1/videos", method="POST") == 0
    assert not [x for x in s if x.name == count and x.labels["route"] == "/schema"]


def test_label_values_outside_the_known_sets_become_other() -> None:
    m = Metrics(PROVIDERS)
    m.upstream_call("evil-provider", "create", "made-up outcome", 0.1)
    m.failover("runapi", "apiinone", "because")
    m.task_created("runapi", "platinum", "4K")
    m.task_finished("runapi", "in_progress", 1.0)
    s = scrape(m)
    assert s.value(
        "gateway_upstream_calls_total",
        provider="other",
        operation="create",
        outcome="upstream_error",
    ) == 1  # fmt: skip
    labels = {"from_provider": "runapi", "to_provider": "apiinone", "reason": "other"}
    assert s.value("gateway_failovers_total", **labels) == 1
    labels = {"provider": "runapi", "tier": "other", "resolution": "other"}
    assert s.value("gateway_tasks_created_total", **labels) == 1
    assert s.value("gateway_tasks_finished_total", provider="runapi", status="other") == 1
    for word in ("evil", "made-up", "because", "platinum", "4K", "in_progress"):
        assert word not in s.text


def test_redis_errors_and_webhook_deliveries_count_by_their_word() -> None:
    m = Metrics(PROVIDERS)
    m.redis_error("tasks")
    m.webhook_delivery("delivered")
    m.webhook_delivery("rejected")
    s = scrape(m)
    assert s.nonzero("gateway_redis_errors_total", "operation") == {("tasks",): 1}
    assert s.nonzero("gateway_webhook_deliveries_total", "outcome") == {
        ("delivered",): 1,
        ("rejected",): 1,
    }


def test_exposition_is_the_prometheus_text_format() -> None:
    assert CONTENT_TYPE.startswith("text/plain; version=")
    assert Metrics(PROVIDERS).exposition().startswith(b"# HELP ")


def test_stored_video_series_start_at_zero_and_count_copies_bytes_and_time() -> None:
    metrics = Metrics(PROVIDERS)
    s = scrape(metrics)
    for outcome in ("stored", "retried", "gave_up"):
        assert s.value("gateway_video_copies_total", outcome=outcome) == 0
    assert s.value("gateway_video_copy_bytes_total") == 0
    metrics.video_copy("retried")
    metrics.video_stored(5_000_000, 1.5)
    metrics.video_served(1_000)
    metrics.video_deletion("deleted")
    s = scrape(metrics)
    assert s.nonzero("gateway_video_copies_total", "outcome") == {("retried",): 1, ("stored",): 1}
    assert s.value("gateway_video_copy_bytes_total") == 5_000_000
    assert s.value("gateway_video_copy_duration_seconds_sum") == 1.5
    assert s.value("gateway_video_served_bytes_total") == 1_000
    assert s.value("gateway_video_deletions_total", outcome="deleted") == 1
