"""The real app, in process, on a real Redis, with the simulated resellers behind httpx's ASGI
transport (their real wire formats, no sockets). End-to-end tests with separate processes live
in ``tests/e2e``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.config import Settings, resolve_secrets, settings_from_mapping
from providers.sandbox import apiinone as sandbox_apiinone
from providers.sandbox import minimax as sandbox_minimax
from providers.sandbox import runapi as sandbox_runapi
from providers.sandbox.engine import Knobs, SandboxState
from tests.scrape import Scrape

CLIENT_KEY = "client-key-for-tests"
OTHER_KEY = "other-client-key-for-tests"
ENV = {
    "GATEWAY_KEY_DEMO": CLIENT_KEY,
    "GATEWAY_KEY_OTHER": OTHER_KEY,
    "RUNAPI_API_KEY": "sandbox-runapi-key",
    "APIINONE_API_KEY": "sandbox-apiinone-key",
    "MINIMAX_API_KEY": "sandbox-minimax-key",
}
MINIMAX_PRICES = {
    "hailuo-2.3": {"standard": {"6s_768P": 0.28, "10s_768P": 0.56, "6s_1080P": 0.49}},
    "hailuo-2.3-fast": {"standard": {"6s_768P": 0.19, "10s_768P": 0.32, "6s_1080P": 0.33}},
}


def minimax_config(**overrides: Any) -> dict[str, Any]:
    """A MiniMax account on the simulated MiniMax (add it with ``providers={"minimax": …}``)."""
    config = {
        "kind": "minimax",
        "base_url": "http://minimax.sandbox",
        "api_key_env": "MINIMAX_API_KEY",
        "timeout_s": 1,
        "prices_usd": MINIMAX_PRICES,
    }
    return {**config, **overrides}


WEBHOOK_SECRET = "whsec_dGVzdC13ZWJob29rLXNpZ25pbmcta2V5LTAwMDA="
FAST = Knobs(queue_s=0.0, complete_after_s=0.0)
IMAGE = "https://example.com/first-frame.png"
WEBHOOK_HOST = "hooks.example"


def base_config(redis_url: str) -> dict[str, Any]:
    return {
        "redis": {"url": redis_url},
        "auth": {
            "keys": [
                {"name": "demo", "key_env": "GATEWAY_KEY_DEMO"},
                {"name": "other", "key_env": "GATEWAY_KEY_OTHER"},
            ]
        },
        # Lookups drive refreshes here; tests of the background poller switch it on.
        "status": {"poll_interval_s": 1, "background_polling": False},
        # Completed tasks keep the reseller's link here; tests/integration/test_stored_videos.py
        # switches copies on (with a store of its own).
        "storage": {"enabled": False},
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


ASGIApp = Callable[..., Awaitable[None]]


class HostRouter(httpx.AsyncBaseTransport):
    """Sends each request to the transport of its host: the simulated resellers' video links
    (``http://runapi.sandbox/files/…``) reach their apps."""

    def __init__(self, by_host: dict[str, httpx.AsyncBaseTransport]) -> None:
        self._by_host = by_host

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self._by_host.get(request.url.host)
        if transport is None:
            raise httpx.ConnectError(f"no such host {request.url.host}", request=request)
        return await transport.handle_async_request(request)


def asgi(app: Litestar | ASGIApp) -> httpx.ASGITransport:
    # Litestar's precise ASGI types do not unify with httpx's loose ones; the app is ASGI.
    return httpx.ASGITransport(app=app)  # type: ignore[arg-type]


@dataclass
class Harness:
    client: AsyncTestClient[Any]
    runapi: SandboxState
    apiinone: SandboxState
    settings: Settings
    minimax: SandboxState = field(default_factory=lambda: SandboxState("minimax", "unused"))
    """Behind every provider of kind ``minimax`` the harness is configured with."""
    stopped: bool = field(default=False, init=False)

    def headers(self, key: str = CLIENT_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def create(self, body: dict[str, Any], key: str = CLIENT_KEY) -> httpx.Response:
        return await self.client.post("/v1/videos", json=body, headers=self.headers(key))

    async def read(self, task_id: str, key: str = CLIENT_KEY) -> httpx.Response:
        return await self.client.get(f"/v1/videos/{task_id}", headers=self.headers(key))

    async def stop(self) -> None:
        """Shut this instance down (its lifespan ends), as a stopped process would. Once: the
        fixture stops every harness a test did not (a second stop does nothing)."""
        if self.stopped:
            return
        self.stopped = True  # set first: a shutdown that raised has still ended the app
        await self.client.__aexit__(None, None, None)

    async def scrape(self) -> Scrape:
        """``GET /metrics``, parsed: what Prometheus would see."""
        response = await self.client.get("/metrics")
        assert response.status_code == 200
        return Scrape(response.text)

    @property
    def upstream_creates(self) -> int:
        return sum(s.counters.create_calls for s in (self.runapi, self.apiinone, self.minimax))


MakeHarness = Callable[..., Any]
RUNNING = pytest.StashKey[list[Harness]]()
"""The harnesses a test made (its node's stash): the ``acl`` fixture stops them too."""


@pytest.fixture
async def harness_factory(
    redis: Redis, redis_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Any]]:
    """Build a harness with config tweaks: ``await make(routing={...})``. Every harness the
    test did not stop is stopped at teardown (newest first), each even when another's shutdown
    raised; or earlier, by the ``acl`` fixture's teardown (see there)."""
    made: list[Harness] = []
    request.node.stash[RUNNING] = made

    async def make(
        knobs: Knobs = FAST,
        redis_url_override: str | None = None,
        webhooks: ASGIApp | None = None,
        sandboxes: tuple[SandboxState, SandboxState] | None = None,
        transports: dict[str, httpx.AsyncBaseTransport] | None = None,
        **sections: Any,
    ) -> Harness:
        """``webhooks``: an ASGI app receiving webhooks (and a signing secret is set), reached
        as ``hooks.example`` (a name that resolves nowhere, so it is in webhooks.allow_hosts);
        ``sandboxes``: share the simulated resellers of another harness (a second instance);
        ``transports``: put a provider behind another transport (a scripted reseller)."""
        data = base_config(redis_url_override or redis_url)
        if webhooks:
            data["webhooks"] = {"allow_hosts": [WEBHOOK_HOST]}
        for section, values in sections.items():
            name = section.rstrip("_")  # ``webhooks_=`` names the config section
            data[name] = {**data.get(name, {}), **values}
        settings = settings_from_mapping(data, {})
        runapi, apiinone = sandboxes or (
            SandboxState("runapi", ENV["RUNAPI_API_KEY"], knobs),
            SandboxState("apiinone", ENV["APIINONE_API_KEY"], knobs),
        )
        minimax = SandboxState("minimax", ENV["MINIMAX_API_KEY"], knobs)
        minimax_transport = asgi(sandbox_minimax.create_app(minimax))
        wired: dict[str, httpx.AsyncBaseTransport] = {
            "runapi": asgi(sandbox_runapi.create_app(runapi)),
            "apiinone": asgi(sandbox_apiinone.create_app(apiinone)),
            **{
                name: minimax_transport
                for name, cfg in settings.providers.items()
                if cfg.kind == "minimax"
            },
            **(transports or {}),
        }
        env = {**ENV, "GATEWAY_WEBHOOK_SECRET": WEBHOOK_SECRET} if webhooks else ENV
        app = create_app(
            settings,
            resolve_secrets(settings, env),
            transports=wired,
            webhook_transport=asgi(webhooks) if webhooks else None,
            video_transport=HostRouter(
                {"runapi.sandbox": wired["runapi"], "apiinone.sandbox": wired["apiinone"]}
            ),
        )
        minimax.outbound = asgi(app)  # its callbacks reach this app, whatever the public URL
        client = AsyncTestClient(app)
        await client.__aenter__()
        made.append(Harness(client, runapi, apiinone, settings, minimax))
        return made[-1]

    yield make
    await stop_all(made)


async def stop_all(harnesses: list[Harness]) -> None:
    """Stop each harness not stopped yet, newest first, every one even when another's shutdown
    raised (that error is raised once all are stopped)."""
    async with AsyncExitStack() as stopping:
        for h in harnesses:
            stopping.push_async_callback(h.stop)


def app_threads() -> set[threading.Thread]:
    """The threads apps run in: litestar's test client runs each app's lifespan, loops and
    requests on an event loop of its own, in an anyio blocking-portal thread that ends when
    the client is closed (and the lifespan has exited)."""
    return {t for t in threading.enumerate() if "-portal-" in t.name}


GATEWAY_CODE = str(Path(__file__).resolve().parents[2] / "gateway")


def _gateway_tasks() -> list[asyncio.Task[Any]]:
    """The test loop's tasks running gateway code (a loop a test started itself)."""
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    code = [getattr(t.get_coro(), "cr_code", None) for t in tasks]
    return [t for t, c in zip(tasks, code, strict=True)
            if c is not None and c.co_filename.startswith(GATEWAY_CODE)]  # fmt: skip


@pytest.fixture(autouse=True)
async def no_app_outlives_its_test() -> AsyncIterator[None]:
    """No app or gateway loop goes on after its test (set up first, so checked after every
    other fixture's teardown): a poller, copier or webhook sender left running would claim
    work from the shared Redis in later tests. Counting threads and tasks costs microseconds."""
    before = app_threads()
    yield
    left = app_threads() - before
    assert not left, f"an app still runs after its test (lifespan never exited): {left}"
    tasks = _gateway_tasks()
    assert not tasks, f"gateway tasks still run after their test: {tasks}"


@pytest.fixture
async def harness(harness_factory: Callable[..., Any]) -> Harness:
    made: Harness = await harness_factory()
    return made


ACL_USER, ACL_PASSWORD = "gateway-under-test", "acl-test-password"


class Acl:
    """The gateway's own Redis user, whose rights a test narrows to fail one chosen write."""

    def __init__(self, admin: Redis, url: str) -> None:
        self.admin = admin
        self.url = url

    async def allow_all(self) -> None:
        await self.admin.acl_setuser(
            ACL_USER, enabled=True, reset=True, passwords=[f"+{ACL_PASSWORD}"], keys=["*"],
            channels=["*"], categories=["+@all"],
        )  # fmt: skip

    async def only_keys(self, *patterns: str) -> None:
        """The user may touch only keys matching ``patterns``: any other key is NOPERM."""
        await self.admin.acl_setuser(ACL_USER, enabled=True, reset_keys=True, keys=list(patterns))

    async def deny(self, *commands: str) -> None:
        await self.admin.acl_setuser(ACL_USER, enabled=True, commands=[f"-{c}" for c in commands])

    async def outage(self, after_s: float, for_s: float, *patterns: str) -> None:
        """From ``after_s`` on, for ``for_s``, only keys matching ``patterns`` are writable."""
        await asyncio.sleep(after_s)
        await self.only_keys(*patterns)
        await asyncio.sleep(for_s)
        await self.allow_all()


# Key patterns in the hash-tagged layout (gw:{<tag>}:<kind>…, store.Keys).
EVERY_KEY_BUT_TASKS = ("gw:*:idem:*", "gw:*:circuit*", "gw:*:health:*", "gw:*:rate", "gw:*:due:*")
EVERY_KEY_BUT_IDEMPOTENCY = (
    "gw:*:task:*", "gw:*:circuit*", "gw:*:health:*", "gw:*:rate", "gw:*:due:*",
)  # fmt: skip


@pytest.fixture
async def acl(redis: Redis, redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Acl]:
    """The gateway's Redis user. At teardown the test's apps are stopped before the user is
    dropped (whichever fixture the test named first): a write still under way at shutdown,
    such as an accept the test's outage delayed, ends rather than retrying against a user that
    is gone until its deadline (about 35 s)."""
    scheme, _, rest = redis_url.partition("://")
    made = Acl(redis, f"{scheme}://{ACL_USER}:{ACL_PASSWORD}@{rest}")
    await made.allow_all()
    yield made
    await made.allow_all()  # an outage the test left running is over
    await stop_all(request.node.stash.get(RUNNING, []))
    await redis.acl_deluser(ACL_USER)
