"""What every simulated reseller serves besides its own API, and the app factory around it.

- ``/_sandbox/*``: the control endpoints (no auth) that tests, the demo and benchmarks use to
  read counters and turn knobs;
- ``/files/{name}``: the finished videos behind the links the resellers hand out
  (:mod:`providers.sandbox.videos`).

It also holds the preamble every reseller's handlers share (:func:`admit_create`,
:func:`admit_read`): count the call, wait the knobbed latency, play the fault knobs and check
the key, each reseller wording the answers its own way (:class:`Dialect`).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from litestar import Litestar, Request, Response, Router, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.handlers import BaseRouteHandler
from litestar.types import Scope
from pydantic import ValidationError

from providers.sandbox.connection import drop_connection, hold
from providers.sandbox.engine import (
    ACCOUNT_FAULTS,
    EDGE_FAULTS,
    CreateFault,
    SandboxState,
    Stats,
    TaskList,
)
from providers.sandbox.videos import video_file

logger = logging.getLogger(__name__)


def create_sandbox_app(state: SandboxState, route_handlers: Sequence[BaseRouteHandler]) -> Litestar:
    """A Litestar app serving one reseller's ``route_handlers`` plus the shared routes.

    Handlers receive the reseller's :class:`SandboxState` as the ``sandbox`` dependency.
    """

    def record_authorization(request: Request[Any, Any, Any]) -> None:
        header = request.headers.get("authorization")
        if header is not None and not request.url.path.startswith("/_sandbox"):
            state.authorizations.add(header)

    return Litestar(
        route_handlers=[*route_handlers, _control_router(), video_file],
        before_request=record_authorization,
        dependencies={"sandbox": Provide(lambda: state, use_cache=True, sync_to_thread=False)},
        openapi_config=None,
        # The sandbox runs inside other processes (the demo, pytest): leave their logging alone.
        logging_config=None,
        after_exception=[_log_exception],
    )


def video_url(request: Request[Any, Any, Any], task_id: str) -> str:
    """Where a finished task's video lives, on the host the client used to reach us."""
    return f"{str(request.base_url).rstrip('/')}/files/{task_id}.mp4"


def bearer_matches(request: Request[Any, Any, Any], api_key: str, scheme: str = "bearer") -> bool:
    """Whether ``Authorization`` is ``<scheme> <api_key>`` (fal's scheme is ``Key``)."""
    sent, _, token = request.headers.get("authorization", "").partition(" ")
    return sent.lower() == scheme.lower() and hmac.compare_digest(token.strip(), api_key)


def parse_json_object(raw: bytes) -> dict[str, object] | None:
    """The body as a JSON object, or None when it is not one."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return body if isinstance(body, dict) else None


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one reseller words the answers of the shared preamble."""

    error: Callable[[int, str], Response[Any]]
    """An answer with this HTTP status and message (a dropped or abandoned call)."""
    fault: Callable[[CreateFault, SandboxState], Response[Any]]
    """The answer to a fault knob (``http_500`` is also the status calls' fault)."""
    unauthorized: Callable[[], Response[Any]]
    """The answer to a missing or wrong key."""
    scheme: str = "bearer"
    """The ``Authorization`` scheme (fal's is ``Key``)."""


async def admit_create(
    request: Request[Any, Any, Any], sandbox: SandboxState, dialect: Dialect
) -> bytes | Response[Any]:
    """Count a create and play its fault knobs: the raw body to go on with, or the answer that
    ends the call. Edge faults come before the key check (an overloaded edge does not look at
    keys), account faults after it."""
    raw = await request.body()
    sandbox.counters.create_calls += 1
    await sandbox.delay()
    fault = sandbox.knobs.create_fault
    if fault == "drop":
        await drop_connection(request)
        # Only a server without AbortableHttpToolsProtocol (an ASGI test transport) sends this.
        return dialect.error(500, "connection dropped")
    if fault == "hang" and not await hold(request, sandbox.knobs.hang_s, sandbox.stopping):
        return dialect.error(499, "client went away")  # never reaches the client
    if fault in EDGE_FAULTS:
        return dialect.fault(fault, sandbox)
    if not bearer_matches(request, sandbox.api_key, dialect.scheme):
        return dialect.unauthorized()
    if fault in ACCOUNT_FAULTS:
        return dialect.fault(fault, sandbox)
    return raw


async def admit_read(
    request: Request[Any, Any, Any], sandbox: SandboxState, dialect: Dialect
) -> Response[Any] | None:
    """Play a status (or file) read's fault knobs and check its key: None to go on, or the
    answer that ends the call. The caller counts the call."""
    await sandbox.delay()
    fault = sandbox.knobs.status_fault
    if fault == "hang" and not await hold(request, sandbox.knobs.hang_s, sandbox.stopping):
        return dialect.error(499, "client went away")  # never reaches the client
    if fault == "http_500":
        return dialect.fault("http_500", sandbox)
    if not bearer_matches(request, sandbox.api_key, dialect.scheme):
        return dialect.unauthorized()
    return None


def _control_router() -> Router:
    return Router(path="/_sandbox", route_handlers=[stats, tasks, update_knobs, reset, health])


@get("/stats", sync_to_thread=False)
def stats(sandbox: NamedDependency[SandboxState]) -> Stats:
    return sandbox.stats()


@get("/tasks", sync_to_thread=False)
def tasks(sandbox: NamedDependency[SandboxState]) -> TaskList:
    return sandbox.task_list()


@put("/knobs", status_code=200)
async def update_knobs(
    request: Request[Any, Any, Any], sandbox: NamedDependency[SandboxState]
) -> Response[Any]:
    patch = parse_json_object(await request.body())
    if patch is None:
        return Response({"detail": "the body must be a JSON object of knobs"}, status_code=400)
    try:
        knobs = sandbox.update_knobs(patch)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        return Response({"detail": "invalid knobs", "errors": errors}, status_code=400)
    return Response(knobs.model_dump(), status_code=200)


@post("/reset", status_code=200, sync_to_thread=False)
def reset(sandbox: NamedDependency[SandboxState]) -> Stats:
    sandbox.reset()
    return sandbox.stats()


@get("/health", sync_to_thread=False)
def health(sandbox: NamedDependency[SandboxState]) -> dict[str, str]:
    return {"status": "ok", "reseller": sandbox.name}


def _log_exception(exc: Exception, scope: Scope) -> None:
    logger.error("sandbox handler failed on %s", scope.get("path"), exc_info=exc)
