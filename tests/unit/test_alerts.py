"""``dashboards/alerts.yml``: every rule reads metrics the gateway exports (checked with a real
PromQL parser), every alert has a case where it fires and one where it stays quiet in
``alerts_test.yml``, and Prometheus's own ``promtool`` checks the file and runs those cases.

``promtool`` comes with Debian's ``prometheus`` package (``.ci/run`` installs it); where it is
not installed the two promtool tests skip, saying so."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.promql_names import known, reads

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "dashboards" / "alerts.yml"
CASES = Path(__file__).resolve().parent / "alerts_test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian: apt-get install prometheus; .ci/run does)",
)
ALERTS = {
    "GatewayCircuitOpen", "GatewayAllCircuitsOpen", "GatewayAmbiguousSubmits",
    "GatewayRedisErrors", "GatewayWebhookDeadLetters", "GatewayVideoCopyFailures",
    "GatewaySpendRateHigh", "GatewayProviderBalanceLow", "GatewayLatencyP99High",
}  # fmt: skip


def rules() -> list[dict[str, Any]]:
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_the_rules_cover_what_on_call_must_hear_about() -> None:
    alerts = [r for r in rules() if "alert" in r]
    assert {r["alert"] for r in alerts} == ALERTS
    for rule in alerts:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r.get("alert") or r["record"])
def test_every_rule_parses_and_reads_exported_metrics_and_labels(rule: dict[str, Any]) -> None:
    names = known()
    recorded = {r["record"] for r in rules() if "record" in r}
    metrics, labels = reads(rule["expr"])
    for metric in metrics - recorded:
        assert metric in names, f"{metric} is not exported by gateway/metrics.py"
        assert labels <= names[metric] | {"le"}, f"unknown label in {rule['expr']}"


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases: dict[str, Any] = yaml.safe_load(CASES.read_text(encoding="utf-8"))
    checks = [c for test in cases["tests"] for c in test["alert_rule_test"]]
    fires = {c["alertname"] for c in checks if c["exp_alerts"]}
    quiet = {c["alertname"] for c in checks if not c["exp_alerts"]}
    assert fires == ALERTS
    assert quiet == ALERTS


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_every_alert_fires_and_stays_quiet_as_its_promtool_cases_say() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(CASES)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
