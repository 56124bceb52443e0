"""Status at scale with real processes: single-flight lookups across instances, final tasks
served from Redis, and a signed webhook over a real socket."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import (
    CLIENT_KEY,
    WEBHOOK_SECRET,
    Gateway,
    Sandbox,
    gateway_config,
    wait_final,
)

pytestmark = pytest.mark.e2e
BODY = {"prompt": "a glacier calving", "image": "https://example.com/first-frame.png"}


class Hooks:
    """A real HTTP webhook receiver on loopback that answers 500 to the first delivery."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                hooks.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(500 if len(hooks.received) == 1 else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/video"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    receiver = Hooks()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def start(gateways: list[Gateway], config: dict[str, Any], tmp_path: Path) -> Gateway:
    gateway = Gateway(config, tmp_path, name=f"gw{len(gateways)}")
    gateways.append(gateway)
    return gateway.start()


async def test_two_hundred_concurrent_lookups_on_two_instances_cost_one_upstream_read(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    cfg = gateway_config(sandbox, redis_url, tmp_path / "data",
                         status={"poll_interval_s": 5, "background_polling": False})  # fmt: skip
    instances = [start(gateways, cfg, tmp_path), start(gateways, cfg, tmp_path)]
    sandbox.knobs("runapi", complete_after_s=60)
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    async with httpx.AsyncClient(headers=headers, timeout=20) as client:
        created = await client.post(f"{instances[0].url}/v1/videos", json=BODY)
        task_id = created.json()["id"]
        answers = await asyncio.gather(
            *(client.get(f"{instances[i % 2].url}/v1/videos/{task_id}") for i in range(200))
        )
    assert all(a.status_code == 200 for a in answers)
    assert sandbox.stats("runapi")["status_calls"] == 1


def test_completed_task_is_served_thirty_times_without_an_upstream_call(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gw = start(gateways, gateway_config(sandbox, redis_url, tmp_path / "data"), tmp_path)
    with gw.client() as client:
        task_id = client.post("/v1/videos", json=BODY).json()["id"]
        wait_final(client, task_id)
        calls = sandbox.stats("runapi")["status_calls"]
        for _ in range(30):
            assert client.get(f"/v1/videos/{task_id}").json()["status"] == "completed"
    assert sandbox.stats("runapi")["status_calls"] == calls


def test_webhook_arrives_signed_over_a_real_socket_after_a_500(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway], hooks: Hooks
) -> None:
    hooks_cfg = {"retry_delays_s": [0.5], "allow_hosts": ["127.0.0.1"]}
    cfg = gateway_config(sandbox, redis_url, tmp_path / "data", webhooks=hooks_cfg)
    gw = start(gateways, cfg, tmp_path)
    with gw.client() as client:
        task_id = client.post("/v1/videos", json={**BODY, "webhook_url": hooks.url}).json()["id"]
    deadline = time.monotonic() + 15
    while len(hooks.received) < 2:
        assert time.monotonic() < deadline, "no webhook retry arrived"
        time.sleep(0.1)
    headers, body = hooks.received[-1]
    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == expected
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert json.loads(body)["id"] == task_id
    assert hooks.received[0][0]["webhook-id"] == headers["webhook-id"]
