"""The real app, in process, on a real Redis, with the simulated resellers behind httpx's ASGI
transport (their real wire formats, no sockets). End-to-end tests with separate processes live
in ``tests/e2e``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.config import Settings, resolve_secrets, settings_from_mapping
from providers.sandbox import apiinone as sandbox_apiinone
from providers.sandbox import runapi as sandbox_runapi
from providers.sandbox.engine import Knobs, SandboxState

CLIENT_KEY = "client-key-for-tests"
OTHER_KEY = "other-client-key-for-tests"
ENV = {
    "GATEWAY_KEY_DEMO": CLIENT_KEY,
    "GATEWAY_KEY_OTHER": OTHER_KEY,
    "RUNAPI_API_KEY": "sandbox-runapi-key",
    "APIINONE_API_KEY": "sandbox-apiinone-key",
}
FAST = Knobs(queue_s=0.0, complete_after_s=0.0)
IMAGE = "https://example.com/first-frame.png"


def base_config(redis_url: str) -> dict[str, Any]:
    return {
        "redis": {"url": redis_url},
        "auth": {
            "keys": [
                {"name": "demo", "key_env": "GATEWAY_KEY_DEMO"},
                {"name": "other", "key_env": "GATEWAY_KEY_OTHER"},
            ]
        },
        "status": {"poll_interval_s": 1},
        "providers": {
            "runapi": {
                "kind": "runapi",
                "base_url": "http://runapi.sandbox",
                "api_key_env": "RUNAPI_API_KEY",
                "timeout_s": 1,
                "prices_usd": {
                    "standard": {"6s_768P": 0.30, "10s_768P": 0.50, "6s_1080P": 0.50},
                    "pro": {"6s_768P": 0.45, "10s_768P": 0.90, "6s_1080P": 0.80},
                },
            },
            "apiinone": {
                "kind": "apiinone",
                "base_url": "http://apiinone.sandbox",
                "api_key_env": "APIINONE_API_KEY",
                "timeout_s": 1,
                "prices_usd": {
                    "standard": {"6s_768P": 0.32, "10s_768P": 0.45, "6s_1080P": 0.45},
                    "pro": {"6s_768P": 0.45, "10s_768P": 0.85, "6s_1080P": 0.85},
                },
            },
        },
    }


def asgi(app: Litestar) -> httpx.ASGITransport:
    # Litestar's precise ASGI types do not unify with httpx's loose ones; the app is ASGI.
    return httpx.ASGITransport(app=app)  # type: ignore[arg-type]


@dataclass
class Harness:
    client: AsyncTestClient[Any]
    runapi: SandboxState
    apiinone: SandboxState
    settings: Settings

    def headers(self, key: str = CLIENT_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def create(self, body: dict[str, Any], key: str = CLIENT_KEY) -> httpx.Response:
        return await self.client.post("/v1/videos", json=body, headers=self.headers(key))

    async def read(self, task_id: str, key: str = CLIENT_KEY) -> httpx.Response:
        return await self.client.get(f"/v1/videos/{task_id}", headers=self.headers(key))

    @property
    def upstream_creates(self) -> int:
        return self.runapi.counters.create_calls + self.apiinone.counters.create_calls


MakeHarness = Callable[..., Any]


@pytest.fixture
async def harness_factory(redis: Redis, redis_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Build a harness with config tweaks: ``await make(routing={...})``."""
    opened: list[AsyncTestClient[Any]] = []

    async def make(
        knobs: Knobs = FAST, redis_url_override: str | None = None, **sections: Any
    ) -> Harness:
        data = base_config(redis_url_override or redis_url)
        for section, values in sections.items():
            data[section] = {**data.get(section, {}), **values}
        settings = settings_from_mapping(data, {})
        runapi = SandboxState("runapi", ENV["RUNAPI_API_KEY"], knobs)
        apiinone = SandboxState("apiinone", ENV["APIINONE_API_KEY"], knobs)
        transports = {
            "runapi": asgi(sandbox_runapi.create_app(runapi)),
            "apiinone": asgi(sandbox_apiinone.create_app(apiinone)),
        }
        app = create_app(settings, resolve_secrets(settings, ENV), transports=transports)
        client = AsyncTestClient(app)
        await client.__aenter__()
        opened.append(client)
        return Harness(client, runapi, apiinone, settings)

    yield make
    for client in opened:
        await client.__aexit__(None, None, None)


@pytest.fixture
async def harness(harness_factory: Callable[..., Any]) -> Harness:
    made: Harness = await harness_factory()
    return made
