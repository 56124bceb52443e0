"""Thin controllers: parse, delegate to the service, answer."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from gateway.auth import current_client, require_client
from gateway.errors import PROBLEM_JSON
from gateway.health import Readiness
from gateway.schemas import CreateVideoRequest, Problem, Task
from gateway.service import VideoService


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
        responses={
            400: _problem("The body is not a JSON object"),
            401: _problem("No key or a wrong key"),
            422: _problem("invalid_request, unsupported or content_rejected"),
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
    ) -> Task:
        return await service.create(client, data)

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


@get("/healthz", tags=["health"], summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", tags=["health"], summary="Redis answers and a provider is usable")
async def readyz(readiness: NamedDependency[Readiness]) -> Response[dict[str, Any]]:
    reasons = await readiness.reasons()
    if reasons:
        return Response({"status": "unavailable", "reasons": reasons}, status_code=503)
    return Response({"status": "ready"}, status_code=200)
