"""The gateway as operators run it: separate processes over loopback sockets, a real
redis-server, the simulated resellers speaking their documented wire formats."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import (
    ENV,
    OTHER_KEY,
    Gateway,
    Sandbox,
    free_port,
    gateway_config,
    wait_final,
)

pytestmark = pytest.mark.e2e
IMAGE = "https://example.com/first-frame.png"


def start(
    gateways: list[Gateway], sandbox: Sandbox, redis_url: str | None, tmp_path: Path, **kw: object
) -> Gateway:
    gateway = Gateway(gateway_config(sandbox, redis_url, tmp_path / "data", **kw), tmp_path,
                      name=f"gw{len(gateways)}")  # fmt: skip
    gateways.append(gateway)
    return gateway.start()


def test_requests_go_to_the_cheaper_reseller_and_complete(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gw = start(gateways, sandbox, redis_url, tmp_path)
    with gw.client() as client:
        six = client.post("/v1/videos", json={"prompt": "a fox", "image": IMAGE})
        ten = client.post("/v1/videos", json={"prompt": "a fox", "image": IMAGE, "duration": "10"})
        assert (six.status_code, ten.status_code) == (202, 202)
        assert (six.json()["provider"], six.json()["price_usd"]) == ("runapi", 0.30)
        assert (ten.json()["provider"], ten.json()["price_usd"]) == ("apiinone", 0.45)
        for task in (six.json(), ten.json()):
            final = wait_final(client, task["id"])
            assert final["status"] == "completed"
            assert final["video_url"] == f"/v1/videos/{task['id']}/content"  # the stored copy
            assert final["upstream_video_url"].startswith("http://127.0.0.1:")
    assert sandbox.stats("runapi")["accepted_creates"] == 1
    assert sandbox.stats("apiinone")["accepted_creates"] == 1


def test_failed_generation_is_reported_failed_with_an_error(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gw = start(gateways, sandbox, redis_url, tmp_path)
    with gw.client() as client:
        task = client.post("/v1/videos", json={"prompt": "x [sandbox:fail]", "image": IMAGE}).json()
        final = wait_final(client, task["id"])
    assert final["status"] == "failed"
    assert final["error"]["code"] == "generation_failed"
    assert final["error"]["message"]


def test_invalid_input_names_the_field_and_reaches_no_reseller(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gw = start(gateways, sandbox, redis_url, tmp_path)
    with gw.client() as client:
        response = client.post(
            "/v1/videos", json={"prompt": "a fox", "image": IMAGE, "duration": 10,
                                "resolution": "1080P"},
        )  # fmt: skip
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["field"] == "resolution"
    assert sandbox.stats("runapi")["create_calls"] == 0
    assert sandbox.stats("apiinone")["create_calls"] == 0


def test_killed_gateway_restarts_and_a_second_instance_answers_lookups(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    first = start(gateways, sandbox, redis_url, tmp_path)
    with first.client() as client:
        ids = [client.post("/v1/videos", json={"prompt": f"fox {i}", "image": IMAGE}).json()["id"]
               for i in range(3)]  # fmt: skip
    first.stop(signal.SIGKILL)
    restarted = start(gateways, sandbox, redis_url, tmp_path)
    second = start(gateways, sandbox, redis_url, tmp_path)
    for gw in (restarted, second):
        with gw.client() as client:
            for task_id in ids:
                assert client.get(f"/v1/videos/{task_id}").status_code == 200
    with second.client() as client:
        assert all(wait_final(client, i)["status"] == "completed" for i in ids)
    with restarted.client(OTHER_KEY) as client:
        assert client.get(f"/v1/videos/{ids[0]}").status_code == 404


def test_unanswered_create_is_504_and_is_not_sent_to_another_reseller(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gw = start(gateways, sandbox, redis_url, tmp_path)
    for fault in ("hang", "drop"):
        sandbox.reset()
        sandbox.knobs("runapi", create_fault=fault, hang_s=4)
        with gw.client() as client:
            response = client.post("/v1/videos", json={"prompt": "a fox", "image": IMAGE})
        assert response.status_code == 504, fault
        problem = response.json()
        assert problem["code"] == "upstream_outcome_unknown"
        assert problem["attempts"][0]["provider"] == "runapi"
        assert problem["attempts"][0]["outcome"] == "outcome_unknown"
        assert sandbox.stats("apiinone")["create_calls"] == 0


def test_refused_connection_fails_over_without_a_second_bill(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    config = gateway_config(sandbox, redis_url, tmp_path / "data")
    config["providers"]["runapi"]["base_url"] = f"http://127.0.0.1:{free_port()}"
    gw = Gateway(config, tmp_path)
    gateways.append(gw.start())
    with gw.client() as client:
        response = client.post("/v1/videos", json={"prompt": "a fox", "image": IMAGE})
    assert response.status_code == 202
    task = response.json()
    assert task["provider"] == "apiinone"
    assert [a["outcome"] for a in task["attempts"]] == ["upstream_unreachable", "accepted"]
    assert sandbox.stats("apiinone")["accepted_creates"] == 1


def test_embedded_redis_keeps_tasks_across_a_restart(
    sandbox: Sandbox, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gw = start(gateways, sandbox, None, tmp_path)
    with gw.client() as client:
        task_id = client.post("/v1/videos", json={"prompt": "a fox", "image": IMAGE}).json()["id"]
    gw.stop()
    assert (tmp_path / "data" / "appendonly.aof").exists()
    again = start(gateways, sandbox, None, tmp_path)
    with again.client() as client:
        assert client.get(f"/v1/videos/{task_id}").json()["id"] == task_id


def test_config_typo_stops_start_up_with_the_key_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"routing": {"max_atempts": 2}}))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(bad)],
        capture_output=True, text=True, timeout=30, env={**ENV, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "routing.max_atempts" in result.stderr
