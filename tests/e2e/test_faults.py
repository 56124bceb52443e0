"""Faults with real processes: Redis stopped, killed and restarted under a running gateway, the
gateway SIGKILLed under a create load, and a full scripted run searched for every secret.

Everything talks over 127.0.0.1 (the tests' own redis-server over a Unix socket in a temporary
directory); every process a test starts is stopped at its end.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gateway.embedded_redis import EmbeddedRedis
from gateway.store import Keys
from tests.e2e.conftest import (
    CLIENT_KEY,
    OTHER_KEY,
    SECRETS,
    WEBHOOK_SECRET,
    Gateway,
    Sandbox,
    gateway_config,
    wait_final,
)
from tests.scrape import Scrape

pytestmark = pytest.mark.e2e
IMAGE = "https://example.com/first-frame.png"
PROBLEM_JSON = "application/problem+json"
PROVIDERS = ("runapi", "apiinone")
TASK_TTL_S = 7 * 86400


# --- helpers -----------------------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A redis-server (append-only) this test may stop, kill and restart on the same socket
    with the same data directory. A short directory: the socket path is limited in length."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("faults"))
    server.start()
    yield server
    server.stop()


def start_gateway(
    gateways: list[Gateway], sandbox: Sandbox, redis_url: str, tmp_path: Path, **overrides: Any
) -> Gateway:
    config = gateway_config(sandbox, redis_url, tmp_path / "data", **overrides)
    gateway = Gateway(config, tmp_path, name=f"gw{len(gateways)}")
    gateways.append(gateway)
    return gateway.start()


def create(client: httpx.Client, n: int, **fields: Any) -> httpx.Response:
    """A create that goes to runapi for even ``n`` (6 s: 0.30 < 0.32) and to apiinone for odd
    ``n`` (10 s: 0.45 < 0.50), so both resellers take tasks."""
    body = {"prompt": f"fox {n}", "image": IMAGE, "duration": 6 if n % 2 == 0 else 10, **fields}
    return client.post("/v1/videos", json=body)


def stored_tasks(url: str) -> dict[str, dict[str, Any]]:
    """Every task record in Redis, by id (a scan of ``gw:*:task:*``, every shard)."""
    client = redis.Redis.from_url(url)
    try:
        records = {}
        for key in client.scan_iter("gw:*:task:*", count=1000):
            raw = client.get(key)
            assert raw is not None, key
            records[key.decode().partition(":task:")[2]] = json.loads(raw)
        return records
    finally:
        client.close()


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def is_store_unavailable(response: httpx.Response) -> bool:
    return (
        response.status_code == 503
        and response.headers["content-type"].startswith(PROBLEM_JSON)
        and response.json()["code"] == "store_unavailable"
    )


# --- Redis outage ------------------------------------------------------------------------


@pytest.mark.parametrize("outage", ["sigterm", "sigkill"])
def test_redis_outage_refuses_before_any_upstream_call_and_the_same_gateway_recovers(
    outage: str,
    sandbox: Sandbox,
    own_redis: EmbeddedRedis,
    tmp_path: Path,
    gateways: list[Gateway],
) -> None:
    gw = start_gateway(gateways, sandbox, own_redis.url, tmp_path)
    with gw.client() as client:
        created = [create(client, n) for n in range(4)]
        assert [r.status_code for r in created] == [202] * 4
        before = {r.json()["id"]: r.json() for r in created}

        # SIGTERM removes the socket file (connections fail with ENOENT); SIGKILL leaves it
        # behind (they are refused).
        if outage == "sigterm":
            own_redis.stop()
        else:
            own_redis.kill()
        calls = {p: sandbox.stats(p)["create_calls"] for p in PROVIDERS}
        refused = [
            create(client, 10),
            create(client, 11),
            create(client, 12, metadata={"try": "1"}),
            client.post("/v1/videos", json={"prompt": "fox", "image": IMAGE},
                        headers={"Idempotency-Key": "during-the-outage"}),
        ]  # fmt: skip
        lookups = [client.get(f"/v1/videos/{task_id}") for task_id in before]
        ready = httpx.get(f"{gw.url}/readyz")
        alive = httpx.get(f"{gw.url}/healthz")
        scrape = Scrape(httpx.get(f"{gw.url}/metrics").text)

        assert {p: sandbox.stats(p)["create_calls"] for p in PROVIDERS} == calls
        assert [is_store_unavailable(r) for r in refused] == [True] * len(refused)
        assert [is_store_unavailable(r) for r in lookups] == [True] * len(lookups)
        assert ready.status_code == 503
        assert any("redis" in reason for reason in ready.json()["reasons"]), ready.text
        assert alive.status_code == 200
        assert sum(scrape.nonzero("gateway_redis_errors_total", "operation").values()) > 0

        own_redis.start()
        wait_until(lambda: httpx.get(f"{gw.url}/readyz").status_code == 200, 5.0, "/readyz 200")
        assert gw.process is not None
        assert gw.process.poll() is None  # the same process throughout
        again = [
            create(client, 20),
            create(client, 21),
            # The claim refused during the outage left nothing behind: the key runs anew.
            client.post("/v1/videos", json={"prompt": "fox", "image": IMAGE},
                        headers={"Idempotency-Key": "during-the-outage"}),
        ]  # fmt: skip
        assert [r.status_code for r in again] == [202, 202, 202]
        for task_id, task in before.items():
            found = client.get(f"/v1/videos/{task_id}")
            assert found.status_code == 200, found.text
            assert (found.json()["provider"], found.json()["provider_task_id"]) == (
                task["provider"], task["provider_task_id"],
            )  # fmt: skip
        assert wait_final(client, created[0].json()["id"])["status"] == "completed"
    assert set(before) | {r.json()["id"] for r in again} == set(stored_tasks(own_redis.url))
    assert sum(sandbox.stats(p)["create_calls"] for p in PROVIDERS) == sum(calls.values()) + 3


def test_redis_killed_and_restarted_from_its_append_only_file_keeps_every_task(
    sandbox: Sandbox, own_redis: EmbeddedRedis, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gw = start_gateway(gateways, sandbox, own_redis.url, tmp_path)
    with gw.client() as client:
        first = create(client, 0).json()
        assert wait_final(client, first["id"])["status"] == "completed"  # a final state, too
        rest = [create(client, n) for n in range(1, 12)]
        assert [r.status_code for r in rest] == [202] * len(rest)
        before = stored_tasks(own_redis.url)
        own_redis.kill()  # right after the last 202: no clean shutdown, no fsync awaited
        own_redis.start()
        after = stored_tasks(own_redis.url)

        ids = {first["id"], *(r.json()["id"] for r in rest)}
        assert set(before) == ids
        assert set(after) == ids
        for task_id in ids:
            assert after[task_id]["provider_task_id"] is not None
            assert after[task_id]["provider_task_id"] == before[task_id]["provider_task_id"]
        assert after[first["id"]]["status"] == "completed"
        ttls = redis.Redis.from_url(own_redis.url)
        try:
            assert all(0 < ttls.ttl(Keys.task(i)) <= TASK_TTL_S for i in ids)
        finally:
            ttls.close()

        wait_until(lambda: httpx.get(f"{gw.url}/readyz").status_code == 200, 5.0, "/readyz 200")
        for task_id in ids:
            found = client.get(f"/v1/videos/{task_id}")
            assert found.status_code == 200, found.text
            assert found.json()["provider_task_id"] == before[task_id]["provider_task_id"]


def test_redis_lost_after_the_upstream_accepted_is_not_answered_as_nothing_sent(
    sandbox: Sandbox, own_redis: EmbeddedRedis, tmp_path: Path, gateways: list[Gateway]
) -> None:
    """``store_unavailable`` tells the client nothing reached a reseller, so a retry is safe. Once
    a reseller has taken (and will bill) the task, the answer must say it may exist, and name
    the task; once Redis is back, the mapping written in the background makes the task whole."""
    gw = start_gateway(
        gateways, sandbox, own_redis.url, tmp_path,
        redis={"url": own_redis.url, "data_dir": str(tmp_path / "data"), "accept_retry_s": 1},
    )  # fmt: skip
    sandbox.knobs("runapi", latency_ms=800)
    with ThreadPoolExecutor(2) as pool, gw.client() as client:
        plain = pool.submit(create, client, 0)
        keyed = pool.submit(
            client.post, "/v1/videos", json={"prompt": "fox", "image": IMAGE},
            headers={"Idempotency-Key": "accepted-then-redis-lost"},
        )  # fmt: skip
        wait_until(lambda: sandbox.stats("runapi")["create_calls"] == 2, 5.0, "both creates sent")
        own_redis.stop()
        answers = [plain.result(timeout=10), keyed.result(timeout=10)]
    assert len(sandbox.tasks("runapi")) == 2  # the reseller took both
    assert [(r.status_code, r.json()["code"]) for r in answers] == [
        (504, "upstream_outcome_unknown")
    ] * 2
    named = {r.json()["id"] for r in answers}
    own_redis.start()

    def mapped() -> bool:
        records = stored_tasks(own_redis.url)
        return {t for t, r in records.items() if r["provider_task_id"]} == named

    wait_until(mapped, 10.0, "both accepted tasks recorded once Redis is back")
    records = stored_tasks(own_redis.url)
    assert {r["provider_task_id"] for r in records.values()} == set(sandbox.tasks("runapi"))


def test_lookups_and_keyed_creates_refused_for_redis_count_as_redis_errors(
    sandbox: Sandbox, own_redis: EmbeddedRedis, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gw = start_gateway(gateways, sandbox, own_redis.url, tmp_path)
    with gw.client() as client:
        task_id = create(client, 0).json()["id"]
        own_redis.stop()
        lookups = [client.get(f"/v1/videos/{task_id}") for _ in range(3)]
        keyed = client.post("/v1/videos", json={"prompt": "fox", "image": IMAGE},
                            headers={"Idempotency-Key": "counted"})  # fmt: skip
    scrape = Scrape(httpx.get(f"{gw.url}/metrics").text)
    assert [is_store_unavailable(r) for r in [*lookups, keyed]] == [True] * 4
    assert scrape.value("gateway_redis_errors_total", operation="tasks") >= len(lookups)
    assert scrape.value("gateway_redis_errors_total", operation="idempotency") >= 1


# --- gateway crash -----------------------------------------------------------------------


class CreateLoad:
    """A few clients sending creates back to back until stopped; keeps every 202 answer."""

    def __init__(self, url: str, clients: int = 6) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.accepted: list[dict[str, Any]] = []
        self.answers: Counter[int] = Counter()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)
        ]

    def start(self) -> CreateLoad:
        for thread in self._threads:
            thread.start()
        return self

    def _run(self, worker: int) -> None:
        headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
        with httpx.Client(base_url=self._url, headers=headers, timeout=5) as client:
            n = worker
            while not self._stop.is_set():
                n += 1
                try:
                    answer = create(client, n, prompt=f"load {worker}/{n}")
                except httpx.TransportError:  # the gateway is dying or dead
                    time.sleep(0.01)
                    continue
                with self._lock:
                    self.answers[answer.status_code] += 1
                    if answer.status_code == 202:
                        self.accepted.append(answer.json())

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        assert not any(t.is_alive() for t in self._threads)


def upstream_tasks_known_only_by_a_pending_attempt(
    sandbox: Sandbox, records: dict[str, dict[str, Any]]
) -> int:
    """Check that every task a reseller accepted is in the store: as some task's
    ``provider_task_id``, or covered by its own task record whose last attempt is ``pending``
    for that reseller (written before the call, left by a crash before the answer).
    Returns how many were known only that way."""
    only_pending = 0
    for provider in PROVIDERS:
        accepted = sandbox.tasks(provider)
        mapped = {
            r["provider_task_id"]
            for r in records.values()
            if r["provider"] == provider and r["provider_task_id"] is not None
        }
        traces = [
            r for r in records.values()
            if r["provider_task_id"] is None and r["attempts"]
            and r["attempts"][-1]["provider"] == provider
            and r["attempts"][-1]["outcome"] == "pending"
        ]  # fmt: skip
        unmapped = [t for t in accepted if t not in mapped]
        assert len(unmapped) <= len(traces), (
            f"{provider}: {len(unmapped)} upstream tasks unknown to the store, "
            f"{len(traces)} pending attempts to cover them"
        )
        assert mapped <= set(accepted), f"{provider}: mapped ids the reseller never issued"
        only_pending += len(unmapped)
    return only_pending


def test_gateway_killed_under_create_load_loses_no_accepted_task_and_no_upstream_task(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    gw = start_gateway(gateways, sandbox, redis_url, tmp_path)
    accepted: list[dict[str, Any]] = []
    only_pending = 0
    for kill in range(3):
        for provider in PROVIDERS:
            sandbox.knobs(provider, latency_ms=20)
        load = CreateLoad(gw.url).start()
        settled = len(accepted)
        wait_until(lambda: len(load.accepted) >= 15, 10.0, "creates under load")  # noqa: B023
        if kill > 0:
            # Hold the creates in flight inside the resellers, so this kill lands between the
            # pending attempt written and the upstream's answer (the first kill lands anywhere).
            for provider in PROVIDERS:
                sandbox.knobs(provider, latency_ms=400)
            time.sleep(0.2)
        gw.stop(signal.SIGKILL)
        load.stop()
        assert set(load.answers) == {202}, load.answers
        accepted += load.accepted
        assert len(accepted) > settled
        # The resellers finish what the dead gateway sent them (every create is accepted).
        wait_until(
            lambda: all(
                sandbox.stats(p)["create_calls"] == sandbox.stats(p)["accepted_creates"]
                for p in PROVIDERS
            ),
            5.0,
            "the resellers to finish the creates in flight",
        )
        gw.start()
        with gw.client() as client:
            for task in accepted:
                found = client.get(f"/v1/videos/{task['id']}")
                assert found.status_code == 200, found.text
                assert (found.json()["provider"], found.json()["provider_task_id"]) == (
                    task["provider"], task["provider_task_id"],
                )  # fmt: skip
        only_pending = upstream_tasks_known_only_by_a_pending_attempt(
            sandbox, stored_tasks(redis_url)
        )
    # The held creates were taken upstream after the kill: the pending trace was what kept them.
    assert only_pending > 0


# --- secrets -----------------------------------------------------------------------------


class WebhookReceiver:
    """A local webhook endpoint: refuses the first delivery (500), takes the others (204)."""

    def __init__(self) -> None:
        received: list[tuple[dict[str, str], str]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body.decode()))
                self.send_response(500 if len(received) == 1 else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/hooks/video"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    hooks = WebhookReceiver()
    yield hooks
    hooks.close()


def signature_of(headers: dict[str, str], body: str) -> str:
    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def redis_dump(url: str) -> str:
    """Every key and value in Redis, as text (values read by type: ``DUMP`` compresses)."""
    client = redis.Redis.from_url(url)
    try:
        lines = []
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            value: object
            if kind == b"hash":
                value = client.hgetall(key)
            elif kind == b"list":
                value = client.lrange(key, 0, -1)
            elif kind == b"zset":
                value = client.zrange(key, 0, -1)
            elif kind == b"set":
                value = client.smembers(key)
            else:
                value = client.get(key)
            lines.append(f"{key.decode()} {value!r}")
        return "\n".join(lines)
    finally:
        client.close()


def test_no_configured_secret_appears_in_any_output_of_a_full_scripted_run(
    sandbox: Sandbox,
    redis_url: str,
    tmp_path: Path,
    gateways: list[Gateway],
    receiver: WebhookReceiver,
) -> None:
    gw = start_gateway(
        gateways, sandbox, redis_url, tmp_path,
        server={"host": "127.0.0.1", "max_body_bytes": 4096},
        auth={"keys": [{"name": "demo", "key_env": "GATEWAY_KEY_DEMO"},
                       {"name": "other", "key_env": "GATEWAY_KEY_OTHER", "rate_per_minute": 2}]},
        webhooks={"retry_delays_s": [0.5], "allow_hosts": ["127.0.0.1"]},
    )  # fmt: skip
    answers: dict[str, httpx.Response] = {}
    tasks: list[dict[str, Any]] = []
    with (
        gw.client() as client,
        gw.client(OTHER_KEY) as other,
        httpx.Client(base_url=gw.url) as anon,
    ):
        answers["ok"] = create(client, 0, webhook_url=receiver.url)
        answers["generation fails"] = create(client, 2, prompt="fox [sandbox:fail]")
        idem = {"Idempotency-Key": "scripted-1"}
        answers["idempotent"] = client.post("/v1/videos", json={"prompt": "f", "image": IMAGE},
                                            headers=idem)  # fmt: skip
        answers["replayed"] = client.post("/v1/videos", json={"prompt": "f", "image": IMAGE},
                                          headers=idem)  # fmt: skip
        sandbox.knobs("runapi", create_fault="http_500")
        answers["failover"] = create(client, 4)
        sandbox.knobs("runapi", create_fault="http_400")
        answers["upstream rejected"] = create(client, 6)
        sandbox.knobs("runapi", create_fault="drop")
        answers["outcome unknown"] = create(client, 8)
        sandbox.knobs("runapi", create_fault="none")
        answers["content"] = create(client, 10, prompt="fox [sandbox:content]")
        answers["invalid"] = client.post("/v1/videos", json={"prompt": ""})
        answers["not json"] = client.post("/v1/videos", content=b"not json")
        as_json = {"content-type": "application/json"}
        answers["too large"] = client.post("/v1/videos", content=b"x" * 5000, headers=as_json)
        ok_id = answers["ok"].json()["id"]
        answers["no key"] = anon.get(f"/v1/videos/{ok_id}")
        answers["wrong key"] = anon.get(f"/v1/videos/{ok_id}",
                                        headers={"Authorization": "Bearer wrong-key"})  # fmt: skip
        answers["other client"] = other.get(f"/v1/videos/{ok_id}")
        answers["unknown id"] = client.get("/v1/videos/vid_aaaaaaaaaaaaaaaaaaaaaaaaaa")
        answers["other providers"] = other.get("/v1/providers")
        answers["rate limited"] = other.get("/v1/providers")
        for name in ("ok", "generation fails", "idempotent", "failover"):
            tasks.append(wait_final(client, answers[name].json()["id"]))
        wait_until(lambda: len(receiver.received) >= 2, 10.0, "the webhook's retry")
        sandbox.knobs("runapi", create_fault="http_401")
        sandbox.knobs("apiinone", create_fault="http_402")
        answers["account errors"] = create(client, 12)
        answers["circuits open"] = create(client, 14)
        answers["providers"] = client.get("/v1/providers")
        answers["metrics"] = anon.get("/metrics")
        answers["openapi"] = anon.get("/schema/openapi.json")
        answers["readyz"] = anon.get("/readyz")
        answers["healthz"] = anon.get("/healthz")
        answers["no route"] = anon.get("/v1/nothing-here")
    stored = redis_dump(redis_url)
    gw.stop()
    logs = gw.logs()

    statuses = {name: r.status_code for name, r in answers.items()}
    assert statuses == {
        "ok": 202, "generation fails": 202, "idempotent": 202, "replayed": 200, "failover": 202,
        "upstream rejected": 502, "outcome unknown": 504, "content": 422, "invalid": 422,
        "not json": 400, "too large": 413, "no key": 401, "wrong key": 401, "other client": 404,
        "unknown id": 404, "other providers": 200, "rate limited": 429, "account errors": 502,
        "circuits open": 503, "providers": 200, "metrics": 200, "openapi": 200, "readyz": 503,
        "healthz": 200, "no route": 404,
    }  # fmt: skip
    assert answers["failover"].json()["provider"] == "apiinone"
    assert [t["status"] for t in tasks] == ["completed", "failed", "completed", "completed"]
    hooks = receiver.received
    assert [json.loads(body)["id"] for _, body in hooks[:2]] == [ok_id, ok_id]
    assert all(signature_of(h, body) in h["webhook-signature"].split() for h, body in hooks)
    assert "upstream create failed" in logs
    assert "provider account refused our key or credits" in logs
    assert "gateway_http_requests_total" in answers["metrics"].text

    webhook_key = WEBHOOK_SECRET.removeprefix("whsec_")
    secrets = (*SECRETS, webhook_key, base64.b64decode(webhook_key).decode())
    outputs = {
        **{f"answer {name}": f"{r.headers}\n{r.text}" for name, r in answers.items()},
        "task objects": json.dumps(tasks),
        "webhook deliveries": json.dumps(hooks),
        "redis": stored,
        "logs": logs,
    }
    for secret in secrets:
        for where, text in outputs.items():
            assert secret not in text, f"a secret appears in {where}"
