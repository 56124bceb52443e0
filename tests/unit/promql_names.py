"""What a PromQL query reads, from a real PromQL parser (``promql-parser``), and what the
gateway exports (``gateway/metrics.py``): the dashboard's and the alert rules' tests compare
the two."""

from __future__ import annotations

from collections.abc import Mapping

import promql_parser as promql

from gateway.metrics import Metrics

PLANNED: Mapping[str, set[str]] = {
    "gateway_video_copies_total": {"outcome"},
    "gateway_video_copy_bytes_total": set(),
    "gateway_video_served_bytes_total": set(),
    "gateway_spend_at_risk_usd_total": {"provider"},
    "gateway_client_spend_usd_total": {"client"},
    "gateway_budget_refusals_total": {"client"},
    "gateway_provider_balance_usd": {"provider"},
}
"""Metrics whose names and labels are fixed for every helper (HELPERS.md) but that other
changes are still adding to ``gateway/metrics.py``; once exported, the export wins."""


def exported() -> dict[str, set[str]]:
    """Every sample name the gateway exports → the labels it carries."""
    metrics = Metrics(["runapi", "apiinone"], clients=["demo"])
    metrics.http_request("unmatched", "GET", 404, 0.01)  # HTTP series start with a request
    metrics.budget("demo", "day", 1.0, 10.0)  # budget and balance series start once known
    metrics.provider_balance("runapi", 100.0)
    names: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        labels = {label for s in family.samples for label in s.labels} - {"le"}
        if family.type == "counter":
            names[f"{family.name}_total"] = labels
        elif family.type == "histogram":
            for suffix in ("_count", "_sum"):
                names[family.name + suffix] = labels
            names[f"{family.name}_bucket"] = labels | {"le"}
        else:
            names[family.name] = labels
    return names


def known() -> dict[str, set[str]]:
    """:func:`exported`, plus the :data:`PLANNED` names not exported yet."""
    return {**{k: set(v) for k, v in PLANNED.items()}, **exported()}


def reads(expr: str) -> tuple[set[str], set[str]]:
    """The metric names a query selects and every label name it mentions (in a matcher, a
    ``by``/``without``, an ``on``/``ignoring`` or a ``group_left``/``group_right``). Raises
    ``ValueError`` when the query does not parse."""
    metrics: set[str] = set()
    labels: set[str] = set()

    def visit(node: promql.Expr) -> bool:
        if isinstance(node, promql.VectorSelector):
            if node.name:
                metrics.add(node.name)
            labels.update(m.name for m in node.matchers.matchers if m.name != "__name__")
        elif isinstance(node, promql.AggregateExpr) and node.modifier is not None:
            labels.update(node.modifier.labels)
        elif isinstance(node, promql.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                labels.update(node.modifier.matching.labels)
            labels.update(node.modifier.group_labels or [])
        return True

    promql.walk(promql.parse(expr), pre_visit=visit)
    return metrics, labels
