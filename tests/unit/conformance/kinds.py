"""One description per reseller kind: what the conformance suite needs to speak to its adapter.

A description says, in the kind's own wire format, what each canonical request must become
(:attr:`Kind.wire`), which requests the kind refuses without a call, how its upstream answers a
create and a status read, how it words an error, and where a content refusal surfaces. Adding a
kind to the suite means writing one subclass of :class:`Kind` and listing it in :data:`KINDS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import respx
from pydantic import SecretStr

from providers.apiinone import APIInOneProvider
from providers.base import ProviderSettings, TaskStatus, VideoJob
from providers.errors import mentions_content_refusal
from providers.fal import FalProvider
from providers.minimax import MiniMaxProvider
from providers.registry import ProviderClass
from providers.runapi import RunAPIProvider
from tests.unit.adapter_helpers import IMAGE, KEY, envelope, job

DATA_URI = "data:image/png;base64,iVBORw0KGgo="
PROMPT = "a cat surfs a wave"
CONTENT_MESSAGE = "prompt rejected by safety checker"


@dataclass(frozen=True)
class WireCase:
    """One canonical request and the create call it must become."""

    id: str
    job: VideoJob
    path: str
    body: dict[str, object]


class Kind(ABC):
    """How the conformance suite drives one kind's adapter against a respx-mocked upstream."""

    name: ClassVar[str]
    adapter: ClassVar[ProviderClass]
    base: ClassVar[str]
    auth_header: ClassVar[str]
    create_path: ClassVar[str]
    """Where the default job (:func:`tests.unit.adapter_helpers.job`) is created."""
    status_path: ClassVar[str]
    """The first call :meth:`Provider.status` makes for :attr:`upstream_id`."""
    upstream_id: ClassVar[str]
    created: ClassVar[object]
    """An answer accepting a create, carrying :attr:`upstream_id`."""
    status_words: ClassVar[tuple[tuple[str, TaskStatus], ...]]
    """Every status word the kind documents, with the public status it maps onto."""
    content_refused_at: ClassVar[Literal["create", "task"]]
    """Where the kind reports a content refusal: refusing the create, or failing the task."""

    @property
    @abstractmethod
    def wire(self) -> tuple[WireCase, ...]:
        """Every canonical request the kind serves, as its create call."""

    @property
    @abstractmethod
    def refused(self) -> tuple[VideoJob, ...]:
        """Canonical requests the kind does not serve: refused before any HTTP call."""

    @abstractmethod
    def error(self, http_status: int, message: str) -> tuple[int, object]:
        """``(HTTP status, body)`` of a failure reported as ``http_status`` with ``message``."""

    @abstractmethod
    def serve_status(
        self, router: respx.MockRouter, word: str, expected: TaskStatus, video: str | None,
        error: str | None,
    ) -> None:  # fmt: skip
        """Make :attr:`upstream_id`'s status read see ``word`` (a task in the ``expected``
        state, with its ``video`` URL or ``error`` message when final)."""

    def serve_content_refusal(self, router: respx.MockRouter) -> None:
        """Refuse the default job on content grounds, the way the kind really does."""
        status, body = self.error(422, CONTENT_MESSAGE)
        router.post(self.create_path).respond(status, json=body)

    def settings(self) -> ProviderSettings:
        return ProviderSettings(
            name=f"{self.name}-acct", base_url=self.base, api_key=SecretStr(KEY)
        )

    def __repr__(self) -> str:
        return self.name


class RunAPI(Kind):
    name = "runapi"
    adapter = RunAPIProvider
    base = "https://runapi.test"
    auth_header = f"Bearer {KEY}"
    create_path = "/api/v1/hailuo/image_to_video"
    upstream_id = "6f1c2a9e-0000-4000-8000-000000000001"
    status_path = f"/api/v1/hailuo/image_to_video/{upstream_id}"
    created = {"id": upstream_id, "status": "pending"}
    status_words = (
        ("pending", TaskStatus.QUEUED),
        ("processing", TaskStatus.IN_PROGRESS),
        ("completed", TaskStatus.COMPLETED),
        ("failed", TaskStatus.FAILED),
    )
    content_refused_at = "create"

    @property
    def wire(self) -> tuple[WireCase, ...]:
        def case(tier: str, duration: int, resolution: str) -> WireCase:
            return WireCase(
                id=f"{tier}-{duration}s-{resolution}",
                job=job(tier=tier, duration=duration, resolution=resolution),
                path=self.create_path,
                body={
                    "model": f"hailuo-2.3-image-to-video-{tier}",
                    "prompt": PROMPT,
                    "first_frame_image_url": IMAGE,
                    "duration_seconds": duration,
                    "output_resolution": resolution.lower(),
                },
            )

        return tuple(
            case(tier, d, r)
            for tier in ("standard", "pro")
            for d, r in ((6, "768P"), (10, "768P"), (6, "1080P"))
        )

    @property
    def refused(self) -> tuple[VideoJob, ...]:
        return (job(image=None), job(image=None, resolution="1080P"))

    def error(self, http_status: int, message: str) -> tuple[int, object]:
        return http_status, {"error": {"code": "error", "message": message}}

    def serve_status(
        self, router: respx.MockRouter, word: str, expected: TaskStatus, video: str | None,
        error: str | None,
    ) -> None:  # fmt: skip
        body: dict[str, object] = {"id": self.upstream_id, "status": word, "error": error}
        body["videos"] = [{"url": video}] if video else []
        router.get(self.status_path).respond(200, json=body)


class APIInOne(Kind):
    name = "apiinone"
    adapter = APIInOneProvider
    base = "https://apiinone.test"
    auth_header = f"Bearer {KEY}"
    create_path = "/api/v1/videos/generations"
    upstream_id = "n51abc_hailuo"
    status_path = f"/api/v1/tasks/{upstream_id}"
    created = envelope({"task_id": upstream_id, "status": "IN_PROGRESS"})
    status_words = (
        ("PENDING", TaskStatus.QUEUED),
        ("IN_PROGRESS", TaskStatus.IN_PROGRESS),
        ("PROCESSING", TaskStatus.IN_PROGRESS),
        ("COMPLETED", TaskStatus.COMPLETED),
        ("SUCCESS", TaskStatus.COMPLETED),
        ("FAILED", TaskStatus.FAILED),
        ("ERROR", TaskStatus.FAILED),
    )
    content_refused_at = "create"

    @property
    def wire(self) -> tuple[WireCase, ...]:
        def case(tier: str, duration: int, resolution: str) -> WireCase:
            return WireCase(
                id=f"{tier}-{duration}s-{resolution}",
                job=job(tier=tier, duration=duration, resolution=resolution),
                path=self.create_path,
                body={
                    "model": f"hailuo/2-3-image-to-video-{tier}",
                    "prompt": PROMPT,
                    "image": IMAGE,
                    "duration": str(duration),
                    "resolution": resolution,
                },
            )

        return tuple(
            case(tier, d, r)
            for tier in ("standard", "pro")
            for d, r in ((6, "768P"), (10, "768P"), (6, "1080P"))
        )

    @property
    def refused(self) -> tuple[VideoJob, ...]:
        return (job(image=None),)

    def error(self, http_status: int, message: str) -> tuple[int, object]:
        return http_status, envelope(None, http_status, message)

    def serve_status(
        self, router: respx.MockRouter, word: str, expected: TaskStatus, video: str | None,
        error: str | None,
    ) -> None:  # fmt: skip
        data: dict[str, object] = {"task_id": self.upstream_id, "status": word, "error": error}
        data["output"] = {"video_url": video} if video else None
        router.get(self.status_path).respond(200, json=envelope(data))


FAL_APP = "/fal-ai/minimax/requests/req-1"


class Fal(Kind):
    name = "fal"
    adapter = FalProvider
    base = "https://queue.fal.test"
    auth_header = f"Key {KEY}"
    create_path = "/fal-ai/minimax/hailuo-2.3/standard/image-to-video"
    status_path = f"{FAL_APP}/status"
    upstream_id = f"{FAL_APP}/status|{FAL_APP}"
    created = {
        "request_id": "req-1",
        "status_url": f"{base}{FAL_APP}/status",
        "response_url": f"{base}{FAL_APP}",
        "cancel_url": f"{base}{FAL_APP}/cancel",
    }
    status_words = (
        ("IN_QUEUE", TaskStatus.QUEUED),
        ("IN_PROGRESS", TaskStatus.IN_PROGRESS),
        ("COMPLETED", TaskStatus.COMPLETED),
        ("COMPLETED", TaskStatus.FAILED),  # the result call tells the failure
    )
    content_refused_at = "task"

    @property
    def wire(self) -> tuple[WireCase, ...]:
        app = "/fal-ai/minimax"
        cases = []
        for model in ("hailuo-2.3", "hailuo-2.3-fast"):
            modes: tuple[tuple[str, str | None], ...] = (
                ("image-to-video", IMAGE),
                ("image-to-video", DATA_URI),
            )
            if model == "hailuo-2.3":
                modes += (("text-to-video", None),)
            for mode, image in modes:
                for duration, resolution, quality in ((6, "768P", "standard"),
                                                      (10, "768P", "standard"),
                                                      (6, "1080P", "pro")):  # fmt: skip
                    body: dict[str, object] = {"prompt": PROMPT}
                    if image:
                        body["image_url"] = image
                    if quality == "standard":
                        body["duration"] = str(duration)
                    form = "data-uri" if image == DATA_URI else mode
                    cases.append(
                        WireCase(
                            id=f"{model}-{form}-{duration}s-{resolution}",
                            job=job(
                                model=model, image=image, duration=duration, resolution=resolution
                            ),
                            path=f"{app}/{model}/{quality}/{mode}",
                            body=body,
                        )
                    )
        return tuple(cases)

    @property
    def refused(self) -> tuple[VideoJob, ...]:
        return (job(model="hailuo-2.3-fast", image=None), job(model="hailuo-9"))

    def error(self, http_status: int, message: str) -> tuple[int, object]:
        if http_status == 422:
            return 422, {"detail": [{"loc": ["body"], "msg": message, "type": "value_error"}]}
        return http_status, {"detail": message}

    def serve_status(
        self, router: respx.MockRouter, word: str, expected: TaskStatus, video: str | None,
        error: str | None,
    ) -> None:  # fmt: skip
        router.get(self.status_path).respond(200, json={"status": word})
        if expected is TaskStatus.FAILED:
            body = {"detail": error or "", "error_type": "runner_server_error"}
            router.get(FAL_APP).respond(500, json=body)
        else:
            router.get(FAL_APP).respond(200, json={"video": {"url": video} if video else None})

    def serve_content_refusal(self, router: respx.MockRouter) -> None:
        """fal's queue takes the request; the result call carries the refusal."""
        router.post(self.create_path).respond(200, json=self.created)
        router.get(self.status_path).respond(200, json={"status": "COMPLETED"})
        flagged = {"loc": ["body", "prompt"], "msg": "The content was flagged by a content "
                   "checker.", "type": "content_policy_violation"}  # fmt: skip
        router.get(FAL_APP).respond(422, json={"detail": [flagged]})


MINIMAX_FILE = "205258526306433"


class MiniMax(Kind):
    """Business errors come as HTTP 200 with ``base_resp.status_code`` (providers.md)."""

    name = "minimax"
    adapter = MiniMaxProvider
    base = "https://minimax.test"
    auth_header = f"Bearer {KEY}"
    create_path = "/v1/video_generation"
    upstream_id = "106916112212032"
    status_path = "/v1/query/video_generation"
    created = {"task_id": upstream_id, "base_resp": {"status_code": 0, "status_msg": "success"}}
    status_words = (
        ("Preparing", TaskStatus.QUEUED),
        ("Queueing", TaskStatus.QUEUED),
        ("Processing", TaskStatus.IN_PROGRESS),
        ("Success", TaskStatus.COMPLETED),
        ("Fail", TaskStatus.FAILED),
    )
    content_refused_at = "create"
    BUSINESS: ClassVar[dict[int, int]] = {400: 2013, 401: 1004, 402: 1008, 429: 1002}
    """The failures MiniMax reports under HTTP 200, by the HTTP status they stand for."""

    @property
    def wire(self) -> tuple[WireCase, ...]:
        cases = []
        for model, wire_model in (("hailuo-2.3", "MiniMax-Hailuo-2.3"),
                                  ("hailuo-2.3-fast", "MiniMax-Hailuo-2.3-Fast")):  # fmt: skip
            images: tuple[str | None, ...] = (IMAGE, DATA_URI)
            if model == "hailuo-2.3":
                images += (None,)
            for image in images:
                for duration, resolution in ((6, "768P"), (10, "768P"), (6, "1080P")):
                    body: dict[str, object] = {"model": wire_model, "prompt": PROMPT}
                    if image:
                        body["first_frame_image"] = image
                    body |= {"duration": duration, "resolution": resolution}
                    form = {IMAGE: "url", DATA_URI: "data-uri", None: "text"}[image]
                    cases.append(
                        WireCase(
                            id=f"{model}-{form}-{duration}s-{resolution}",
                            job=job(
                                model=model, image=image, duration=duration, resolution=resolution
                            ),
                            path=self.create_path,
                            body=body,
                        )
                    )
        return tuple(cases)

    @property
    def refused(self) -> tuple[VideoJob, ...]:
        return (job(model="hailuo-2.3-fast", image=None), job(model="hailuo-9"))

    def error(self, http_status: int, message: str) -> tuple[int, object]:
        code = self.BUSINESS.get(http_status)
        if http_status == 422:
            code = 1026 if mentions_content_refusal(message) else 2013
        if code is None:  # an HTTP failure from the edge (403, 404, 5xx)
            return http_status, {"base_resp": {"status_code": 1000, "status_msg": message}}
        return 200, {"task_id": "", "base_resp": {"status_code": code, "status_msg": message}}

    def serve_status(
        self, router: respx.MockRouter, word: str, expected: TaskStatus, video: str | None,
        error: str | None,
    ) -> None:  # fmt: skip
        ok = {"status_code": 0, "status_msg": "success"}
        body: dict[str, object] = {"task_id": self.upstream_id, "status": word, "base_resp": ok}
        if video:
            body["file_id"] = MINIMAX_FILE
            file = {"file_id": MINIMAX_FILE, "download_url": video}
            router.get("/v1/files/retrieve", params={"file_id": MINIMAX_FILE}).respond(
                200, json={"file": file, "base_resp": ok}
            )
        if error:
            body["error_message"] = error
        router.get(self.status_path, params={"task_id": self.upstream_id}).respond(200, json=body)


KINDS: tuple[Kind, ...] = (RunAPI(), APIInOne(), Fal(), MiniMax())
"""Every kind the suite runs against."""
