"""``dashboards/gateway.json``: importable, and every query parses (``promql-parser``, a real
PromQL parser) and reads metrics and labels that ``gateway/metrics.py`` exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from dashboards.prometheus import substitute
from tests.unit.promql_names import exported, reads

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "gateway.json"
VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "provider": ".*"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def queries() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def test_dashboard_is_an_importable_grafana_dashboard() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36
    assert board["uid"]
    assert board["title"]
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]


def test_dashboard_has_the_panels_operators_look_for() -> None:
    text = json.dumps(dashboard())
    for needle in (
        "gateway_http_requests_total",
        "gateway_upstream_request_duration_seconds_bucket",
        "gateway_spend_usd_total",
        "gateway_failovers_total",
        "gateway_circuit_state",
        "gateway_tasks_finished_total",
        "gateway_task_time_to_finish_seconds_bucket",
        "gateway_client_spend_usd_total",
        "gateway_spend_at_risk_usd_total",
        "gateway_client_budget_used_usd",
        "gateway_provider_balance_usd",
        "gateway_price_routing_saving_usd_total",
        "gateway_budget_refusals_total",
        "gateway_video_copies_total",
        "gateway_video_copy_bytes_total",
        "gateway_video_copy_duration_seconds_bucket",
        "gateway_video_served_bytes_total",
    ):
        assert needle in text
    quantiles = {
        q for _, expr in queries() for q in re.findall(r"histogram_quantile\(([\d.]+)", expr)
    }
    assert {"0.5", "0.9", "0.99"} <= quantiles


@pytest.mark.parametrize(("title", "expr"), queries())
def test_every_query_reads_exported_metrics_and_labels(title: str, expr: str) -> None:
    metrics, labels = reads(substitute(expr, VARIABLES))  # promql-parser: raises if invalid
    names = exported()
    assert metrics, f"{title}: reads no metric"
    for metric in metrics:
        assert metric in names, f"{title}: {metric} is not exported"
        assert labels <= names[metric], f"{title}: unknown label in {expr}"
    assert set(re.findall(r"gateway_[a-z0-9_]+", expr)) <= set(names)


def test_variables_used_by_queries_are_defined() -> None:
    defined = {v["name"] for v in dashboard()["templating"]["list"]}
    for title, expr in queries():
        for name in re.findall(r"\$(\w+)", expr):
            assert name.startswith("__") or name in defined, f"{title}: ${name}"
