"""One exception tree for every reseller failure.

The classes answer the one question routing must ask before it tries another reseller:
*could the upstream have created (and billed) a task?*

    ProviderError
    ├── NotTaken                 the upstream certainly created no task
    │   ├── Unreachable          refused / DNS / TLS / connect timeout: nothing was sent [failover]
    │   ├── UpstreamServerError  a 5xx answer (HTML edge pages included)                [failover]
    │   ├── RateLimited          429, with ``retry_after`` seconds when given            [failover]
    │   ├── AccountError         401 / 403 (our key) and 402 (out of credits)            [failover]
    │   ├── RequestRejected      400 / 422 not about content: a translation bug          [stop]
    │   ├── ContentRejected      the prompt or image was refused on content grounds      [stop]
    │   └── TaskNotFound         status lookup of an id the upstream does not know       [stop]
    └── OutcomeUnknown           sent, but no usable answer: the task may exist          [stop*]
        └── UnusableAnswer       accepted, but the answer cannot be followed safely      [stop]

    * unless the operator allows failover on timeouts; never for UnusableAnswer, whose task
      the upstream has certainly taken (``taken`` is True).
"""

from __future__ import annotations

from typing import ClassVar

CONTENT_KEYWORDS: tuple[str, ...] = (
    "content",
    "safety",
    "moderation",
    "nsfw",
    "sensitive",
    "policy",
    "inappropriate",
)
"""Words that mark a refusal as a content refusal. Resellers do not document the shape; keep the
list here, in one place, so it can be corrected without touching the adapters."""


def mentions_content_refusal(*texts: str | None) -> bool:
    """True when any of ``texts`` reads like a content-policy refusal."""
    lowered = " ".join(t.lower() for t in texts if t)
    return any(word in lowered for word in CONTENT_KEYWORDS)


class ProviderError(Exception):
    """A reseller call failed. ``outcome`` is the word recorded in a task's ``attempts``."""

    outcome: ClassVar[str] = "upstream_error"
    failover: ClassVar[bool] = False
    taken: ClassVar[bool | None] = None  # None: unknown

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        http_status: int | None = None,
        upstream_code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message
        self.http_status = http_status
        self.upstream_code = upstream_code
        self.retry_after_s = retry_after_s


class NotTaken(ProviderError):
    """The upstream did not create a task: trying elsewhere cannot bill twice."""

    taken = False
    failover = True


class Unreachable(NotTaken):
    outcome = "upstream_unreachable"


class UpstreamServerError(NotTaken):
    outcome = "upstream_unavailable"


class RateLimited(NotTaken):
    outcome = "rate_limited"


class AccountError(NotTaken):
    """Our key is wrong or our credits are gone: this account needs an operator."""

    outcome = "account_error"


class RequestRejected(NotTaken):
    """The upstream refused the translated request as invalid; another reseller would too."""

    outcome = "upstream_rejected"
    failover = False


class ContentRejected(NotTaken):
    outcome = "content_rejected"
    failover = False


class TaskNotFound(NotTaken):
    outcome = "not_found"
    failover = False


class OutcomeUnknown(ProviderError):
    """The request went out and no usable answer came back: the task may exist upstream."""

    outcome = "outcome_unknown"
    failover = False
    taken: ClassVar[bool | None] = None


class UnusableAnswer(OutcomeUnknown):
    """The upstream accepted the task, but its answer cannot be followed safely.

    fal.ai naming a status URL on a host other than the configured one is the case: following
    it would send our key there. The upstream has taken the task and may bill it, so routing
    treats it as an unanswered create (the client learns a bill may exist) but never sends the
    request elsewhere, whatever ``failover_on_timeout`` says.
    """

    taken = True
