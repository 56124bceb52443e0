"""Metrics, request ids, access logs and readiness through the real app (api.md §5).

The scripted sequence: two creates (the second fails over from runapi to apiinone), then one
task completes and the other fails. Its counters are read from ``GET /metrics`` as Prometheus
would, and must be exact.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from gateway import __version__
from gateway.app import create_app
from gateway.config import resolve_secrets, settings_from_mapping
from gateway.logs import JsonFormatter
from gateway.metrics import (
    BUDGET_PERIODS,
    COPY_OUTCOMES,
    DELETION_OUTCOMES,
    ERROR_OUTCOMES,
    FAILOVER_REASONS,
    FINAL_STATUSES,
    HTTP_METHODS,
    OTHER,
    REDIS_OPERATIONS,
    RELOAD_OUTCOMES,
    RESOLUTIONS,
    SUCCESS,
    TIERS,
    UNMATCHED,
    WEBHOOK_OUTCOMES,
)
from providers.sandbox import apiinone as sandbox_apiinone
from providers.sandbox.engine import FAIL_MARKER, SandboxState
from tests.integration.conftest import (
    CLIENT_KEY,
    ENV,
    FAST,
    IMAGE,
    Harness,
    asgi,
    base_config,
)
from tests.scrape import Scrape

PROVIDERS = ("runapi", "apiinone")


@dataclass
class Script:
    """What the scripted sequence did, to compare with what /metrics says."""

    tasks: list[dict[str, Any]]
    reads: int


async def run_script(h: Harness) -> Script:
    """Two creates, one failover, one completed and one failed task; lookups until final."""
    first = await h.create({"prompt": "a lighthouse at dawn", "image": IMAGE})
    assert first.status_code == 202
    h.runapi.update_knobs({"create_fault": "http_500"})
    second = await h.create({"prompt": f"a storm at sea {FAIL_MARKER}", "image": IMAGE})
    assert second.status_code == 202
    h.runapi.update_knobs({"create_fault": "none"})
    reads, final = 0, []
    for created in (first.json(), second.json()):
        while True:
            reads += 1
            task = (await h.read(created["id"])).json()
            if task["status"] in FINAL_STATUSES:
                final.append(task)
                break
            await asyncio.sleep(0.2)
    assert [(t["provider"], t["status"]) for t in final] == [
        ("runapi", "completed"),
        ("apiinone", "failed"),
    ]
    return Script(tasks=final, reads=reads)


@pytest.fixture
async def scripted(harness_factory: Callable[..., Any]) -> tuple[Harness, Script, Scrape]:
    # One attempt per generation: a failed task stays failed (no resubmission elsewhere).
    h: Harness = await harness_factory(status={"resubmit_failed": 0})
    script = await run_script(h)
    return h, script, await h.scrape()


async def test_scripted_traffic_counts_upstream_creates_failovers_and_requests_exactly(
    scripted: tuple[Harness, Script, Scrape],
) -> None:
    _, script, s = scripted
    creates = s.nonzero("gateway_upstream_calls_total", "provider", "outcome", operation="create")
    assert creates == {
        ("runapi", "accepted"): 1,
        ("runapi", "upstream_unavailable"): 1,
        ("apiinone", "accepted"): 1,
    }
    latency = "gateway_upstream_request_duration_seconds_count"
    assert s.value(latency, provider="runapi", operation="create") == 2
    assert s.value(latency, provider="apiinone", operation="create") == 1
    assert s.nonzero("gateway_failovers_total", "from_provider", "to_provider", "reason") == {
        ("runapi", "apiinone", "upstream_unavailable"): 1
    }
    assert s.nonzero("gateway_ambiguous_submits_total", "provider") == {}
    assert s.nonzero("gateway_http_requests_total", "route", "method", "status") == {
        ("/v1/videos", "POST", "202"): 2,
        ("/v1/videos/{task_id}", "GET", "200"): script.reads,
    }
    duration = "gateway_http_request_duration_seconds_count"
    assert s.value(duration, route="/v1/videos", method="POST") == 2
    for provider in PROVIDERS:  # one failure is under the threshold: both circuits closed
        assert s.value("gateway_circuit_state", provider=provider) == 0
    assert s.nonzero("gateway_redis_errors_total", "operation") == {}
    assert s.value("gateway_build_info", version=__version__) == 1


# The next test needs the hooks in the create and refresh paths (service.py / poller.py):
# Metrics.task_created, Metrics.task_finished and Metrics.upstream_call(..., "status", ...).
async def test_scripted_traffic_counts_tasks_spend_outcomes_and_status_calls_exactly(
    scripted: tuple[Harness, Script, Scrape],
) -> None:
    h, script, s = scripted
    assert s.nonzero("gateway_tasks_created_total", "provider", "tier", "resolution") == {
        ("runapi", "standard", "768P"): 1,
        ("apiinone", "standard", "768P"): 1,
    }
    # Spend means billed: only the completed task counts (resellers bill successful ones).
    spend = {p: s.value("gateway_spend_usd_total", provider=p) for p in PROVIDERS}
    assert spend == pytest.approx({"runapi": 0.30, "apiinone": 0.0})
    completed = [t for t in script.tasks if t["status"] == "completed"]
    assert sum(spend.values()) == pytest.approx(sum(t["price_usd"] for t in completed))
    assert s.value("gateway_client_spend_usd_total", client="demo") == pytest.approx(0.30)
    assert s.value("gateway_client_spend_usd_total", client="other") == 0
    assert s.nonzero("gateway_spend_at_risk_usd_total", "provider") == {}
    assert s.nonzero("gateway_tasks_finished_total", "provider", "status") == {
        ("runapi", "completed"): 1,
        ("apiinone", "failed"): 1,
    }
    finish = "gateway_task_time_to_finish_seconds_count"
    assert s.value(finish, provider="runapi", status="completed") == 1
    assert s.value(finish, provider="apiinone", status="failed") == 1
    status_calls = s.nonzero("gateway_upstream_calls_total", "provider", "outcome",
                             operation="status")  # fmt: skip
    assert status_calls == {
        ("runapi", "ok"): h.runapi.counters.status_calls,
        ("apiinone", "ok"): h.apiinone.counters.status_calls,
    }
    assert h.runapi.counters.status_calls >= 1
    assert h.apiinone.counters.status_calls >= 1


async def test_an_ambiguous_submit_is_counted_for_its_provider(
    redis: Redis,  # a clean database
    redis_url: str,
) -> None:
    def read_timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    settings = settings_from_mapping(base_config(redis_url), {})
    sandbox = SandboxState("apiinone", ENV["APIINONE_API_KEY"], FAST)
    transports = {
        "runapi": httpx.MockTransport(read_timeout),
        "apiinone": asgi(sandbox_apiinone.create_app(sandbox)),
    }
    app = create_app(settings, resolve_secrets(settings, ENV), transports=transports)
    async with AsyncTestClient(app) as client:
        h = Harness(
            client, SandboxState("runapi", "unused", FAST), sandbox, settings,
            SandboxState("minimax", "unused", FAST),
        )  # fmt: skip
        response = await h.create({"prompt": "a quiet harbour", "image": IMAGE})
        assert response.json()["code"] == "upstream_outcome_unknown"
        s = await h.scrape()
    assert s.nonzero("gateway_ambiguous_submits_total", "provider") == {("runapi",): 1}
    assert s.nonzero("gateway_spend_at_risk_usd_total", "provider") == {("runapi",): 0.30}
    assert s.nonzero("gateway_spend_usd_total", "provider") == {}
    assert s.nonzero("gateway_upstream_calls_total", "provider", "operation", "outcome") == {
        ("runapi", "create", "outcome_unknown"): 1
    }
    assert s.nonzero("gateway_failovers_total", "from_provider", "to_provider", "reason") == {}
    assert sandbox.counters.create_calls == 0  # not sent elsewhere: it may bill twice


async def test_circuit_state_gauge_shows_an_open_circuit(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(routing={"circuit": {"failures_to_open": 1}})
    h.runapi.update_knobs({"create_fault": "http_503"})
    assert (await h.create({"prompt": "a red kite", "image": IMAGE})).status_code == 202
    s = await h.scrape()
    assert s.value("gateway_circuit_state", provider="runapi") == 2
    assert s.value("gateway_circuit_state", provider="apiinone") == 0


HOSTILE = "zq9hostile"
"""A marker no label value may ever contain."""


def allowed_label_values(h: Harness) -> dict[str, set[str]]:
    """Every value each label may take: all fixed by config, code or the route table."""
    routes = {r.path_format for r in h.client.app.routes} | {UNMATCHED}
    providers = {*PROVIDERS, OTHER}
    outcomes = {*SUCCESS.values(), *ERROR_OUTCOMES}
    return {
        "route": routes,
        "method": {*HTTP_METHODS, OTHER},
        "status": {*FINAL_STATUSES, OTHER} | {str(code) for code in range(100, 600)},
        "provider": providers,
        "from_provider": providers,
        "to_provider": providers,
        "operation": {*SUCCESS, *REDIS_OPERATIONS},
        "outcome": {
            *outcomes,
            *WEBHOOK_OUTCOMES,
            *COPY_OUTCOMES,
            *DELETION_OUTCOMES,
            *RELOAD_OUTCOMES,
            OTHER,
        },
        "reason": {*FAILOVER_REASONS, OTHER},
        "tier": {*TIERS, OTHER},
        "resolution": {*RESOLUTIONS, OTHER},
        "version": {__version__},
        "client": {*(k.name for k in h.settings.auth.keys), OTHER},
        "period": {*BUDGET_PERIODS, OTHER},
    }


async def send_hostile_traffic(h: Harness) -> None:
    bad_paths = [
        f"/v1/videos/{HOSTILE}",
        f"/v1/videos/vid_{HOSTILE}/../../etc/passwd",
        f"/{HOSTILE}/<script>",
        f"/v1/{HOSTILE}?q={HOSTILE}",
        "/" + HOSTILE * 200,
        f"/v1/videos/%00{HOSTILE}%ff",
        f"/v1/callbacks/{HOSTILE}/{HOSTILE}",
    ]
    headers = {
        **h.headers(),
        "X-Request-Id": f'{HOSTILE}"}} evil',
        "Idempotency-Key": HOSTILE,
        "User-Agent": HOSTILE,
        "X-Forwarded-For": HOSTILE,
    }
    for path in bad_paths:
        await h.client.get(path, headers=headers)
        await h.client.post(path, headers=headers, json={"prompt": HOSTILE})
    await h.client.request("BREW", "/v1/videos", headers=headers)
    await h.client.request(HOSTILE.upper(), f"/{HOSTILE}", headers=headers)
    await h.client.get("/v1/videos", headers={"Authorization": f"Bearer {HOSTILE}"})
    bodies: list[dict[str, Any]] = [
        {"prompt": f"{HOSTILE} prompt", "image": IMAGE, "metadata": {HOSTILE: HOSTILE}},
        {"prompt": "ok", "image": IMAGE, "model": HOSTILE},
        {"prompt": "ok", "image": IMAGE, "routing": {"providers": [HOSTILE]}},
        {"prompt": "ok", "image": f"https://{HOSTILE}.example/x.png", "tier": HOSTILE},
        {"prompt": "ok", "image": IMAGE, "webhook_url": f"https://{HOSTILE}.example/hook"},
        {"prompt": "ok", "image": IMAGE, HOSTILE: 1},
    ]
    for body in bodies:
        await h.client.post("/v1/videos", json=body, headers=headers)
    created = await h.create({"prompt": f"[{HOSTILE}]", "image": IMAGE})
    await h.read(created.json()["id"])
    await h.client.get(f"/v1/videos/vid_{HOSTILE}", headers=headers)


async def test_no_label_value_comes_from_client_input(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory()
    await send_hostile_traffic(h)
    s = await h.scrape()
    assert HOSTILE not in s.text.lower()
    allowed = allowed_label_values(h)
    for sample in s:
        for name, value in sample.labels.items():
            if name == "le":
                float(value)  # a bucket bound
                continue
            assert name in allowed, f"{sample.name}: unexpected label {name}"
            assert value in allowed[name], f"{sample.name}{{{name}={value!r}}}"
    # The hostile requests were counted, under bounded labels.
    unmatched = s.nonzero("gateway_http_requests_total", "method", "status", route=UNMATCHED)
    assert unmatched[("GET", "404")] >= 4
    assert unmatched[(OTHER, "404")] >= 1 or unmatched.get((OTHER, "405"), 0) >= 1


async def test_metrics_endpoint_needs_no_key_and_is_not_in_the_openapi_schema(
    harness: Harness,
) -> None:
    response = await harness.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "gateway_build_info" in response.text
    schema = (await harness.client.get("/schema/openapi.json")).json()
    assert "/metrics" not in schema["paths"]


async def test_a_sane_request_id_is_echoed_and_anything_else_replaced(harness: Harness) -> None:
    sane = await harness.client.get("/healthz", headers={"X-Request-Id": "req-42.a:b_C"})
    assert sane.headers["x-request-id"] == "req-42.a:b_C"
    for bad in (b"", b"x" * 129, b"has space", b'quote"', "ünïcode".encode(), b"-leading"):
        response = await harness.client.get("/healthz", headers={b"X-Request-Id": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"]), bad
    missing = await harness.client.get("/no/such/route")
    assert missing.status_code == 404
    assert re.fullmatch(r"[0-9a-f]{32}", missing.headers["x-request-id"])
    ids = {(await harness.client.get("/healthz")).headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The gateway's JSON log lines, formatted as they are written (in the request's context)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


async def test_each_request_writes_one_json_line_without_secrets_or_prompt(
    harness: Harness, json_log: io.StringIO
) -> None:
    prompt = "a secret-looking prompt about a violet comet"
    response = await harness.client.post(
        "/v1/videos",
        json={"prompt": prompt, "image": IMAGE},
        headers={**harness.headers(), "X-Request-Id": "trace-create-1"},
    )
    assert response.status_code == 202
    task_id = response.json()["id"]
    await harness.read(task_id)
    await harness.client.get("/nowhere")
    log = lines(json_log)
    requests = [e for e in log if e["logger"] == "gateway.access"]
    assert [(e["route"], e["method"], e["status"]) for e in requests] == [
        ("/v1/videos", "POST", 202),
        ("/v1/videos/{task_id}", "GET", 200),
        (UNMATCHED, "GET", 404),
    ]
    create = requests[0]
    assert create["request_id"] == "trace-create-1"
    assert create["client"] == "demo"
    assert create["level"] == "info"
    assert isinstance(create["latency_ms"], float)
    assert "client" not in requests[2]
    upstream = [e for e in log if e.get("provider") and e.get("operation") == "create"]
    assert [(e["provider"], e["outcome"]) for e in upstream] == [("runapi", "accepted")]
    assert upstream[0]["request_id"] == "trace-create-1"
    text = json_log.getvalue()
    for secret in (CLIENT_KEY, "sandbox-runapi-key", "sandbox-apiinone-key", prompt, "violet"):
        assert secret not in text
    assert "/nowhere" not in json.dumps(requests)


async def test_probes_and_scrapes_log_at_debug(harness: Harness, json_log: io.StringIO) -> None:
    await harness.client.get("/healthz")
    await harness.client.get("/metrics")
    requests = [e for e in lines(json_log) if e["logger"] == "gateway.access"]
    assert [(e["route"], e["level"]) for e in requests] == [
        ("/healthz", "debug"),
        ("/metrics", "debug"),
    ]


async def test_readyz_names_every_open_circuit_as_the_reason(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(routing={"circuit": {"failures_to_open": 1}})
    h.runapi.update_knobs({"create_fault": "http_500"})
    h.apiinone.update_knobs({"create_fault": "http_503"})
    await h.create({"prompt": "a moth", "image": IMAGE})
    ready = await h.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "reasons": ["every provider's circuit is open"],
    }
    s = await h.scrape()
    assert {p: s.value("gateway_circuit_state", provider=p) for p in PROVIDERS} == {
        "runapi": 2,
        "apiinone": 2,
    }


async def test_redis_outage_fails_readyz_and_counts_redis_errors(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(redis_url_override="redis://127.0.0.1:1/0")
    ready = await h.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    assert ready.json()["reasons"][0].startswith("redis unreachable")
    s = await h.scrape()  # still served: Prometheus must see the outage
    errors = s.nonzero("gateway_redis_errors_total", "operation")
    # The deletion channel's subscriber retries once a second in the background: counted too,
    # as often as it ran by now.
    errors.pop(("invalidation",), None)
    assert errors == {
        ("ping",): 1, ("health",): 1, ("budgets",): 1,  # the scrape reads budget use too
    }  # fmt: skip
