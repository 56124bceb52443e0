"""``GET /v1/videos/{id}/content``: the finished video itself, from the gateway's storage.

For the task's owner only (``404`` for anyone else, and for a task that is not ``completed``).
A stored copy is streamed from the store (never read whole into memory) with ``ETag`` (its
SHA-256), ``Content-Length`` and ``Accept-Ranges``; a single ``Range`` gives ``206`` with
``Content-Range``. With ``storage.redirect: true`` and a store that signs URLs, the answer is a
``302`` to a short-lived signed URL. A task without a stored copy (the copy was given up, or
``storage.enabled`` is false) is a ``302`` to the reseller's link. ``?variant=video`` is the
OpenAI Videos API's name for the same thing; other variants are ``404``.

``HEAD`` is the same answer (status and headers, errors included) without its body: both
handlers call :meth:`VideoContent.answer` (one owner check, one Range/ETag logic), which stops
before reading the object's bytes for HEAD, and :func:`without_body` drops the bytes of
whatever else was answered (a problem body, a guard's refusal).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Controller, HttpMethod, Request, Response, get, route
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api import BEARER, GUARDED, MALFORMED
from gateway.auth import current_client, require_client
from gateway.errors import NotFound, RangeNotSatisfiable, VideoStorageUnavailable, problem_spec
from gateway.metrics import Metrics
from gateway.storage import VideoMissing, VideoStore, VideoStoreError
from gateway.store import TaskStore
from gateway.tasks import TASK_ID, StoredVideo, TaskRecord
from providers.base import TaskStatus

logger = logging.getLogger(__name__)

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one range ``header`` asks for, as (start, end exclusive); None for the whole video
    (no header, or one this server ignores as RFC 9110 allows: several ranges, another unit).
    Raises :class:`RangeNotSatisfiable` for a range that starts past the end."""
    match = RANGE.match(header.strip()) if header else None
    if match is None:
        return None
    first, last = match.groups()
    unsatisfiable = RangeNotSatisfiable(
        f"the video has {size} bytes", headers={"content-range": f"bytes */{size}"}
    )
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0:
            raise unsatisfiable
        return max(0, size - suffix), size
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if start >= size:
        raise unsatisfiable
    return (start, end) if end > start else None


def entity_tag(stored: StoredVideo) -> str:
    return f'"{stored.sha256[:32]}"'


class VideoContent:
    """Answers ``/content`` for one task."""

    def __init__(
        self, store: TaskStore, videos: VideoStore | None, *, redirect: bool, metrics: Metrics
    ) -> None:
        self._store = store
        self._videos = videos
        self._redirect = redirect
        self._metrics = metrics

    async def answer(
        self, client: str, task_id: str, variant: str | None, request: Request[Any, Any, Any]
    ) -> Response[Any]:
        record = await self._store.get(task_id) if TASK_ID.match(task_id) else None
        if (
            record is None
            or record.client != client
            or record.status is not TaskStatus.COMPLETED
            or variant not in (None, "video")
        ):
            raise NotFound(f"no completed video for task {task_id}")
        if record.stored is None or self._videos is None:
            return _found(_reseller_link(record))
        try:
            return await self._stored(record.stored, self._videos, request)
        except VideoMissing as exc:
            raise NotFound("the stored video was deleted (see the task's expires_at)") from exc
        except VideoStoreError as exc:
            logger.warning("video storage unreachable", extra={"task_id": task_id,
                                                               "error": str(exc)})  # fmt: skip
            raise VideoStorageUnavailable("the video storage cannot be reached") from exc

    async def _stored(
        self, stored: StoredVideo, videos: VideoStore, request: Request[Any, Any, Any]
    ) -> Response[Any]:
        if self._redirect and videos.signs_urls:
            signed = await videos.signed_url(stored.key)
            if signed is not None:
                return _found(signed)
        etag = entity_tag(stored)
        headers = {"etag": etag, "accept-ranges": "bytes", "cache-control": "private"}
        if etag in request.headers.get("if-none-match", ""):
            return Response(b"", status_code=304, headers=headers)
        info = await videos.info(stored.key)
        if info is None:
            raise VideoMissing(stored.key)
        if_range = request.headers.get("if-range")
        wanted = None if if_range not in (None, etag) else request.headers.get("range")
        span = byte_range(wanted, info.size)
        start, end = span if span is not None else (0, info.size)
        headers["content-length"] = str(end - start)
        if span is not None:
            headers["content-range"] = f"bytes {start}-{end - 1}/{info.size}"
        status = 206 if span is not None else 200
        if request.method == HttpMethod.HEAD:  # the headers only: no read from the store
            return Response(b"", status_code=status, headers=headers,
                            media_type=stored.content_type)  # fmt: skip
        chunks = await videos.read(stored.key, start, end)
        return Stream(
            self._counted(chunks), status_code=status, headers=headers,
            media_type=stored.content_type,
        )  # fmt: skip

    async def _counted(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self._metrics.video_served(len(chunk))
            yield chunk


def _reseller_link(record: TaskRecord) -> str:
    link = record.upstream_video_url or record.video_url
    if link is None:
        raise NotFound(f"no video for task {record.id}")
    return link


def _found(location: str) -> Response[Any]:
    return Response(b"", status_code=302, headers={"location": location})


def without_body(app: ASGIApp) -> ASGIApp:
    """Handler middleware: a ``HEAD`` request gets the status and headers the handler (or the
    exception handler, or a guard's refusal) answered, ``Content-Length`` included, and an
    empty body. GET passes through untouched."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != HttpMethod.HEAD:
            await app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await app(scope, receive, headers_only)

    return middleware


Variant = Annotated[
    str | None, QueryParameter(name="variant", required=False, description="only `video`")
]
"""``?variant=``: GET's and HEAD's one query parameter."""

CONTENT_ANSWERS: dict[int, ResponseSpec] = {
    200: ResponseSpec(data_container=bytes, media_type="video/mp4",
                      description="The stored video", generate_examples=False),
    206: ResponseSpec(data_container=bytes, media_type="video/mp4",
                      description="The Range asked for (Content-Range says which)",
                      generate_examples=False),
    302: ResponseSpec(data_container=None, description="Location: a signed URL "
                      "(storage.redirect) or the reseller's link (no stored copy)"),
    304: ResponseSpec(data_container=None, description="If-None-Match matched the ETag"),
    **MALFORMED,
    **GUARDED,
    404: problem_spec("not_found: no completed task with this id for this key, another "
                      "variant than video, or the stored copy was deleted"),
    416: problem_spec("range_not_satisfiable: the Range starts past the end of the video"),
    503: problem_spec("store_unavailable: Redis or the video storage cannot be reached"),
}  # fmt: skip
"""What GET answers; HEAD documents the same statuses without a body (:data:`HEAD_ANSWERS`)."""

HEAD_ANSWERS: dict[int, ResponseSpec] = {
    status: ResponseSpec(data_container=None, description=f"As GET, without the body: "
                         f"{spec.description}")
    for status, spec in CONTENT_ANSWERS.items()
}  # fmt: skip


class VideoContentController(Controller):
    path = "/v1/videos"
    tags = ["videos"]
    guards = [require_client]
    security = BEARER

    @get(
        "/{task_id:str}/content",
        summary="The finished video's bytes (Range supported), or a redirect to them",
        responses=CONTENT_ANSWERS,
    )
    async def content(
        self,
        request: Request[Any, Any, Any],
        task_id: FromPath[str],
        content: NamedDependency[VideoContent],
        variant: Variant = None,
    ) -> Response[Any]:
        return await content.answer(current_client(request), task_id, variant, request)

    @route(
        "/{task_id:str}/content",
        http_method=HttpMethod.HEAD,
        summary="The finished video's size, type and ETag: GET's status and headers, no body",
        responses=HEAD_ANSWERS,
        middleware=[without_body],
    )
    async def content_head(
        self,
        request: Request[Any, Any, Any],
        task_id: FromPath[str],
        content: NamedDependency[VideoContent],
        variant: Variant = None,
    ) -> Response[Any]:
        return await content.answer(current_client(request), task_id, variant, request)
