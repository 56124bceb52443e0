"""fal.ai (queue.fal.run): Hailuo 2.3 and 2.3 Fast, text- and image-to-video, through fal's queue.

Three calls per task (``shared/spec/providers.md``, fal.ai): the submit ``POST {base}/{endpoint}``
answers ``{"request_id", "status_url", "response_url", "cancel_url"}``; ``GET status_url`` says
``IN_QUEUE``, ``IN_PROGRESS`` or ``COMPLETED``; then ``GET response_url`` is ``{"video": {"url"}}``
or, for a run that failed, fal's error body. The endpoint picks model, mode and resolution (fal
calls 768P "standard" and 1080P "pro": one quality), so the canonical tier is not sent.

**The key stays home.** fal's docs say to follow the URLs the submit returns rather than build
them (the status path names the app, ``fal-ai/minimax``, not the endpoint). The key is sent only
to the configured ``base_url``'s origin (scheme, host and port): the HTTP client is bound to that
origin, and a submit answer naming a URL on any other origin raises
:class:`~providers.errors.UnusableAnswer`: fal has taken that task and may bill it, so it is
neither followed with the key nor sent to another provider.

**The upstream id** carries both returned paths, relative to the origin:
``"{status path}|{response path}"``, e.g. ``/fal-ai/minimax/requests/<id>/status|/fal-ai/
minimax/requests/<id>``. So :meth:`FalProvider.status` finds a task again after a restart with
nothing but the id, and it rebuilds the URLs on the configured origin: even a tampered id cannot
send the key elsewhere.

**A failed run** answers the result call with an error body: a model error (``{"detail":
[{"loc", "msg", "type"}]}``, ``content_policy_violation`` among the types) or a request error
(``{"detail": "…", "error_type": "…"}`` plus an ``X-Fal-Error-Type`` header, after fal's own
retries). Those become a ``failed`` status. A 5xx without fal's shape (an HTML edge page), or
401/403/404/429, is a failed *read* instead (raised): the run may still have succeeded, and a
failed status would get it resubmitted elsewhere, a second bill.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import ClassVar, Literal
from urllib.parse import SplitResult, quote, urlsplit

import httpx

from providers.base import (
    ProviderSettings,
    Resolution,
    Submitted,
    TaskStatus,
    UpstreamStatus,
    VideoJob,
)
from providers.capabilities import FAL
from providers.errors import (
    RequestRejected,
    TaskNotFound,
    UnusableAnswer,
    mentions_content_refusal,
)
from providers.http import HTTPAdapter, describe_shape, error_for_status, json_body, send

logger = logging.getLogger(__name__)

Mode = Literal["image_to_video", "text_to_video"]

ENDPOINTS: dict[tuple[str, Mode, Resolution], str] = {
    ("hailuo-2.3", "image_to_video", "768P"): "fal-ai/minimax/hailuo-2.3/standard/image-to-video",
    ("hailuo-2.3", "image_to_video", "1080P"): "fal-ai/minimax/hailuo-2.3/pro/image-to-video",
    ("hailuo-2.3", "text_to_video", "768P"): "fal-ai/minimax/hailuo-2.3/standard/text-to-video",
    ("hailuo-2.3", "text_to_video", "1080P"): "fal-ai/minimax/hailuo-2.3/pro/text-to-video",
    ("hailuo-2.3-fast", "image_to_video", "768P"): (
        "fal-ai/minimax/hailuo-2.3-fast/standard/image-to-video"
    ),
    ("hailuo-2.3-fast", "image_to_video", "1080P"): (
        "fal-ai/minimax/hailuo-2.3-fast/pro/image-to-video"
    ),
}
"""fal's endpoint for each (model, mode, resolution); Fast is image-to-video only."""

QUEUE_WORDS: dict[str, TaskStatus] = {
    "IN_QUEUE": TaskStatus.QUEUED,
    "IN_PROGRESS": TaskStatus.IN_PROGRESS,
}
FINAL_WORDS = frozenset({"COMPLETED", "FAILED", "ERROR", "CANCELED", "CANCELLED"})
"""Queue words after which only the result call tells success from failure (fal documents
``COMPLETED``; the others are read the same way, defensively)."""

ID_SEPARATOR = "|"
STILL_RUNNING = ("in progress", "in queue", "still running", "not completed")
"""How a result read before the end would say so: never a failed run."""


class Unfollowable(Exception):
    """A submit answer carries a request id (fal took the task) but no URL that may be
    followed: one is missing, unusable, or outside the configured origin."""


@dataclass(frozen=True)
class Origin:
    """Scheme, host and port of the configured base URL: where the key may go."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: SplitResult) -> Origin:
        """Raises ValueError for a URL without a host, or with an invalid port."""
        if not url.hostname or url.scheme.lower() not in ("http", "https"):
            raise ValueError("not an http(s) URL with a host")
        scheme = url.scheme.lower()
        port = url.port or (443 if scheme == "https" else 80)
        return cls(scheme, url.hostname.lower(), port)

    @property
    def url(self) -> str:
        default = 443 if self.scheme == "https" else 80
        netloc = self.host if self.port == default else f"{self.host}:{self.port}"
        if ":" in self.host:  # an IPv6 literal
            netloc = f"[{self.host}]" if self.port == default else f"[{self.host}]:{self.port}"
        return f"{self.scheme}://{netloc}"


def endpoint_for(job: VideoJob) -> str:
    """fal's endpoint id for ``job``. Raises ValueError for a combination fal does not serve."""
    if job.duration == 10 and job.resolution == "1080P":
        raise ValueError("fal serves 1080P at 6 s only")
    endpoint = ENDPOINTS.get((job.model, job.mode, job.resolution))
    if endpoint is None:
        raise ValueError(f"fal serves no {job.model} {job.mode.replace('_', '-')} endpoint")
    return endpoint


def to_wire(job: VideoJob) -> tuple[str, dict[str, object]]:
    """``(endpoint, body)`` for ``job``. ``duration`` only on the 768P ("standard") endpoints:
    the 1080P ones take none. Raises ValueError for a combination fal does not serve."""
    endpoint = endpoint_for(job)
    body: dict[str, object] = {"prompt": job.prompt}
    if job.image is not None:
        body["image_url"] = job.image  # a URL or a data URI
    if job.resolution == "768P":
        body["duration"] = str(job.duration)
    return endpoint, body


def encode_id(status_path: str, response_path: str) -> str:
    return f"{status_path}{ID_SEPARATOR}{response_path}"


def decode_id(upstream_id: str) -> tuple[str, str]:
    """``(status path, response path)``. Raises ValueError for an id this adapter did not make."""
    status_path, sep, response_path = upstream_id.partition(ID_SEPARATOR)
    if not sep or not all(_is_path(p) for p in (status_path, response_path)):
        raise ValueError("not a fal upstream id")
    return status_path, response_path


def parse_submitted(body: object, *, origin: Origin) -> Submitted:
    """The submit answer. Raises ValueError without a request id (nothing says fal took the
    task), and :class:`Unfollowable` when a URL is missing, unusable or leaves ``origin``."""
    request_id = _text(body.get("request_id")) if isinstance(body, dict) else None
    if request_id is None or not isinstance(body, dict):
        raise ValueError("no request_id")
    status_path = _path_on(origin, body.get("status_url"), "status_url")
    response_path = _path_on(origin, body.get("response_url"), "response_url")
    raw = _text(body.get("status")) or ""
    return Submitted(
        upstream_id=encode_id(status_path, response_path),
        status=QUEUE_WORDS.get(raw.upper(), TaskStatus.QUEUED),
        raw_status=raw,
    )


def parse_queue_word(body: object) -> str:
    """The queue status word (upper case). Raises ValueError when there is none."""
    raw = _text(body.get("status")) if isinstance(body, dict) else None
    if raw is None:
        raise ValueError("no status")
    return raw.upper()


def queue_status(word: str) -> UpstreamStatus:
    """A non-final queue word as a status; unknown words read as in_progress, logged."""
    status = QUEUE_WORDS.get(word)
    if status is None:
        logger.warning("fal: unknown queue status %r, treating it as in_progress", word[:40])
        status = TaskStatus.IN_PROGRESS
    return UpstreamStatus(status=status, raw_status=word)


def parse_result(body: object, raw: str) -> UpstreamStatus:
    """A successful result answer ``{"video": {"url"}}``; without a URL it stays in_progress."""
    video = body.get("video") if isinstance(body, dict) else None
    url = _text(video.get("url")) if isinstance(video, dict) else None
    if url is None:
        logger.warning(
            "fal: the run is %r but its result has no video.url (shape %s); keeping it in_progress",
            raw,
            describe_shape(body),
        )
        return UpstreamStatus(status=TaskStatus.IN_PROGRESS, raw_status=raw)
    return UpstreamStatus(status=TaskStatus.COMPLETED, raw_status=raw, video_url=url)


def run_failed(response: httpx.Response, body: object) -> bool:
    """Whether a failed result answer reports a failed run (rather than a failed read).

    A 4xx carrying fal's ``detail`` does (model errors, content refusals), except 401/403/404/
    429, which are about our key, the id or our rate. A 5xx does only with fal's request-error
    markers (``error_type`` or ``X-Fal-Error-Type``) or a model-error list: an HTML edge page
    or a bare 502 says nothing about the run, which may have succeeded.
    """
    status = response.status_code
    if not isinstance(body, dict) or "detail" not in body or status in (401, 403, 404, 429):
        return "x-fal-error-type" in response.headers and status >= 500
    if 400 <= status < 500:
        return True
    return (
        "error_type" in body
        or "x-fal-error-type" in response.headers
        or isinstance(body["detail"], list)
    )


def parse_error(body: object) -> tuple[str | None, str | None]:
    """``(message, code)`` of fal's error bodies.

    Model errors ``{"detail": [{"loc", "msg", "type"}]}`` give ``"prompt: msg; …"`` and the
    first ``type``; request errors ``{"detail": "…", "error_type": "…"}`` give both as they are.
    """
    if not isinstance(body, dict):
        return None, None
    detail = body.get("detail")
    if isinstance(detail, list):
        items = [item for item in detail if isinstance(item, dict)]
        messages = [_located(item) for item in items]
        types = [t for t in (_text(item.get("type")) for item in items) if t]
        return "; ".join(m for m in messages if m) or None, types[0] if types else None
    message = _text(detail) or _text(body.get("message")) or _text(body.get("error"))
    return message, _text(body.get("error_type"))


class FalProvider(HTTPAdapter):
    """One fal.ai account."""

    kind: ClassVar[str] = FAL.kind
    models: ClassVar[tuple[str, ...]] = FAL.models
    text_to_video: ClassVar[bool] = FAL.text_to_video
    data_uri_images: ClassVar[bool] = FAL.data_uri_images  # image_url takes data URIs [DOC]
    auth_scheme: ClassVar[str] = "Key"

    def __init__(
        self, settings: ProviderSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        base = urlsplit(settings.base_url)
        self._origin = Origin.of(base)
        self._base_path = base.path.rstrip("/")
        # The client is bound to the origin: every path it is given is sent there, and only there.
        bound = settings.model_copy(update={"base_url": self._origin.url})
        super().__init__(bound, transport=transport)
        self._settings = settings

    async def create(self, job: VideoJob) -> Submitted:
        try:
            endpoint, wire = to_wire(job)
        except ValueError as exc:
            raise RequestRejected(self.name, str(exc)) from None
        path = f"{self._base_path}/{endpoint}"
        if job.callback_url:
            path += f"?fal_webhook={quote(job.callback_url, safe='')}"
        try:
            return await self._submit(path, wire, partial(parse_submitted, origin=self._origin))
        except Unfollowable as exc:
            raise UnusableAnswer(
                self.name,
                f"the submit answer has {exc} (the key goes only to {self._origin.url}); the "
                "task was taken and may be billed, but cannot be followed",
            ) from None

    async def status(self, upstream_id: str) -> UpstreamStatus:
        try:
            status_path, response_path = decode_id(upstream_id)
        except ValueError:
            raise TaskNotFound(self.name, "not an id this adapter issued") from None
        word = await self._call(
            "GET", status_path, parse_queue_word, unreadable="status answer without a status"
        )
        if word not in FINAL_WORDS:
            return queue_status(word)
        return await self._result(response_path, word)

    async def _result(self, path: str, word: str) -> UpstreamStatus:
        response = await send(self._client, self.name, "GET", path)
        body = json_body(response)
        if response.is_success:
            return parse_result(body, word)
        message, code = parse_error(body)
        if message is not None and any(s in message.lower() for s in STILL_RUNNING):
            return UpstreamStatus(status=TaskStatus.IN_PROGRESS, raw_status=word)
        if not run_failed(response, body):
            raise error_for_status(self.name, response, message=message, code=code)
        code = code or response.headers.get("x-fal-error-type")
        refused = mentions_content_refusal(message, code)
        return UpstreamStatus(
            status=TaskStatus.FAILED,
            raw_status=word,
            error_code="content_rejected" if refused else "generation_failed",
            error_message=message or code,
        )

    def _parse_error(self, body: object) -> tuple[str | None, str | None]:
        return parse_error(body)


def _path_on(origin: Origin, value: object, name: str) -> str:
    """The path (and query) of a returned URL on ``origin``, for the upstream id."""
    text = _text(value)
    if text is None:
        raise Unfollowable(f"no {name}")
    url = urlsplit(text)
    try:
        same = Origin.of(url) == origin
    except ValueError:
        same = False
    if not same:
        raise Unfollowable(f"a {name} on {url.scheme}://{url.hostname or '?'}")
    path = url.path + (f"?{url.query}" if url.query else "")
    if not _is_path(path):
        raise Unfollowable(f"a {name} without a usable path")
    return path


def _is_path(text: str) -> bool:
    return text.startswith("/") and not text.startswith("//") and ID_SEPARATOR not in text


def _located(item: dict[str, object]) -> str | None:
    message = _text(item.get("msg"))
    loc = item.get("loc")
    where = [str(part) for part in loc if part != "body"] if isinstance(loc, list) else []
    if message and where:
        return f"{'.'.join(where)}: {message}"
    return message


def _text(node: object) -> str | None:
    if isinstance(node, str) and node.strip():
        return node.strip()
    return None
