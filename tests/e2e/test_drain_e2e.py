"""Drain on SIGTERM, on a real ``gateway serve`` process: ``/readyz`` answers 503 at once while
requests are still served, a create in flight finishes, and the poller hands the lease of a
poll it had not finished back (the task is due again now, for another instance)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from gateway.shards import shard_of
from gateway.store import Keys
from tests.e2e.conftest import Gateway, Sandbox, gateway_config

pytestmark = pytest.mark.e2e
BODY = {"prompt": "a lighthouse at dusk", "image": "https://example.com/first-frame.png"}


def test_sigterm_drains_finishes_requests_in_flight_and_hands_leases_back(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    sandbox.knobs("runapi", latency_ms=4000)  # T0's create, then its poll, take 4 s
    sandbox.knobs("apiinone", latency_ms=1000)  # the create in flight at SIGTERM takes 1 s
    config = gateway_config(sandbox, redis_url, tmp_path / "data", server={"drain_s": 0.5})
    config["providers"]["runapi"]["timeout_s"] = 6
    gateway = Gateway(config, tmp_path)
    gateways.append(gateway.start())
    store = redis.Redis.from_url(redis_url)
    with gateway.client() as client:
        created = client.post("/v1/videos", json={**BODY, "routing": {"providers": ["runapi"]}})
    assert created.status_code == 202, created.text
    t0 = created.json()["id"]
    schedule = Keys.due("poll", shard_of(t0))
    deadline = time.monotonic() + 10
    while (store.zscore(schedule, t0) or 0) < time.time() + 5:  # claimed: leased 16 s
        assert time.monotonic() < deadline, "the poller never claimed the task"
        time.sleep(0.02)

    answers: list[httpx.Response] = []

    def create_in_flight() -> None:
        with gateway.client() as client:
            body = {**BODY, "routing": {"providers": ["apiinone"]}}
            answers.append(client.post("/v1/videos", json=body))

    in_flight = threading.Thread(target=create_in_flight)
    in_flight.start()
    time.sleep(0.2)
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGTERM)

    ready = httpx.get(f"{gateway.url}/readyz", timeout=2)
    assert ready.status_code == 503
    assert ready.json()["reasons"] == ["draining: shutting down"]
    with gateway.client() as client:  # still served while draining
        assert client.get("/v1/providers").status_code == 200
    in_flight.join(10)
    assert [a.status_code for a in answers] == [202]
    # uvicorn, once shut down gracefully, raises the signal it caught again: exit by SIGTERM.
    assert gateway.process.wait(15) in (0, -signal.SIGTERM)
    handed_back = store.zscore(schedule, t0)
    assert handed_back is not None
    assert handed_back <= time.time()  # due now, not when the 16 s lease would have run out
    assert "draining" in gateway.logs()
    store.close()
