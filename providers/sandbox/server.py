"""Running the simulated resellers: one uvicorn server each, in the caller's event loop.

In-process use (the demo, tests)::

    async with Sandbox(SandboxConfig()) as sandbox:
        sandbox.runapi.url          # "http://127.0.0.1:<port>"
        sandbox.runapi.state.knobs  # or PUT {url}/_sandbox/knobs
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable, Iterator
from types import TracebackType

import uvicorn
from litestar import Litestar
from pydantic import BaseModel, ConfigDict, Field, field_validator

from providers.sandbox import apiinone, fal, minimax, ready, runapi
from providers.sandbox.connection import AbortableHttpToolsProtocol
from providers.sandbox.engine import Knobs, SandboxState

# Deliberately unlike real keys (RunAPI's are sk-…, API in One's aio_…).
DEFAULT_RUNAPI_KEY = "sandbox-runapi-key"
DEFAULT_APIINONE_KEY = "sandbox-apiinone-key"
DEFAULT_MINIMAX_KEY = "sandbox-minimax-key"
DEFAULT_FAL_KEY = "sandbox-fal-key"


class SandboxConfig(BaseModel):
    """Where the simulated resellers listen, their keys, and the knobs they start (and reset) to.

    Port 0 picks a free port. Only loopback addresses are accepted: the sandbox is not a service.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    runapi_port: int = Field(default=0, ge=0, le=65535)
    apiinone_port: int = Field(default=0, ge=0, le=65535)
    minimax_port: int = Field(default=0, ge=0, le=65535)
    fal_port: int = Field(default=0, ge=0, le=65535)
    runapi_key: str = Field(default=DEFAULT_RUNAPI_KEY, min_length=1)
    apiinone_key: str = Field(default=DEFAULT_APIINONE_KEY, min_length=1)
    minimax_key: str = Field(default=DEFAULT_MINIMAX_KEY, min_length=1)
    fal_key: str = Field(default=DEFAULT_FAL_KEY, min_length=1)
    knobs: Knobs = Knobs()
    graceful_shutdown_s: int = Field(default=2, ge=0)

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, host: str) -> str:
        address = ipaddress.ip_address(host)
        if address.version != 4 or not address.is_loopback:
            raise ValueError("the sandbox binds only to IPv4 loopback addresses")
        return host


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: whoever runs the sandbox owns signals.

    (uvicorn's handlers replace each other when two servers share a process, so only one of
    them would hear a SIGTERM.)
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ResellerServer:
    """One simulated reseller served by uvicorn on ``host:port``, as a task of the running loop."""

    def __init__(
        self,
        app_factory: Callable[[SandboxState], Litestar],
        state: SandboxState,
        host: str = "127.0.0.1",
        port: int = 0,
        graceful_shutdown_s: int = 2,
    ) -> None:
        self.state = state
        self._host = host
        self._port = port
        config = uvicorn.Config(
            app_factory(state),
            http=AbortableHttpToolsProtocol,
            ws="none",
            lifespan="on",
            log_config=None,  # leave the host process's logging alone
            access_log=False,
            timeout_graceful_shutdown=graceful_shutdown_s,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The base URL, known once started (the port may have been 0)."""
        if self._task is None:
            raise RuntimeError("the server has not been started")
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        """Listen, and return once uvicorn accepts connections."""
        if self._task is not None:
            raise RuntimeError("a ResellerServer starts once")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        self._task = asyncio.create_task(
            self._server.serve(sockets=[sock]), name=f"sandbox-{self.state.name}"
        )
        while not self._server.started:
            if self._task.done():
                await self._task  # re-raises what stopped the start-up
                raise RuntimeError(f"sandbox {self.state.name} stopped while starting")
            await asyncio.sleep(0.01)

    def request_stop(self) -> None:
        """Begin a graceful stop; safe to call from a signal handler, and more than once."""
        self.state.stopping.set()
        self._server.should_exit = True

    async def wait_stopped(self) -> None:
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        self.request_stop()
        await self.wait_stopped()


class Sandbox:
    """Every simulated reseller, in the running event loop. Start it once; stop it once."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        cfg = self.config
        self.runapi = ResellerServer(
            runapi.create_app,
            SandboxState("runapi", cfg.runapi_key, cfg.knobs),
            cfg.host,
            cfg.runapi_port,
            cfg.graceful_shutdown_s,
        )
        self.apiinone = ResellerServer(
            apiinone.create_app,
            SandboxState("apiinone", cfg.apiinone_key, cfg.knobs),
            cfg.host,
            cfg.apiinone_port,
            cfg.graceful_shutdown_s,
        )
        self.minimax = ResellerServer(
            minimax.create_app,
            SandboxState("minimax", cfg.minimax_key, cfg.knobs),
            cfg.host,
            cfg.minimax_port,
            cfg.graceful_shutdown_s,
        )
        self.fal = ResellerServer(
            fal.create_app,
            SandboxState("fal", cfg.fal_key, cfg.knobs),
            cfg.host,
            cfg.fal_port,
            cfg.graceful_shutdown_s,
        )

    @property
    def servers(self) -> dict[str, ResellerServer]:
        """Every simulated reseller by kind."""
        return {
            "runapi": self.runapi,
            "apiinone": self.apiinone,
            "minimax": self.minimax,
            "fal": self.fal,
        }

    @property
    def ready_line(self) -> str:
        """The line ``python -m providers.sandbox`` prints once every server listens."""
        return ready.format_line(
            self.runapi.url, self.apiinone.url, minimax=self.minimax.url, fal=self.fal.url
        )

    async def start(self) -> None:
        try:
            for server in self.servers.values():
                await server.start()
        except BaseException:
            await self.stop()
            raise

    def request_stop(self) -> None:
        for server in self.servers.values():
            server.request_stop()

    async def wait_stopped(self) -> None:
        await asyncio.gather(*(server.wait_stopped() for server in self.servers.values()))

    async def stop(self) -> None:
        self.request_stop()
        await self.wait_stopped()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve_sandbox(config: SandboxConfig | None = None) -> Sandbox:
    """Start every simulated reseller in the running loop; the caller must ``await .stop()``."""
    sandbox = Sandbox(config)
    await sandbox.start()
    return sandbox
