"""Status refresh, the background poller, webhooks, callbacks and resubmission, through the
real app on a real Redis with the simulated resellers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from gateway.schemas import Attempt
from gateway.shards import shard_of
from gateway.store import Keys, TaskStore
from gateway.tasks import TaskRecord
from providers.base import VideoJob
from providers.sandbox.engine import Knobs
from tests.integration.conftest import IMAGE, WEBHOOK_SECRET, Harness

BODY = {"prompt": "a lantern festival", "image": IMAGE}
SLOW = Knobs(queue_s=0.0, complete_after_s=30.0)


class Receiver:
    """A webhook receiver (plain ASGI) that records every delivery and can fail the first ones."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.calls.append(({k.decode(): v.decode() for k, v in scope["headers"]}, body))
        status = 500 if len(self.calls) <= self.fail_first else 204
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def verify(headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks check, written from the spec (not with the gateway's code)."""
    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(sig.split(",", 1)[1] == expected for sig in headers["webhook-signature"].split(" "))


async def until(predicate: Callable[[], bool], timeout_s: float = 8.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def deliveries(redis: Redis) -> dict[str, tuple[bytes | str, float | None]]:
    """Every webhook delivery record kept: id → (its JSON, its due time, None when it is on no
    schedule)."""
    found: dict[str, tuple[bytes | str, float | None]] = {}
    async for key in redis.scan_iter(match="gw:*:webhook:*"):
        delivery_id = key.decode().rpartition(":webhook:")[2]
        due = await redis.zscore(Keys.due("webhooks", shard_of(delivery_id)), delivery_id)
        found[delivery_id] = (await redis.get(key) or b"", due)
    return found


async def test_webhook_is_delivered_signed_without_any_lookup_and_retried_after_a_500(
    harness_factory: Callable[..., Any], redis: Redis
) -> None:
    receiver = Receiver(fail_first=1)
    h: Harness = await harness_factory(
        webhooks=receiver,
        status={"background_polling": True},
        webhooks_={"retry_delays_s": [0.2]},
    )
    created = await h.create({**BODY, "webhook_url": "https://hooks.example/videos"})
    assert created.status_code == 202
    task = created.json()
    await until(lambda: len(receiver.calls) == 2)
    (first_headers, first_body), (headers, body) = receiver.calls
    assert headers["webhook-id"] == first_headers["webhook-id"]  # one message, tried twice
    assert body == first_body
    assert verify(headers, body)
    delivered = json.loads(body)
    assert delivered["id"] == task["id"]
    assert delivered["status"] == "completed"
    assert delivered["video_url"]
    # Delivered: its record and its place on the schedule are gone, in one step.
    deadline = time.monotonic() + 5
    while await deliveries(redis):
        assert time.monotonic() < deadline, "the delivered webhook was not forgotten"
        await asyncio.sleep(0.05)


async def test_two_instances_deliver_one_final_webhook_once(
    harness_factory: Callable[..., Any],
) -> None:
    receiver = Receiver()
    first: Harness = await harness_factory(
        knobs=Knobs(queue_s=0, complete_after_s=1.0),
        webhooks=receiver,
        status={"background_polling": True},
    )
    second: Harness = await harness_factory(
        webhooks=receiver,
        status={"background_polling": True},
        sandboxes=(first.runapi, first.apiinone),
    )
    ids = [(await h.create({**BODY, "webhook_url": "https://hooks.example/v"})).json()["id"]
           for h in (first, second, first)]  # fmt: skip
    await until(lambda: len(receiver.calls) >= 3)
    await asyncio.sleep(1.5)  # time for any duplicate to show up
    delivered = [json.loads(body)["id"] for _, body in receiver.calls]
    assert sorted(delivered) == sorted(ids)


async def test_webhook_url_pointing_at_the_gateway_itself_is_refused(
    harness_factory: Callable[..., Any],
) -> None:
    # Loopback is allowed here by name, so only the self-loop rule can refuse these.
    h: Harness = await harness_factory(
        webhooks=Receiver(), webhooks_={"allow_hosts": ["127.0.0.1", "localhost"]}
    )
    for url in ("http://127.0.0.1:8080/hook", "http://localhost:8080/v1/videos"):
        response = await h.create({**BODY, "webhook_url": url})
        assert response.status_code == 422, url
        assert response.json()["errors"][0]["field"] == "webhook_url"
        assert "this gateway" in response.json()["errors"][0]["message"]
    assert (await h.create({**BODY, "webhook_url": "http://127.0.0.1:9/hook"})).status_code == 202
    assert h.upstream_creates == 1


SSRF_TARGETS = [
    "http://169.254.169.254/latest/meta-data/iam/",
    "http://127.0.0.1:6379/",
    "http://10.0.0.1/hook",
    "http://localhost/hook",
    "http://[::1]/hook",
    "http://[fd00:ec2::254]/",
    "http://100.64.1.1/hook",
    "http://[::ffff:a9fe:a9fe]/",
    "http://224.0.0.251/",
    "http://0.0.0.0:8080/",
]


async def test_webhook_urls_reaching_internal_addresses_are_refused_before_any_upstream_call(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(webhooks=Receiver())
    for url in SSRF_TARGETS:
        response = await h.create({**BODY, "webhook_url": url})
        assert response.status_code == 422, url
        assert response.json()["errors"][0]["field"] == "webhook_url", url
    assert h.upstream_creates == 0


async def test_allow_hosts_lets_an_operator_name_an_internal_webhook_host(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(
        webhooks=Receiver(), webhooks_={"allow_hosts": ["hooks.example", "LocalHost"]}
    )
    response = await h.create({**BODY, "webhook_url": "http://localhost:9/hook"})
    assert response.status_code == 202
    assert (await h.create({**BODY, "webhook_url": "http://127.0.0.1:9/"})).status_code == 422


async def test_webhook_url_without_a_signing_secret_is_refused(harness: Harness) -> None:
    response = await harness.create({**BODY, "webhook_url": "https://hooks.example/v"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "webhook_url"
    assert harness.upstream_creates == 0


async def test_background_poller_finishes_tasks_nobody_asks_about(
    harness_factory: Callable[..., Any], redis: Redis
) -> None:
    h: Harness = await harness_factory(status={"background_polling": True})
    task_id = (await h.create(BODY)).json()["id"]

    async def stored_status() -> str:
        raw = await redis.get(Keys.task(task_id))
        assert raw is not None
        return TaskRecord.model_validate_json(raw).status.value

    deadline = time.monotonic() + 8
    while await stored_status() != "completed":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert (
        await redis.zscore(Keys.due("poll", shard_of(task_id)), task_id) is None
    )  # off the schedule once final


async def final_task(h: Harness, task_id: str, timeout_s: float = 8.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        task: dict[str, Any] = (await h.read(task_id)).json()
        if task["status"] in ("completed", "failed"):
            return task
        assert time.monotonic() < deadline, "the task did not end in time"
        await asyncio.sleep(0.1)


async def test_failed_generation_is_resubmitted_under_the_same_id(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(status={"background_polling": True})
    h.runapi.update_knobs({"task_outcome": "failed"})
    task = (await h.create(BODY)).json()
    final = await final_task(h, task["id"])
    assert final["id"] == task["id"]
    assert final["provider"] == "apiinone"
    assert final["status"] == "completed"
    assert [(a["provider"], a["outcome"]) for a in final["attempts"]] == [
        ("runapi", "accepted"),
        ("runapi", "generation_failed"),
        ("apiinone", "accepted"),
    ]
    assert h.apiinone.counters.accepted_creates == 1


async def test_resubmission_happens_once_then_the_failure_stands(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(status={"background_polling": True})
    task = (await h.create({**BODY, "prompt": "x [sandbox:fail]"})).json()
    final = await final_task(h, task["id"])
    assert final["status"] == "failed"
    assert final["error"]["code"] == "generation_failed"
    assert h.upstream_creates == 2


async def test_no_resubmission_when_switched_off(harness_factory: Callable[..., Any]) -> None:
    h: Harness = await harness_factory(status={"resubmit_failed": 0})
    h.runapi.update_knobs({"task_outcome": "failed"})
    task = (await h.create(BODY)).json()
    assert (await h.read(task["id"])).json()["status"] == "failed"
    assert h.upstream_creates == 1


async def test_task_past_the_deadline_fails_with_timeout(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(status={"deadline_s": 0.5})
    task = (await h.create({**BODY, "prompt": "y [sandbox:slow]"})).json()
    await asyncio.sleep(1.1)
    final = (await h.read(task["id"])).json()
    assert final["status"] == "failed"
    assert final["error"]["code"] == "timeout"


async def test_callback_is_a_hint_that_triggers_one_status_read(
    harness_factory: Callable[..., Any], redis: Redis
) -> None:
    h: Harness = await harness_factory(
        knobs=SLOW, server={"public_url": "https://gw.example"}, status={"poll_interval_s": 1}
    )
    task = (await h.create(BODY)).json()
    record = TaskRecord.model_validate_json(await redis.get(Keys.task(task["id"])) or b"")
    token = record.callback_token
    assert token
    url = f"/v1/callbacks/runapi/{token}"
    # The body is never trusted: a forged "completed" changes nothing.
    response = await h.client.post(url, json={"id": "x", "status": "completed"})
    assert response.status_code == 204
    assert h.runapi.counters.status_calls == 1
    assert (await h.client.post(url, json={})).status_code == 204
    assert h.runapi.counters.status_calls == 1  # within the poll interval
    assert (await h.read(task["id"])).json()["status"] != "completed"
    assert (await h.client.post(f"/v1/callbacks/apiinone/{token}")).status_code == 404
    assert (await h.client.post("/v1/callbacks/runapi/not-a-token")).status_code == 404


async def test_pending_webhooks_survive_a_restart(harness_factory: Callable[..., Any]) -> None:
    failing = Receiver(fail_first=100)
    first: Harness = await harness_factory(
        webhooks=failing, status={"background_polling": True},
        webhooks_={"retry_delays_s": [0.3]},
    )  # fmt: skip
    await first.create({**BODY, "webhook_url": "https://hooks.example/v"})
    await until(lambda: len(failing.calls) >= 1)
    await first.stop()
    healthy = Receiver()
    await harness_factory(
        webhooks=healthy, status={"background_polling": True},
        sandboxes=(first.runapi, first.apiinone),
    )  # fmt: skip
    await until(lambda: len(healthy.calls) == 1)
    assert json.loads(healthy.calls[0][1])["status"] == "completed"


async def test_a_webhook_destination_that_turned_internal_is_refused_when_it_connects(
    harness_factory: Callable[..., Any], redis: Redis
) -> None:
    """The check is repeated on the address connected to: a URL that passed at create time but
    now leads inside (DNS rebinding, stood in for by rewriting the stored URL) gets no request,
    and is given up at once rather than retried."""
    receiver = Receiver()
    h: Harness = await harness_factory(
        knobs=Knobs(queue_s=0, complete_after_s=1.0),
        webhooks=receiver,
        status={"background_polling": True},
        webhooks_={"retry_delays_s": [0.1]},
    )
    created = await h.create({**BODY, "webhook_url": "https://hooks.example/v"})
    assert created.status_code == 202
    key = Keys.task(created.json()["id"])
    record = TaskRecord.model_validate_json(await redis.get(key) or b"")
    record.webhook_url = "http://127.0.0.1:9/hook"
    await redis.set(key, record.model_dump_json(), keepttl=True)

    async def given_up() -> float:
        return (await h.scrape()).value("gateway_webhook_deliveries_total", outcome="abandoned")

    deadline = time.monotonic() + 8
    while await given_up() < 1:
        assert time.monotonic() < deadline, "the delivery was not given up"
        await asyncio.sleep(0.1)
    scrape = await h.scrape()
    assert scrape.value("gateway_webhook_deliveries_total", outcome="rejected") == 1
    assert scrape.value("gateway_webhook_deliveries_total", outcome="unreachable") == 0
    assert receiver.calls == []
    # The dead letter is kept for an operator, with its error, and is off the schedule.
    ((raw, due),) = (await deliveries(redis)).values()
    assert json.loads(raw)["last_error"].startswith("refused:")
    assert due is None


async def test_a_create_whose_instance_died_ends_outcome_unknown_with_its_webhook(
    harness_factory: Callable[..., Any], redis: Redis
) -> None:
    """A task left with only its pending attempt (the instance died during the create) ends,
    once no create could still run, as ``upstream_outcome_unknown`` naming the provider that
    may bill it, through the one finalize (its webhook is queued), never as a plain failure."""
    receiver = Receiver()
    h: Harness = await harness_factory(webhooks=receiver, status={"background_polling": True})
    job = VideoJob(model="MiniMax-Hailuo-2.3", tier="standard", prompt="p", image=IMAGE,
                   duration=6, resolution="768P")  # fmt: skip
    record = TaskRecord.new("demo", job, webhook_url="https://hooks.example/v", metadata={})
    record.attempts = [Attempt(provider="runapi", outcome="pending")]
    record.created_at = record.updated_at = int(time.time()) - 3600  # long past any create
    await TaskStore(redis, ttl_s=3600).create(record, check_at=time.time())

    await until(lambda: len(receiver.calls) == 1)
    delivered = json.loads(receiver.calls[0][1])
    assert delivered["id"] == record.id
    assert delivered["status"] == "failed"
    assert delivered["error"]["code"] == "upstream_outcome_unknown"
    assert "runapi" in delivered["error"]["message"]
    assert h.upstream_creates == 0  # nothing is sent again
