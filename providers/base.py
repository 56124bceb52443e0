"""The provider interface and the canonical types every adapter speaks.

An adapter translates a :class:`VideoJob` into one reseller's wire format, and the reseller's
answers back into :class:`Submitted` and :class:`UpstreamStatus`. Every failure leaves an adapter
as a :class:`providers.errors.ProviderError`, whose class tells routing whether the upstream took
the task.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, SecretStr

Tier = Literal["standard", "pro"]
Resolution = Literal["768P", "1080P"]
Duration = Literal[6, 10]


class TaskStatus(StrEnum):
    """The public status words (the OpenAI Videos API's)."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED)


class VideoJob(BaseModel):
    """One canonical Hailuo 2.3 generation, already validated by the gateway."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "hailuo-2.3"
    tier: Tier = "standard"
    prompt: str
    image: str | None = None
    duration: Duration = 6
    resolution: Resolution = "768P"
    callback_url: str | None = None

    @property
    def mode(self) -> Literal["image_to_video", "text_to_video"]:
        return "text_to_video" if self.image is None else "image_to_video"

    @property
    def price_key(self) -> str:
        """The key of this combination in a price table: ``"<duration>s_<resolution>"``."""
        return f"{self.duration}s_{self.resolution}"


class Submitted(BaseModel):
    """An upstream accepted the job: it exists there and will be billed if it succeeds."""

    model_config = ConfigDict(frozen=True)

    upstream_id: str
    status: TaskStatus
    raw_status: str


class UpstreamStatus(BaseModel):
    """What the upstream says about one task, mapped onto the public status words."""

    model_config = ConfigDict(frozen=True)

    status: TaskStatus
    raw_status: str
    video_url: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    progress: int | None = None
    """0–100, where the upstream reports how far a running task is (None: it does not)."""


class AccountBalance(BaseModel):
    """What a reseller account can still spend, in US cents."""

    model_config = ConfigDict(frozen=True)

    balance_cents: int


class ProviderSettings(BaseModel):
    """What an adapter needs to talk to one reseller account."""

    model_config = ConfigDict(frozen=True)

    name: str
    base_url: str
    api_key: SecretStr
    connect_timeout_s: float = 3.0
    timeout_s: float = 30.0


@runtime_checkable
class Provider(Protocol):
    """One reseller account. Adapters own their HTTP client and release it in ``aclose``."""

    kind: ClassVar[str]
    models: ClassVar[tuple[str, ...]]
    text_to_video: ClassVar[bool]
    data_uri_images: ClassVar[bool]
    """Whether the reseller's image field takes ``data:`` URIs, not only URLs."""

    @property
    def name(self) -> str: ...

    async def create(self, job: VideoJob) -> Submitted:
        """Submit a paid generation. Raises a ProviderError subclass on any failure."""
        ...

    async def status(self, upstream_id: str) -> UpstreamStatus:
        """Read a task's status (free). Raises a ProviderError subclass on any failure."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class BalanceReader(Protocol):
    """An optional capability of an adapter whose reseller publishes the account balance
    (``Capabilities.balance_api``)."""

    @property
    def name(self) -> str: ...

    async def balance(self) -> AccountBalance:
        """Read the account balance (free). Raises a ProviderError subclass on any failure."""
        ...
