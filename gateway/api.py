"""Thin controllers: parse, delegate to the service, answer."""

from __future__ import annotations

import contextlib
import re
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from gateway.auth import current_client, require_client
from gateway.catalogue import ProviderCatalogue
from gateway.errors import PROBLEM_JSON, BadBody, StoreUnavailable
from gateway.health import Health, Readiness
from gateway.idempotency import HEADER, check_key
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.metrics import Metrics
from gateway.schemas import CreateVideoRequest, Problem, ProviderList, Task
from gateway.service import VideoService

JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
MAX_CONTAINERS = 64
"""Objects and arrays one create body may hold. A valid body has a handful (``metadata``,
``routing``); the cap also bounds nesting depth, which the JSON decoder does not."""


async def limit_json_structure(request: Request[Any, Any, Any]) -> None:
    """Refuse bodies with more objects/arrays than any valid request, before decoding them:
    a deeply nested body would otherwise exhaust the decoder's recursion."""
    body = await request.body()
    outside_strings = JSON_STRING.sub(b"", body)
    if outside_strings.count(b"{") + outside_strings.count(b"[") > MAX_CONTAINERS:
        raise BadBody(f"the body holds more than {MAX_CONTAINERS} objects or arrays")


def _problem(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=Problem, description=description, media_type=PROBLEM_JSON)


class VideoController(Controller):
    path = "/v1/videos"
    tags = ["videos"]
    guards = [require_client]
    dependencies = {"client": Provide(current_client, sync_to_thread=False)}

    @post(
        "/",
        status_code=HTTP_202_ACCEPTED,
        summary="Create a video task",
        before_request=limit_json_structure,
        responses={
            400: _problem("The body is not a JSON object, or nests too many values"),
            401: _problem("No key or a wrong key"),
            413: _problem("payload_too_large"),
            429: _problem("rate_limited"),
            422: _problem("invalid_request, unsupported or content_rejected"),
            409: _problem("idempotency_key_in_use"),
            502: _problem("upstream_rejected or all_providers_failed"),
            503: _problem("store_unavailable or providers_unavailable"),
            504: _problem("upstream_outcome_unknown"),
        },
    )
    async def create(
        self,
        data: JSONBody[CreateVideoRequest],
        client: NamedDependency[str],
        service: NamedDependency[VideoService],
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(name=HEADER, required=False, description="1–255 printable chars"),
        ] = None,
    ) -> Response[Task]:
        outcome = await service.create(client, data, check_key(idempotency_key))
        return Response(outcome.task, status_code=200 if outcome.replayed else 202)

    @get(
        "/{task_id:str}",
        summary="Look a task up",
        responses={401: _problem("No key or a wrong key"), 404: _problem("Unknown task")},
    )
    async def read(
        self,
        task_id: FromPath[str],
        client: NamedDependency[str],
        service: NamedDependency[VideoService],
    ) -> Task:
        return await service.get(client, task_id)


class ProviderController(Controller):
    path = "/v1/providers"
    tags = ["providers"]
    guards = [require_client]

    @get("/", summary="The configured providers, their circuits, health and prices")
    async def list_providers(self, catalogue: NamedDependency[ProviderCatalogue]) -> ProviderList:
        return await catalogue.list()


@post(
    "/v1/callbacks/{provider:str}/{token:str}",
    status_code=HTTP_204_NO_CONTENT,
    tags=["callbacks"],
    summary="Upstream task callbacks (a hint: the status is re-read from the upstream)",
)
async def upstream_callback(
    provider: FromPath[str], token: FromPath[str], service: NamedDependency[VideoService]
) -> None:
    # No bearer key: resellers cannot send ours. The unguessable per-task token is the check,
    # and the body is never read, so a forged callback can at most trigger one status read.
    await service.callback(provider, token)


@get("/metrics", include_in_schema=False, media_type=METRICS_CONTENT_TYPE)
async def scrape_metrics(
    metrics: NamedDependency[Metrics], health: NamedDependency[Health]
) -> Response[bytes]:
    """Prometheus text format. No key: operators restrict it at the network level."""
    with contextlib.suppress(StoreUnavailable):
        await health.snapshot()  # circuit gauges as every instance sees them (counted if down)
    return Response(metrics.exposition(), media_type=METRICS_CONTENT_TYPE)


@get("/healthz", tags=["health"], summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", tags=["health"], summary="Redis answers and a provider is usable")
async def readyz(readiness: NamedDependency[Readiness]) -> Response[dict[str, Any]]:
    reasons = await readiness.reasons()
    if reasons:
        return Response({"status": "unavailable", "reasons": reasons}, status_code=503)
    return Response({"status": "ready"}, status_code=200)
