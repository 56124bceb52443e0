"""Failover, circuits and idempotency with real processes, counting the create calls each
simulated reseller received. RunAPI is the cheaper one for a 6 s 768P request, so it is tried
first; API in One is the fallback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import CLIENT_KEY, Gateway, Sandbox, free_port, gateway_config

pytestmark = pytest.mark.e2e
BODY = {"prompt": "a kite over dunes", "image": "https://example.com/first-frame.png"}


def run(
    gateways: list[Gateway], tmp_path: Path, config: dict[str, Any], name: str = "gw"
) -> Gateway:
    gateway = Gateway(config, tmp_path, name=f"{name}{len(gateways)}")
    gateways.append(gateway)
    return gateway.start()


def config(sandbox: Sandbox, redis_url: str, tmp_path: Path, **kw: Any) -> dict[str, Any]:
    return gateway_config(sandbox, redis_url, tmp_path / "data", **kw)


def post(gw: Gateway, idempotency_key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    with gw.client() as client:
        return client.post("/v1/videos", json=BODY, headers=headers)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose accept queue is full: connecting times out, nothing is ever sent."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port: int = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for sock in (*fillers, server):
        sock.close()


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        ("http_500", "upstream_unavailable"),
        ("html_502", "upstream_unavailable"),
        ("http_503", "upstream_unavailable"),
        ("http_429", "rate_limited"),
        ("http_402", "account_error"),
        ("http_401", "account_error"),
        ("http_403", "account_error"),
    ],
)
def test_answers_proving_no_task_fail_over_exactly_once(
    fault: str,
    outcome: str,
    sandbox: Sandbox,
    redis_url: str,
    tmp_path: Path,
    gateways: list[Gateway],
) -> None:
    gw = run(gateways, tmp_path, config(sandbox, redis_url, tmp_path))
    sandbox.knobs("runapi", create_fault=fault)
    response = post(gw)
    assert response.status_code == 202
    task = response.json()
    assert [(a["provider"], a["outcome"]) for a in task["attempts"]] == [
        ("runapi", outcome),
        ("apiinone", "accepted"),
    ]
    assert sandbox.stats("runapi")["create_calls"] == 1
    assert sandbox.stats("runapi")["accepted_creates"] == 0
    assert sandbox.stats("apiinone")["create_calls"] == 1


@pytest.mark.parametrize("failure", ["refused", "connect_timeout", "tls"])
def test_connection_failures_fail_over_exactly_once(
    failure: str,
    silent_port: int,
    sandbox: Sandbox,
    redis_url: str,
    tmp_path: Path,
    gateways: list[Gateway],
) -> None:
    cfg = config(sandbox, redis_url, tmp_path)
    runapi_port = sandbox.runapi.rsplit(":", 1)[1]
    cfg["providers"]["runapi"]["base_url"] = {
        "refused": f"http://127.0.0.1:{free_port()}",
        "connect_timeout": f"http://127.0.0.1:{silent_port}",
        "tls": f"https://127.0.0.1:{runapi_port}",  # TLS to a plain-HTTP server
    }[failure]
    cfg["providers"]["runapi"]["connect_timeout_s"] = 0.5
    gw = run(gateways, tmp_path, cfg)
    response = post(gw)
    assert response.status_code == 202
    task = response.json()
    assert [(a["provider"], a["outcome"]) for a in task["attempts"]] == [
        ("runapi", "upstream_unreachable"),
        ("apiinone", "accepted"),
    ]
    assert sandbox.stats("runapi")["create_calls"] == 0
    assert sandbox.stats("apiinone")["accepted_creates"] == 1


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("http_400", 502, "upstream_rejected"),
        ("content", 422, "content_rejected"),
        ("hang", 504, "upstream_outcome_unknown"),
        ("drop", 504, "upstream_outcome_unknown"),
    ],
)
def test_answers_that_may_not_fail_over_stop_at_the_first_reseller(
    fault: str,
    status: int,
    code: str,
    sandbox: Sandbox,
    redis_url: str,
    tmp_path: Path,
    gateways: list[Gateway],
) -> None:
    gw = run(gateways, tmp_path, config(sandbox, redis_url, tmp_path))
    sandbox.knobs("runapi", create_fault=fault, hang_s=4)
    response = post(gw)
    assert response.status_code == status
    problem = response.json()
    assert problem["code"] == code
    assert [a["provider"] for a in problem["attempts"]] == ["runapi"]
    assert sandbox.stats("runapi")["create_calls"] == 1
    assert sandbox.stats("apiinone")["create_calls"] == 0


def test_failover_on_timeout_when_the_operator_allows_it(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    cfg = config(sandbox, redis_url, tmp_path, routing={"failover_on_timeout": True})
    gw = run(gateways, tmp_path, cfg)
    sandbox.knobs("runapi", create_fault="hang", hang_s=4)
    task = post(gw).json()
    assert [a["outcome"] for a in task["attempts"]] == ["outcome_unknown", "accepted"]
    assert task["provider"] == "apiinone"


def test_unanswered_create_with_a_key_is_replayed_as_504_without_a_second_call(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gw = run(gateways, tmp_path, config(sandbox, redis_url, tmp_path))
    sandbox.knobs("runapi", create_fault="hang", hang_s=4)
    first = post(gw, "job-17")
    sandbox.knobs("runapi", create_fault="none")
    again = post(gw, "job-17")
    assert (first.status_code, again.status_code) == (504, 504)
    assert again.json()["attempts"] == first.json()["attempts"]
    assert sandbox.stats("runapi")["create_calls"] == 1
    assert sandbox.stats("apiinone")["create_calls"] == 0


def test_open_circuit_is_shared_by_a_second_instance(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    cfg = config(sandbox, redis_url, tmp_path,
                 routing={"circuit": {"failures_to_open": 2, "cooldown_s": 30}})  # fmt: skip
    first, second = run(gateways, tmp_path, cfg), run(gateways, tmp_path, cfg)
    sandbox.knobs("runapi", create_fault="http_500")
    for _ in range(2):
        assert post(first).json()["provider"] == "apiinone"
    assert sandbox.stats("runapi")["create_calls"] == 2
    for gw in (second, first):
        task = post(gw).json()
        assert [a["provider"] for a in task["attempts"]] == ["apiinone"]
    assert sandbox.stats("runapi")["create_calls"] == 2
    with second.client() as client:
        listing = client.get("/v1/providers").json()["data"]
    assert {p["name"]: p["circuit"] for p in listing} == {"runapi": "open", "apiinone": "closed"}


def test_a_cheap_reseller_that_is_down_costs_one_refused_attempt(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    cfg = config(sandbox, redis_url, tmp_path, routing={"circuit": {"failures_to_open": 1}})
    cfg["providers"]["runapi"]["base_url"] = f"http://127.0.0.1:{free_port()}"
    gw = run(gateways, tmp_path, cfg)
    tasks = [post(gw).json() for _ in range(3)]
    assert [len(t["attempts"]) for t in tasks] == [2, 1, 1]
    assert tasks[0]["attempts"][0]["outcome"] == "upstream_unreachable"
    assert all(t["provider"] == "apiinone" for t in tasks)
    assert sum(t["price_usd"] for t in tasks) == pytest.approx(3 * 0.32)
    assert sandbox.stats("apiinone")["accepted_creates"] == 3


async def test_eight_concurrent_requests_with_one_key_on_two_instances_make_one_task(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    cfg = config(sandbox, redis_url, tmp_path)
    instances = [run(gateways, tmp_path, cfg), run(gateways, tmp_path, cfg)]
    sandbox.knobs("runapi", latency_ms=300)
    headers = {"Authorization": f"Bearer {CLIENT_KEY}", "Idempotency-Key": "burst-1"}
    async with httpx.AsyncClient(timeout=10) as client:
        answers = await asyncio.gather(
            *(client.post(f"{instances[i % 2].url}/v1/videos", json=BODY, headers=headers)
              for i in range(8))
        )  # fmt: skip
    codes = [a.status_code for a in answers]
    assert codes.count(202) == 1
    assert set(codes) <= {200, 202, 409}
    assert len({a.json()["id"] for a in answers if a.status_code in (200, 202)}) == 1
    accepted = sandbox.stats("runapi")["accepted_creates"]
    assert accepted + sandbox.stats("apiinone")["accepted_creates"] == 1
