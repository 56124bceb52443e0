"""What the adapter tests share: the test key, a canonical job, and the resellers under test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import respx
from pydantic import SecretStr

from providers.apiinone import APIInOneProvider
from providers.base import ProviderSettings, VideoJob
from providers.registry import ProviderClass
from providers.runapi import RunAPIProvider

KEY = "test-key-not-secret"
IMAGE = "https://img.example/first.png"
VIDEO = "https://cdn.example/out.mp4"


def job(**overrides: object) -> VideoJob:
    fields: dict[str, object] = {"prompt": "a cat surfs a wave", "image": IMAGE}
    fields.update(overrides)
    return VideoJob.model_validate(fields)


def envelope(data: object, code: int = 200, message: str = "success") -> dict[str, object]:
    """An API in One answer: every one of them comes in this envelope."""
    return {"code": code, "message": message, "data": data}


@dataclass(frozen=True)
class Reseller:
    """One adapter under test, one account of it, and where its upstream answers."""

    adapter: ProviderClass
    account: str
    base: str
    create: str
    status_prefix: str
    task_id: str
    task: dict[str, object]
    """An answer carrying :attr:`task_id` that reads both as a create and as a status answer."""

    @property
    def status(self) -> str:
        return f"{self.status_prefix}/{self.task_id}"

    def settings(self) -> ProviderSettings:
        return ProviderSettings(name=self.account, base_url=self.base, api_key=SecretStr(KEY))


RUNAPI_TASK_ID = "6f1c2a9e-0000-4000-8000-000000000001"
APIINONE_TASK_ID = "n51abc_hailuo"

RUNAPI = Reseller(
    adapter=RunAPIProvider,
    account="runapi-main",
    base="https://runapi.test",
    create="/api/v1/hailuo/image_to_video",
    status_prefix="/api/v1/hailuo/image_to_video",
    task_id=RUNAPI_TASK_ID,
    task={"id": RUNAPI_TASK_ID, "status": "pending"},
)

APIINONE = Reseller(
    adapter=APIInOneProvider,
    account="aio-main",
    base="https://apiinone.test",
    create="/api/v1/videos/generations",
    status_prefix="/api/v1/tasks",
    task_id=APIINONE_TASK_ID,
    task=envelope({"task_id": APIINONE_TASK_ID, "status": "IN_PROGRESS"}),
)


def reseller_id(value: object) -> str | None:
    """Test ids that name the reseller (``runapi``) instead of ``reseller0``."""
    return value.adapter.kind if isinstance(value, Reseller) else None


@contextmanager
def upstream(reseller: Reseller) -> Iterator[respx.MockRouter]:
    """The reseller's HTTP API, mocked; routes a test leaves uncalled are no failure."""
    with respx.mock(base_url=reseller.base, assert_all_called=False) as router:
        yield router


def mockable() -> httpx.AsyncHTTPTransport:
    """httpx's own transport for an adapter under test: respx intercepts its connection pool
    (the adapters' default aiohttp transport is tested against real sockets instead)."""
    return httpx.AsyncHTTPTransport()


def answer(route: respx.Route, http_status: int, body: object) -> None:
    """Make ``route`` answer ``body``: a string as an HTML page, anything else as JSON."""
    if isinstance(body, str):
        route.respond(http_status, text=body, headers={"Content-Type": "text/html"})
    else:
        route.respond(http_status, json=body)
