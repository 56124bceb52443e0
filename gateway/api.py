"""Thin controllers: parse, delegate to the service, answer."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Annotated, Any

from litestar import Controller, HttpMethod, MediaType, Request, Response, delete, get, post, route
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter, Parameter, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from pydantic import BaseModel

from gateway.auth import current_client, require_client
from gateway.budgets import Budgets, PeriodKind
from gateway.catalogue import ProviderCatalogue
from gateway.errors import BadBody, StoreUnavailable, problem_spec
from gateway.health import Health, Readiness
from gateway.idempotency import HEADER, check_key
from gateway.listing import DEFAULT_LIMIT, MAX_LIMIT, Order, TaskListing
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.metrics import Metrics
from gateway.openai_compat import poll_after, read_create_request
from gateway.openapi import BEARER_SCHEME
from gateway.schemas import (
    Liveness,
    ProviderList,
    ReadinessReport,
    Task,
    TaskDeleted,
    TaskList,
    Usage,
)
from gateway.service import VideoService
from gateway.usage import usage

JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
MAX_CHALLENGE = 1024
"""The longest challenge echoed back (MiniMax's are short tokens)."""
MAX_CONTAINERS = 64
"""Objects and arrays one create body may hold. A valid body has a handful (``metadata``,
``routing``); the cap also bounds nesting depth, which the JSON decoder does not."""


async def limit_json_structure(request: Request[Any, Any, Any]) -> None:
    """Refuse bodies with more objects/arrays than any valid request, before decoding them:
    a deeply nested body would otherwise exhaust the decoder's recursion. (A multipart form
    is bounded by its part count instead: see :mod:`gateway.openai_compat`.)"""
    if request.content_type[0] == RequestEncodingType.MULTI_PART:
        return
    body = await request.body()
    outside_strings = JSON_STRING.sub(b"", body)
    if outside_strings.count(b"{") + outside_strings.count(b"[") > MAX_CONTAINERS:
        raise BadBody(f"the body holds more than {MAX_CONTAINERS} objects or arrays")


def _ok(model: type[BaseModel], description: str) -> ResponseSpec:
    return ResponseSpec(data_container=model, description=description, generate_examples=False)


# Every status a route can answer is listed (the API fuzzing test holds the app to it); errors
# are problem+json. Litestar's own default 400 ("Validation Exception", application/json) is
# replaced: our handlers answer every 400 as problem+json.
GUARDED = {
    401: problem_spec("unauthorized: no key or a wrong key"),
    429: problem_spec("rate_limited: this key is over its rate; Retry-After says when to retry"),
}
STORE_DOWN = {503: problem_spec("store_unavailable: Redis cannot be reached")}
MALFORMED = {400: problem_spec("invalid_request: the request cannot be parsed")}
BEARER: list[dict[str, list[str]]] = [{BEARER_SCHEME: []}]


class VideoController(Controller):
    path = "/v1/videos"
    tags = ["videos"]
    guards = [require_client]
    security = BEARER
    # The client comes from current_client(request), not a dependency: Litestar resolves two
    # or more dependencies of one handler in an anyio task group, which cost ~15% of a lookup.

    # Registered first (a controller registers its handlers by name): Litestar 2's own OPTIONS
    # handler names only the methods registered before it (litestar-org/litestar#4169).
    @route(["/", "/{task_id:str}"], http_method=HttpMethod.OPTIONS, include_in_schema=False)
    async def allow(self, request: Request[Any, Any, Any]) -> Response[None]:
        template = request.scope.get("path_template")
        methods = {m for r in request.app.routes if r.path_format == template for m in r.methods}
        return Response(None, status_code=HTTP_204_NO_CONTENT,
                        headers={"Allow": ", ".join(sorted(methods))})  # fmt: skip

    @post(
        "/",
        status_code=HTTP_202_ACCEPTED,
        summary="Create a video task",
        before_request=limit_json_structure,
        responses={
            200: _ok(
                Task, "The same Idempotency-Key and body again: the task, no new upstream call"
            ),
            202: _ok(Task, "An upstream reseller accepted the task"),
            400: problem_spec("invalid_request: the body is not a JSON object, or nests too deep"),
            **GUARDED,
            402: problem_spec(
                "budget_exceeded: this key's day or month budget cannot cover the price; nothing "
                "was sent; Retry-After: the period's end"
            ),
            409: problem_spec("idempotency_key_in_use: the first request with this key is running"),
            413: problem_spec("payload_too_large: the body is over server.max_body_bytes"),
            422: problem_spec(
                "invalid_request (errors name each field), idempotency_key_reused, unsupported "
                "(no provider serves it) or content_rejected"
            ),
            502: problem_spec("upstream_rejected or all_providers_failed (attempts listed)"),
            503: problem_spec(
                "store_unavailable, or providers_unavailable (every eligible circuit is open; "
                "Retry-After set)"
            ),
            504: problem_spec("upstream_outcome_unknown: sent, but no answer came"),
        },
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        service: NamedDependency[VideoService],
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(name=HEADER, required=False, description="1–255 printable chars"),
        ] = None,
    ) -> Response[Task]:
        # The body is read here, not by a typed parameter: it may be JSON or a multipart form
        # (gateway/openapi.py documents both), and either is validated once, the same way.
        data = await read_create_request(request)
        outcome = await service.create(current_client(request), data, check_key(idempotency_key))
        return Response(
            outcome.task,
            status_code=200 if outcome.replayed else 202,
            headers=poll_after(outcome.task.status.is_final, service.poll_interval_s),
        )

    @get(
        "/{task_id:str}",
        summary="Look a task up",
        responses={
            200: _ok(Task, "The task"),
            **MALFORMED,
            **GUARDED,
            404: problem_spec("not_found: no such task for this key"),
            **STORE_DOWN,
        },
    )
    async def read(
        self,
        request: Request[Any, Any, Any],
        task_id: FromPath[str],
        service: NamedDependency[VideoService],
    ) -> Response[bytes]:
        # The body is a Task (responses[200] documents it), encoded by the service: final
        # tasks' bytes come from its cache without a model round trip.
        answer = await service.get_json(current_client(request), task_id)
        return Response(
            answer.body,
            media_type=MediaType.JSON,
            headers=poll_after(answer.final, service.poll_interval_s),
        )

    @get(
        "/",
        summary="List this key's tasks, newest first (cursor pagination)",
        responses={
            200: _ok(TaskList, "One page of tasks"),
            **MALFORMED,
            **GUARDED,
            422: problem_spec("invalid_request: limit or order is not valid"),
            **STORE_DOWN,
        },
    )
    async def list_tasks(
        self,
        request: Request[Any, Any, Any],
        listing: NamedDependency[TaskListing],
        after: Annotated[
            str | None, Parameter(description="The last id of the previous page")
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        order: Annotated[Order, Parameter(description="By creation time")] = "desc",
    ) -> Response[bytes]:
        page = await listing.page(current_client(request), after=after, limit=limit, order=order)
        return Response(page.model_dump_json().encode(), media_type=MediaType.JSON)

    @delete(
        "/{task_id:str}",
        status_code=HTTP_200_OK,
        summary="Delete a task and its stored video",
        description=(
            "A task that is not final keeps running at its reseller, which bills it if it "
            "completes; the gateway only forgets it. While the gateway is resubmitting a failed "
            "generation (a paid create in flight) the answer is 409 task_busy with Retry-After."
        ),
        responses={
            200: _ok(TaskDeleted, "Deleted"),
            **MALFORMED,
            **GUARDED,
            404: problem_spec("not_found: no such task for this key"),
            409: problem_spec("task_busy: a resubmission is in flight; retry after Retry-After"),
            **STORE_DOWN,
        },
    )
    async def delete_task(
        self,
        request: Request[Any, Any, Any],
        task_id: FromPath[str],
        listing: NamedDependency[TaskListing],
    ) -> TaskDeleted:
        return await listing.delete(current_client(request), task_id)


class ProviderController(Controller):
    path = "/v1/providers"
    tags = ["providers"]
    guards = [require_client]
    security = BEARER

    @get(
        "/",
        summary="The configured providers, their circuits, health and prices",
        responses={
            200: _ok(ProviderList, "Every configured provider"),
            **GUARDED,
            **STORE_DOWN,
        },
    )
    async def list_providers(self, catalogue: NamedDependency[ProviderCatalogue]) -> ProviderList:
        return await catalogue.list()


class UsageController(Controller):
    path = "/v1/usage"
    tags = ["usage"]
    guards = [require_client]
    security = BEARER

    @get(
        "/",
        summary="This key's spend, reservations and budget in the current UTC day or month",
        responses={
            200: _ok(Usage, "The calling client's usage"),
            **MALFORMED,
            **GUARDED,
            422: problem_spec("invalid_request: period is not day or month"),
            **STORE_DOWN,
        },
    )
    async def read_usage(
        self,
        request: Request[Any, Any, Any],
        budgets: NamedDependency[Budgets],
        period: Annotated[
            PeriodKind, QueryParameter(description="day (default) or month, in UTC")
        ] = "day",
    ) -> Usage:
        return await usage(budgets, current_client(request), period)


class Challenge(BaseModel):
    """MiniMax's handshake: its first POST to a callback URL, echoed back as it came."""

    challenge: str


@post(
    ["/callbacks/{provider:str}/{token:str}", "/v1/callbacks/{provider:str}/{token:str}"],
    status_code=HTTP_200_OK,  # a challenge's echo; every other callback answers 204
    tags=["callbacks"],
    summary="Upstream task callbacks (a hint: the status is re-read from the upstream)",
    description=(
        "Where resellers report progress: /callbacks/{provider}/{token}; the older "
        '/v1/callbacks/… path answers the same. A body {"challenge": "…"} is '
        "echoed back (MiniMax's handshake); any other body is never read."
    ),
    responses={
        200: _ok(Challenge, "A challenge, echoed back"),
        204: ResponseSpec(data_container=None, description="Noted: the task's status is re-read"),
        **MALFORMED,
        404: problem_spec("not_found: no task has this callback token for this provider"),
        **STORE_DOWN,
    },
)
async def upstream_callback(
    request: Request[Any, Any, Any],
    provider: FromPath[str],
    token: FromPath[str],
    service: NamedDependency[VideoService],
) -> Response[Any]:
    # No bearer key: resellers cannot send ours. The unguessable per-task token is the check.
    # The body is read only for a challenge, which is echoed; a status body is never trusted,
    # so a forged callback can at most trigger one status read.
    challenge = read_challenge(await request.body())
    await service.callback(provider, token, hint=challenge is None)
    if challenge is not None:
        return Response(Challenge(challenge=challenge), status_code=200)
    return Response(None, status_code=HTTP_204_NO_CONTENT)


def read_challenge(body: bytes) -> str | None:
    """The ``challenge`` of a handshake body ``{"challenge": "…"}``, else None."""
    if not body.lstrip().startswith(b"{") or b"challenge" not in body:
        return None
    try:
        parsed = json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        return None
    value = parsed.get("challenge") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) and len(value) <= MAX_CHALLENGE else None


@get("/metrics", include_in_schema=False, media_type=METRICS_CONTENT_TYPE)
async def scrape_metrics(
    metrics: NamedDependency[Metrics],
    health: NamedDependency[Health],
    budgets: NamedDependency[Budgets],
) -> Response[bytes]:
    """Prometheus text format. No key: operators restrict it at the network level."""
    with contextlib.suppress(StoreUnavailable):
        await health.snapshot()  # circuit gauges as every instance sees them (counted if down)
    with contextlib.suppress(StoreUnavailable):
        await budgets.observe()  # each client's budget use, as Redis holds it (counted if down)
    return Response(metrics.exposition(), media_type=METRICS_CONTENT_TYPE)


@get(
    "/healthz",
    tags=["health"],
    summary="The process is up",
    responses={200: _ok(Liveness, "The process is up")},
)
async def healthz() -> Liveness:
    return Liveness()


@get(
    "/readyz",
    tags=["health"],
    summary="Redis answers and a provider is usable",
    responses={
        200: _ok(ReadinessReport, "Ready: Redis answers and some provider's circuit is not open"),
        503: _ok(ReadinessReport, "Not ready; reasons says why"),
    },
)
async def readyz(readiness: NamedDependency[Readiness]) -> Response[dict[str, Any]]:
    reasons = await readiness.reasons()
    if reasons:
        report = ReadinessReport(status="unavailable", reasons=reasons)
        return Response(report.model_dump(mode="json"), status_code=503)
    return Response(ReadinessReport(status="ready").model_dump(mode="json", exclude_none=True))
