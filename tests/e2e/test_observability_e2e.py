"""Metrics and logs of a gateway run as operators run it (``gateway serve``, real sockets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import SECRETS, Gateway, Sandbox, gateway_config
from tests.scrape import Scrape

pytestmark = pytest.mark.e2e
IMAGE = "https://example.com/first-frame.png"


def test_a_served_gateway_exposes_metrics_and_logs_each_request_once(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gw = Gateway(gateway_config(sandbox, redis_url, tmp_path / "data"), tmp_path)
    gateways.append(gw.start())
    prompt = "an e2e prompt that must stay out of the logs"
    with gw.client() as client:
        created = client.post(
            "/v1/videos",
            json={"prompt": prompt, "image": IMAGE},
            headers={"X-Request-Id": "e2e-request-1"},
        )
        assert created.status_code == 202
        assert created.headers["x-request-id"] == "e2e-request-1"
    scrape = Scrape(httpx.get(f"{gw.url}/metrics", timeout=5).text)  # no key needed
    labels = {"route": "/v1/videos", "method": "POST", "status": "202"}
    assert scrape.value("gateway_http_requests_total", **labels) == 1
    outcome = {"provider": "runapi", "operation": "create", "outcome": "accepted"}
    assert scrape.value("gateway_upstream_calls_total", **outcome) == 1
    gw.stop()
    logs = gw.logs()
    entries: list[dict[str, Any]] = [
        json.loads(line) for line in logs.splitlines() if line.startswith("{")
    ]
    mine = [
        e
        for e in entries
        if e.get("request_id") == "e2e-request-1" and e["logger"].startswith("gateway")
    ]
    messages = [e["msg"] for e in mine]
    assert messages[0] == "upstream create accepted"  # every line of the request carries its id
    assert messages.count("request") == 1
    assert messages[-1] == "request"
    assert mine[-1]["status"] == 202
    assert mine[-1]["client"] == "demo"
    assert prompt not in logs
    for secret in SECRETS:
        assert secret not in logs
