"""The app factory: ``create_app(settings, secrets) -> Litestar``.

Resources (Redis, the embedded server, provider clients) are owned by the lifespan and handed
to handlers through dependency injection; nothing is global.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide

from gateway.access import RequestObserver
from gateway.api import (
    ProviderController,
    UsageController,
    VideoController,
    healthz,
    readyz,
    scrape_metrics,
    upstream_callback,
)
from gateway.auth import Authorizer
from gateway.balance import Balances, Watched
from gateway.budgets import Budgets, BudgetTable
from gateway.cache import FinalTasks
from gateway.catalogue import ProviderCatalogue
from gateway.config import BudgetSettings, Secrets, Settings
from gateway.content import VideoContent, VideoContentController
from gateway.drain import Drain
from gateway.embedded_redis import EmbeddedRedis
from gateway.errors import exception_handlers
from gateway.health import Health, Readiness
from gateway.idempotency import IdempotencyStore, IdempotentCreates
from gateway.invalidation import Invalidations
from gateway.listing import TaskIndex, TaskListing, stored_copy_deleter
from gateway.live import LiveSettings, Reloader, ReloadSource, take_early_hangup
from gateway.metrics import Metrics
from gateway.netguard import AddressPolicy
from gateway.openai_compat import MAX_FORM_PARTS
from gateway.openapi import PATH as OPENAPI_PATH
from gateway.openapi import describe_deployment, openapi_config
from gateway.poller import Poller
from gateway.ratelimit import RateLimiter
from gateway.redis_client import REDIS_FAILURES, RedisClient, connect, learn_topology
from gateway.retention import Retention
from gateway.router import Route, Router
from gateway.service import ServiceOptions, VideoService
from gateway.shortcut import FinalTaskShortcut
from gateway.status import Finalizer, Refresher
from gateway.storage import VideoStore, open_video_store
from gateway.store import TaskStore
from gateway.video_copy import CopyQueue, VideoCopier
from gateway.video_source import VideoSource
from gateway.webhooks import WebhookSender
from providers.base import BalanceReader, ProviderSettings
from providers.registry import build_provider

logger = logging.getLogger(__name__)


@dataclass
class Resources:
    """What the handlers use, and the background loops that run beside them."""

    service: VideoService
    budgets: Budgets
    readiness: Readiness
    catalogue: ProviderCatalogue
    health: Health
    authorizer: Authorizer
    live: LiveSettings
    routes: list[Route]
    listing: TaskListing
    loops: list[Poller | WebhookSender | Balances | VideoCopier | Retention | Invalidations]
    content: VideoContent
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(loop.run()) for loop in self.loops]

    async def stop(self) -> None:
        """Loops first (the poller lets resubmissions in flight finish), then accepted tasks
        still being recorded; adapters and Redis are closed by the caller after."""
        for loop in self.loops:
            await loop.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.service.drain()
        for route in self.routes:
            await route.adapter.aclose()


def build_resources(
    settings: Settings,
    secrets: Secrets,
    redis: RedisClient,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    webhook_transport: httpx.AsyncBaseTransport | None = None,
    *,
    metrics: Metrics,
    video_transport: httpx.AsyncBaseTransport | None = None,
) -> Resources:
    routes = build_routes(settings, secrets, transports)
    names = [r.name for r in routes]
    live = LiveSettings(settings, adapters=names, client_keys=secrets.client_keys)
    store = TaskStore(redis, ttl_s=int(settings.status.task_ttl_days * 86400), metrics=metrics)
    health = Health(redis, settings.routing.circuit, names, metrics=metrics)
    balances = Balances(
        redis, watched_balances(routes), metrics=metrics,
        current=lambda name: getattr(live.settings.providers.get(name), "balance", None),
    )  # fmt: skip
    budgets = Budgets(redis, budget_table(live), metrics=metrics)
    router = Router(routes, live, health, metrics=metrics, balances=balances)
    create_timeout_s = _longest_create_s(settings)
    webhook_secret = secrets.webhook_secret.get_secret_value() if secrets.webhook_secret else None
    videos = (
        open_video_store(settings.storage, settings.redis.data_dir, secrets)
        if settings.storage.enabled else None
    )  # fmt: skip
    wake_copier = asyncio.Event()
    finalizer = Finalizer(store, health, budgets=budgets, metrics=metrics,
                          webhooks_enabled=webhook_secret is not None)  # fmt: skip
    refresher = Refresher(
        store, router, finalizer, settings.status,
        health=health, public_url=settings.server.public_url,
        metrics=metrics, budgets=budgets, create_timeout_s=create_timeout_s,
        copies=CopyQueue(store, wake_copier) if videos is not None else None,
    )  # fmt: skip
    idempotent = IdempotentCreates(
        IdempotencyStore(redis, ttl_s=settings.idempotency.ttl_s, metrics=metrics),
        store,
        stale_after_s=create_timeout_s,
    )
    options = ServiceOptions(
        listen_host=settings.server.host,
        listen_port=settings.server.port,
        public_url=settings.server.public_url,
        webhooks_enabled=webhook_secret is not None,
        webhooks=settings.webhooks,
        create_timeout_s=create_timeout_s,
        first_poll_s=settings.status.poll_interval_s,
        accept_retry_s=settings.redis.accept_retry_s,
        expected_render_s=settings.status.expected_render_s,
    )
    final = FinalTasks()
    invalidations = Invalidations(redis, final, metrics=metrics)
    listing = TaskListing(
        store, TaskIndex(redis, ttl_s=store.ttl_s), final, invalidations, metrics=metrics,
        delete_copy=None if videos is None else stored_copy_deleter(
            Retention(store, videos, metrics=metrics)
        ),
    )  # fmt: skip
    loops: list[Poller | WebhookSender | Balances | VideoCopier | Retention | Invalidations] = [
        invalidations, *([balances] if balances.watched else [])
    ]  # fmt: skip
    if videos is not None:
        loops += _video_loops(settings, store, videos, finalizer, wake_copier, video_transport,
                              metrics)  # fmt: skip
    if settings.status.background_polling:
        slowest_status = max((r.config.timeout_s for r in routes), default=30.0)
        lease_s = slowest_status + 10
        loops.append(
            Poller(store, refresher, settings.status, create_timeout_s=create_timeout_s,
                   lease_s=lease_s, metrics=metrics, finalizer=finalizer)
        )  # fmt: skip
    if webhook_secret is not None:
        loops.append(WebhookSender(
            redis, store, settings.webhooks, webhook_secret, settings.server.host,
            settings.server.port, metrics=metrics, transport=webhook_transport,
        ))  # fmt: skip
    return Resources(
        service=VideoService(
            store,
            router,
            refresher,
            finalizer,
            idempotent,
            options,
            metrics=metrics,
            budgets=budgets,
            final_tasks=final,
            on_named=listing.indexed,
        ),
        budgets=budgets,
        listing=listing,
        readiness=Readiness(store.ping, health, live.enabled, metrics=metrics),
        catalogue=ProviderCatalogue(live, health, balances),
        health=health,
        authorizer=Authorizer(
            live.client_keys, RateLimiter(redis, live.rate_limits, metrics=metrics)
        ),
        live=live,
        routes=routes,
        loops=loops,
        content=VideoContent(store, videos, redirect=settings.storage.redirect, metrics=metrics),
    )


def _video_loops(
    settings: Settings,
    store: TaskStore,
    videos: VideoStore,
    finalizer: Finalizer,
    wake: asyncio.Event,
    transport: httpx.AsyncBaseTransport | None,
    metrics: Metrics,
) -> list[VideoCopier | Retention]:
    """The copier of finished videos and the retention sweeper (``storage.enabled``)."""
    retention = Retention(store, videos, metrics=metrics)
    policy = AddressPolicy(allow_private=settings.storage.allow_private_sources)
    copier = VideoCopier(
        store, videos, VideoSource(policy, settings.storage.max_bytes, transport), retention,
        settings.storage, finalize=finalizer.finalize, public_url=settings.server.public_url,
        metrics=metrics, wake=wake,
    )  # fmt: skip
    logger.info("finished videos are copied to %s", videos.description)
    return [copier, retention]


def budget_table(live: LiveSettings) -> BudgetTable:
    """Clients' budgets, read from the live settings when asked (a reload changes them)."""

    def table() -> dict[str, BudgetSettings | None]:
        return {k.name: k.budget_usd for k in live.settings.auth.keys}

    return table


def watched_balances(routes: list[Route]) -> dict[str, Watched]:
    """The providers with ``balance`` configured whose adapter can read it."""
    return {
        r.name: Watched(r.adapter, r.config.balance)
        for r in routes
        if r.config.balance is not None and isinstance(r.adapter, BalanceReader)
    }


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
    """An adapter for each provider with an API key (``Secrets.provider_keys``): the enabled
    ones, and disabled ones a reload may enable; the router skips those disabled now."""
    routes = []
    for order, (name, cfg) in enumerate(settings.providers.items()):
        if name not in secrets.provider_keys:
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


def reload_on_hangup(
    live: LiveSettings, source: ReloadSource | None, metrics: Metrics
) -> Callable[[], None]:
    """Install the ``SIGHUP`` handler (when ``source`` is given); returns its removal."""
    if source is None:
        return lambda: None
    reloader = Reloader(live, source, metrics=metrics)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reloader.reload)
    if take_early_hangup():  # asked while this process was starting: apply it now
        reloader.reload()

    def remove() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return remove


def _route_methods(app: Litestar) -> dict[str, set[str]]:
    """Route template → the methods whose duration series start at 0 (none for the OpenAPI
    pages, which are routes too but need no zeros)."""
    methods: dict[str, set[str]] = {}
    for route in app.routes:
        initial = () if route.path_format.startswith(OPENAPI_PATH) else route.methods
        methods[route.path_format] = {str(m) for m in initial} - {"OPTIONS", "HEAD"}
    return methods


def create_app(
    settings: Settings,
    secrets: Secrets,
    *,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    webhook_transport: httpx.AsyncBaseTransport | None = None,
    metrics: Metrics | None = None,
    reload: ReloadSource | None = None,
    video_transport: httpx.AsyncBaseTransport | None = None,
) -> Litestar:
    """Build the app. ``transports`` lets tests put a provider behind an httpx transport;
    ``metrics`` defaults to a new registry for the providers with an adapter (those with an
    API key: the enabled ones, and disabled ones a reload may enable). ``reload`` reads the
    settings again (the same file and overrides) and names the environment the process started
    with (for the keys of a changed client list): given, ``SIGHUP`` applies what it reads
    (``gateway.live``)."""
    if metrics is None:
        metrics = Metrics(list(secrets.provider_keys), clients=[k.name for k in settings.auth.keys])
    observed = metrics

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        embedded = None
        url = settings.redis.url
        if url is None:
            embedded = EmbeddedRedis(settings.redis.data_dir)
            url = embedded.start()
        redis = connect(url)
        try:
            await learn_topology(redis)
        except REDIS_FAILURES as exc:  # a Cluster down at start: learnt on first use instead
            observed.redis_error("ping")
            logger.warning("Redis Cluster unreachable at start", extra={"error": repr(exc)})
        resources = build_resources(
            settings, secrets, redis, transports, webhook_transport, metrics=observed,
            video_transport=video_transport,
        )  # fmt: skip
        app.state.resources = resources
        await resources.start()
        hup = reload_on_hangup(resources.live, reload, observed)
        drain = Drain(settings.server.drain_s)
        resources.readiness.draining = lambda: drain.draining
        undrain = drain.install(asyncio.get_running_loop())
        try:
            yield
        finally:
            undrain()
            hup()
            await resources.stop()
            await redis.aclose()
            if embedded is not None:
                embedded.stop()

    def service(state: State) -> VideoService:
        resources: Resources = state.resources
        return resources.service

    def listing(state: State) -> TaskListing:
        resources: Resources = state.resources
        return resources.listing

    def readiness(state: State) -> Readiness:
        resources: Resources = state.resources
        return resources.readiness

    def catalogue(state: State) -> ProviderCatalogue:
        resources: Resources = state.resources
        return resources.catalogue

    def health(state: State) -> Health:
        resources: Resources = state.resources
        return resources.health

    def content(state: State) -> VideoContent:
        resources: Resources = state.resources
        return resources.content

    def budgets(state: State) -> Budgets:
        resources: Resources = state.resources
        return resources.budgets

    app = Litestar(
        route_handlers=[
            VideoController,
            VideoContentController,
            ProviderController,
            UsageController,
            upstream_callback,
            healthz,
            readyz,
            scrape_metrics,
        ],
        lifespan=[lifespan],
        dependencies={
            "service": Provide(service, sync_to_thread=False),
            "listing": Provide(listing, sync_to_thread=False),
            "readiness": Provide(readiness, sync_to_thread=False),
            "catalogue": Provide(catalogue, sync_to_thread=False),
            "health": Provide(health, sync_to_thread=False),
            "content": Provide(content, sync_to_thread=False),
            "budgets": Provide(budgets, sync_to_thread=False),
            "metrics": Provide(lambda: observed, sync_to_thread=False),
        },
        exception_handlers=exception_handlers(),
        openapi_config=openapi_config(),
        request_max_body_size=settings.server.max_body_bytes,
        multipart_form_part_limit=MAX_FORM_PARTS,
        logging_config=None,  # logging is configured once, by the CLI
        debug=False,
    )
    describe_deployment(app.openapi_schema, settings, webhooks=secrets.webhook_secret is not None)
    metrics.routes(_route_methods(app))

    def running() -> Resources | None:
        resources: Resources | None = app.state.get("resources")
        return resources

    # Around the whole handler, not in the middleware stack: Litestar runs app middleware only
    # for matched routes, and 404s/405s must be counted and logged too. The shortcut sits
    # inside the observer, so its answers are counted and logged like the app's.
    app.asgi_handler = RequestObserver(FinalTaskShortcut(app.asgi_handler, running), metrics)
    return app
