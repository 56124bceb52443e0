"""Every dashboard query, evaluated by a real Prometheus scraping a real gateway (the same
server ``make dashboard`` draws from: ``dashboards/prometheus.py``). Skips where no
``prometheus`` binary is installed (``.ci/run`` installs Debian's package)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from dashboards.prometheus import running, substitute
from tests.e2e.conftest import Gateway, Sandbox, free_port, gateway_config

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="prometheus is not installed (Debian: apt-get install prometheus; .ci/run does)",
    ),
]
DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "gateway.json"
SCRAPE_S = 0.5
BODY = {"prompt": "a lighthouse at dusk", "image": "https://example.com/first-frame.png"}


def test_every_panel_query_runs_in_prometheus_over_a_real_gateway(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gateway = Gateway(gateway_config(sandbox, redis_url, tmp_path / "data"), tmp_path)
    gateways.append(gateway.start())
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    with running(f"127.0.0.1:{gateway.port}", SCRAPE_S, free_port()) as prometheus:
        prometheus.wait_scraping()
        start = time.time()
        with gateway.client() as client:
            for _ in range(3):
                task = client.post("/v1/videos", json=BODY).json()
                client.get(f"/v1/videos/{task['id']}")
                time.sleep(1)
        time.sleep(4 * SCRAPE_S)
        end = time.time()
        variables = {"__rate_interval": "2s", "__interval": "1s", "__range": "10s",
                     "provider": ".*"}  # fmt: skip
        answered: dict[str, int] = {}
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = substitute(target["expr"], variables)
                found = prometheus.query_range(expr, start, end, 1.0)  # raises on a bad query
                answered[panel["title"]] = answered.get(panel["title"], 0) + len(found)
    assert answered["Requests per second by route"] > 0
    assert answered["Spend in the time range"] > 0
    assert answered["Circuit state per provider"] > 0
