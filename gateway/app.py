"""The app factory: ``create_app(settings, secrets) -> Litestar``.

Resources (Redis, the embedded server, provider clients) are owned by the lifespan and handed
to handlers through dependency injection; nothing is global.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from gateway import __version__
from gateway.api import ProviderController, VideoController, healthz, readyz
from gateway.auth import ClientKeys
from gateway.catalogue import ProviderCatalogue
from gateway.config import Secrets, Settings
from gateway.embedded_redis import EmbeddedRedis
from gateway.errors import exception_handlers
from gateway.health import Health, Readiness
from gateway.idempotency import IdempotentCreates
from gateway.router import Route, Router
from gateway.service import VideoService
from gateway.store import IdempotencyStore, TaskStore, connect
from providers.base import ProviderSettings
from providers.registry import build_provider

logger = logging.getLogger(__name__)


@dataclass
class Resources:
    service: VideoService
    readiness: Readiness
    catalogue: ProviderCatalogue


def _longest_create_s(settings: Settings) -> float:
    """An upper bound on how long one create can take: after that, an in-flight
    idempotency key belongs to a request that died."""
    per_call = max(
        (p.connect_timeout_s + p.timeout_s for p in settings.providers.values()), default=33.0
    )
    return settings.routing.max_attempts * per_call + 30.0


def build_routes(
    settings: Settings,
    secrets: Secrets,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> list[Route]:
    routes = []
    for order, (name, cfg) in enumerate(settings.providers.items()):
        if not cfg.enabled:
            continue
        provider_settings = ProviderSettings(
            name=name,
            base_url=cfg.base_url,
            api_key=secrets.provider_keys[name],
            connect_timeout_s=cfg.connect_timeout_s,
            timeout_s=cfg.timeout_s,
        )
        adapter = build_provider(
            cfg.kind, provider_settings, transport=(transports or {}).get(name)
        )
        routes.append(Route(name=name, config=cfg, adapter=adapter, file_order=order))
    return routes


def create_app(
    settings: Settings,
    secrets: Secrets,
    *,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> Litestar:
    """Build the app. ``transports`` lets tests put a provider behind an httpx transport."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        embedded = None
        url = settings.redis.url
        if url is None:
            embedded = EmbeddedRedis(settings.redis.data_dir)
            url = embedded.start()
        redis = connect(url)
        routes = build_routes(settings, secrets, transports)
        store = TaskStore(redis, ttl_s=int(settings.status.task_ttl_days * 86400))
        health = Health(redis, settings.routing.circuit, [r.name for r in routes])
        router = Router(routes, settings.routing, health)
        idempotent = IdempotentCreates(
            IdempotencyStore(redis, ttl_s=settings.idempotency.ttl_s),
            store,
            stale_after_s=_longest_create_s(settings),
        )
        app.state.resources = Resources(
            service=VideoService(store, router, health, idempotent, settings.status),
            readiness=Readiness(store.ping, health, [r.name for r in routes]),
            catalogue=ProviderCatalogue(settings, health),
        )
        try:
            yield
        finally:
            for route in routes:
                await route.adapter.aclose()
            await redis.aclose()
            if embedded is not None:
                embedded.stop()

    def service(state: State) -> VideoService:
        resources: Resources = state.resources
        return resources.service

    def readiness(state: State) -> Readiness:
        resources: Resources = state.resources
        return resources.readiness

    def catalogue(state: State) -> ProviderCatalogue:
        resources: Resources = state.resources
        return resources.catalogue

    return Litestar(
        route_handlers=[VideoController, ProviderController, healthz, readyz],
        lifespan=[lifespan],
        state=State({"client_keys": ClientKeys(secrets.client_keys)}),
        dependencies={
            "service": Provide(service, sync_to_thread=False),
            "readiness": Provide(readiness, sync_to_thread=False),
            "catalogue": Provide(catalogue, sync_to_thread=False),
        },
        exception_handlers=exception_handlers(),
        openapi_config=OpenAPIConfig(
            title="Hailuo 2.3 video gateway", version=__version__, path="/schema"
        ),
        request_max_body_size=settings.server.max_body_bytes,
        logging_config=None,  # logging is configured once, by the CLI
        debug=False,
    )
