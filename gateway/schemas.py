"""The public request and task models: the JSON that clients send and receive (api.md §2)."""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from gateway.config import StrategyName
from providers.base import Duration, Resolution, TaskStatus, Tier
from providers.capabilities import IMAGE_ONLY_MODELS

WHITESPACE = r"\t-\r\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
"""A regex character class of exactly the characters ``str.strip()`` removes (``str.isspace``),
spelled out so the OpenAPI patterns below mean the same in every regex dialect."""
MAX_PROMPT = 2000
PROMPT_PATTERN = (
    rf"^[{WHITESPACE}]*[^{WHITESPACE}](?:[\s\S]{{0,{MAX_PROMPT - 2}}}[^{WHITESPACE}])?"
    rf"[{WHITESPACE}]*$"
)
"""1–2000 characters once surrounding whitespace is trimmed (what ``_prompt`` checks)."""
DURATION_PATTERN = rf"^[{WHITESPACE}]*(?:6|10)[{WHITESPACE}]*$"
RESOLUTION_PATTERN = rf"^[{WHITESPACE}]*(?:768|1080)[pP][{WHITESPACE}]*$"

_HOST = r"[A-Za-z0-9\-._~%!$&'()*+,;=]+"
_PORT = r"(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
_REST = rf"(?:[/?#][^{WHITESPACE}\x00-\x1f\x7f-\x9f]*)?"
HTTP_URL_PATTERN = rf"^https?://{_HOST}{_PORT}{_REST}$"
"""An ``http(s)://`` URL with a registered-name or IPv4 host (IPv6 literals and user info are not
taken), a port within 0–65535, and no whitespace or control character anywhere: what every
reseller's URL fields accept (``^https?://\\S+$``), so an accepted image is never refused
upstream as a malformed URL."""
HTTP_URL = re.compile(HTTP_URL_PATTERN)
MAX_IMAGE_URL = 4096
MAX_WEBHOOK_URL = 2048

MAX_IMAGE_BYTES = 10 * 1024 * 1024
"""The largest decoded data-URI image (the body limit, 12 MiB by default, leaves room for it)."""
MAX_IMAGE_BASE64 = 4 * -(-MAX_IMAGE_BYTES // 3)
"""The longest base64 payload: the characters that encode ``MAX_IMAGE_BYTES``."""
_B64 = "[A-Za-z0-9+/]"
_B64_TAIL = rf"(?:{_B64}{{4}})*(?:{_B64}{{2}}==|{_B64}{{3}}=)?"
DATA_URI_PATTERNS = {
    # Each type's base64 starts with its magic bytes; the rest is canonical base64 (strict
    # padding, no whitespace). The PNG signature is 8 bytes, so its third group may be the last.
    "png": rf"^data:image/png;base64,iVBORw0KGg[o-r](?:=|{_B64}{_B64_TAIL})$",
    "jpeg": rf"^data:image/jpeg;base64,/9j/{_B64_TAIL}$",
    "webp": rf"^data:image/webp;base64,UklGR[g-v]{_B64}{{4}}[159BFJNRVZdhlptx]XRUJQ{_B64_TAIL}$",
}
"""The data URIs ``_check_data_uri`` accepts, as patterns (for the OpenAPI document)."""
DATA_URI = re.compile(r"data:image/(png|jpeg|webp);base64,(?P<payload>[A-Za-z0-9+/=]+)")
MAX_METADATA_KEYS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


def _duration(value: Any) -> Any:
    # "6"/"10" are accepted as strings; booleans and floats are not integers here.
    if isinstance(value, str) and value.strip() in ("6", "10"):
        return int(value.strip())  # int() trims less than str.strip() (e.g. not "\x1e")
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("duration", "must be 6 or 10 (seconds)")
    return value


def _resolution(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().upper()
    return value


def _http_url(value: str) -> str:
    if HTTP_URL.fullmatch(value) is None:
        raise PydanticCustomError(
            "url",
            "must be an http:// or https:// URL with a host name or IPv4 address, a port up to "
            "65535, and no whitespace",
        )
    return value


MAGIC: dict[str, Callable[[bytes], bool]] = {
    "png": lambda head: head.startswith(b"\x89PNG\r\n\x1a\n"),
    "jpeg": lambda head: head.startswith(b"\xff\xd8\xff"),
    "webp": lambda head: head[:4] == b"RIFF" and head[8:12] == b"WEBP",
}


def _check_data_uri(value: str) -> None:
    """Type, encoding, size, and that the bytes are the image type the URI declares."""
    match = DATA_URI.fullmatch(value)
    if match is None:
        raise PydanticCustomError(
            "image", "a data URI must be data:image/{png,jpeg,webp};base64,<data>"
        )
    payload = match["payload"]
    if len(payload) > MAX_IMAGE_BASE64:
        raise PydanticCustomError("image", "a data-URI image must be at most 10 MiB")
    try:
        head = binascii.a2b_base64(payload[:16], strict_mode=True)
        binascii.a2b_base64(payload, strict_mode=True)
    except binascii.Error as exc:
        raise PydanticCustomError("image", "the data URI is not valid base64") from exc
    kind = match[1]
    if not MAGIC[kind](head):
        raise PydanticCustomError("image", f"the data is not a {kind} image")


POSITIVE_DECIMAL = (
    r"^(?:[0-9]{0,9}[1-9][0-9]{0,9}(?:\.[0-9]{1,9})?|[0-9]{1,9}\.[0-9]{0,8}[1-9][0-9]{0,8})$"
)
"""A form's ``routing[max_price_usd]``: a plain decimal above 0."""


class RoutingOverrides(BaseModel):
    """Per-request routing overrides."""

    model_config = ConfigDict(extra="forbid")

    strategy: StrategyName | None = None
    providers: list[str] | None = Field(None, min_length=1, max_length=16)
    """An allow-list, in preference order (used as the order by the ``priority`` strategy)."""
    max_price_usd: float | None = Field(None, gt=0, strict=True, allow_inf_nan=False)
    """A JSON number (``true`` or ``"0.5"`` is refused, as the document says); a form sends a
    string, which :mod:`gateway.openai_compat` reads first (:data:`POSITIVE_DECIMAL`)."""


class CreateVideoRequest(BaseModel):
    """``POST /v1/videos``. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("hailuo-2.3", min_length=1, max_length=64)
    tier: Tier = "standard"
    prompt: str = Field(description="1–2000 characters after trimming")
    image: str | None = Field(
        None,
        description="http(s) URL or data:image/{png,jpeg,webp};base64,…; absent = text",
        validate_default=True,  # absent is checked too: image-only models need one
    )
    duration: Annotated[Duration, BeforeValidator(_duration)] = 6
    resolution: Annotated[Resolution, BeforeValidator(_resolution)] = "768P"
    webhook_url: str | None = Field(None, max_length=MAX_WEBHOOK_URL)
    metadata: dict[str, str] = Field(default_factory=dict)
    routing: RoutingOverrides | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise PydanticCustomError("prompt", "must not be empty")
        if len(value) > MAX_PROMPT:
            raise PydanticCustomError("prompt", "must be at most 2000 characters after trimming")
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None, info: Any) -> str | None:
        if value is None:
            model = info.data.get("model")
            if model in IMAGE_ONLY_MODELS:
                raise PydanticCustomError(
                    "image", "{model} is image-to-video only: send a first frame", {"model": model}
                )
            return None
        if value.startswith("data:"):
            _check_data_uri(value)
            return value
        if len(value) > MAX_IMAGE_URL:
            raise PydanticCustomError("image", "an image URL must be at most 4096 characters")
        return _http_url(value)

    @field_validator("resolution")
    @classmethod
    def _no_ten_seconds_at_1080p(cls, value: Resolution, info: Any) -> Resolution:
        # Checked on the resolution field so the error names a field. No reseller serves it.
        if value == "1080P" and info.data.get("duration") == 10:
            raise PydanticCustomError(
                "combination", "10 s at 1080P is not offered; use 768P, or 6 s at 1080P"
            )
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_METADATA_KEYS:
            raise PydanticCustomError("metadata", "at most 16 keys")
        for key, item in value.items():
            if not key or len(key) > MAX_METADATA_KEY:
                raise PydanticCustomError("metadata", "keys must be 1–64 characters")
            if len(item) > MAX_METADATA_VALUE:
                raise PydanticCustomError("metadata", "values must be at most 512 characters")
        return value


Mode = Literal["image_to_video", "text_to_video"]


class TaskError(BaseModel):
    code: str
    message: str


class Attempt(BaseModel):
    """One upstream create call made for a task."""

    provider: str
    outcome: str
    """``accepted``, ``pending`` (in flight) or a ProviderError outcome word."""
    latency_ms: int = 0
    message: str | None = None
    """The upstream's own message, for refusals."""


class Task(BaseModel):
    """The public task object."""

    id: str
    object: Literal["video"] = "video"
    status: TaskStatus
    progress: int = Field(ge=0, le=100, description="0–100; 100 once completed")
    model: str
    tier: Tier
    duration: Duration
    resolution: Resolution
    seconds: str = Field(description="The OpenAI Videos API's spelling of duration")
    size: str = Field(description="The OpenAI Videos API's spelling of resolution")
    mode: Mode
    provider: str | None
    provider_task_id: str | None
    price_usd: float | None
    video_url: str | None = None
    """The gateway's link to its stored copy once completed (the reseller's when none could be
    made)."""
    expires_at: int | None = None
    """Until when ``video_url`` works (the stored copy's deletion time); None when unknown."""
    upstream_video_url: str | None = None
    """The reseller's own link, for the record."""
    error: TaskError | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    attempts: list[Attempt] = Field(default_factory=list)
    created_at: int
    updated_at: int
    completed_at: int | None = None


class TaskList(BaseModel):
    """``GET /v1/videos``: one page of the client's tasks (the OpenAI list envelope)."""

    object: Literal["list"] = "list"
    data: list[Task]
    first_id: str | None
    last_id: str | None
    has_more: bool


class TaskDeleted(BaseModel):
    """``DELETE /v1/videos/{id}``."""

    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: Literal[True] = True


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document with a stable ``code``."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    code: str
    errors: list[FieldError] | None = None
    attempts: list[Attempt] | None = None
    id: str | None = None
    """The task's public id, when one was recorded (``504 upstream_outcome_unknown``): the
    client may poll it."""


class LatencyMs(BaseModel):
    p50: float | None
    p99: float | None


class ProviderInfo(BaseModel):
    """One entry of ``GET /v1/providers``."""

    name: str
    kind: str
    enabled: bool
    circuit: Literal["closed", "open", "half_open"]
    success_rate: float | None
    """Share of good outcomes among the last 100 creates and finished tasks; None: no traffic."""
    latency_ms: LatencyMs
    """Create latency over the last 200 accepted creates."""
    models: list[str]
    """The models it is configured and priced for."""
    modes: dict[str, list[Mode]]
    """model → the modes it renders it in (``text_to_video`` needs no image)."""
    image_forms: list[Literal["url", "data_uri"]]
    """What its image field takes: http(s) URLs, and data URIs where it says so."""
    prices_usd: dict[str, dict[str, float]]
    """The ``hailuo-2.3`` table, by tier then ``"<duration>s_<resolution>"``."""
    prices_by_model_usd: dict[str, dict[str, dict[str, float]]]
    """Every model's table: model → tier → ``"<duration>s_<resolution>"``."""
    balance_usd: float | None = None
    """The last known account balance (less the prices accepted since); None where the
    reseller has no balance API or it has not been read yet."""


class ProviderList(BaseModel):
    data: list[ProviderInfo]


class ProviderUsage(BaseModel):
    spent_usd: float
    tasks: int


class Usage(BaseModel):
    """``GET /v1/usage``: the calling client's money in the current UTC period."""

    client: str
    period: Literal["day", "month"]
    start: int
    end: int
    spent_usd: float
    """Prices of the tasks created in this period that completed (what resellers bill)."""
    reserved_usd: float
    """Held for unfinished tasks, and for those whose outcome is unknown (they may bill)."""
    budget_usd: float | None
    tasks: int
    """Completed tasks counted in ``spent_usd``."""
    by_provider: dict[str, ProviderUsage]
    saving_usd: float
    """What price routing saved: the same tasks at the dearest eligible provider's price,
    less ``spent_usd``."""


class Liveness(BaseModel):
    """``GET /healthz``."""

    status: Literal["ok"] = "ok"


class ReadinessReport(BaseModel):
    """``GET /readyz``: ``reasons`` is present when not ready."""

    status: Literal["ready", "unavailable"]
    reasons: list[str] | None = None
