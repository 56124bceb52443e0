"""HTTP plumbing shared by the adapters: one client per account, transport errors mapped.

The mapping follows one rule: a failure *before the request was sent* proves the upstream
created nothing (:class:`Unreachable`); a failure *after* leaves the outcome unknown.
:class:`HTTPAdapter` holds what every reseller's adapter does the same way around that.
"""

from __future__ import annotations

import email.utils
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar

import httpx

from providers.base import ProviderSettings, Submitted, UpstreamStatus, VideoJob
from providers.errors import (
    AccountError,
    ContentRejected,
    OutcomeUnknown,
    ProviderError,
    RateLimited,
    RequestRejected,
    TaskNotFound,
    Unreachable,
    UpstreamServerError,
    mentions_content_refusal,
)
from providers.transport import AiohttpTransport

USER_AGENT = "hailuo-gateway/0.1"
POOL_LIMITS = httpx.Limits(max_connections=200, keepalive_expiry=4.0)
"""Per reseller account: at most 200 requests in flight; idle connections close after 4 s, before
the common 5 s server idle timeout: a create written to a connection the server is closing gets
no answer, and is "outcome unknown" (never resent, never failed over)."""

AMBIGUOUS_STATUSES = frozenset({504, 524})
"""Gateway timeouts: a proxy in front of the reseller stopped waiting for it, so the reseller may
have taken the task. Unlike every other 5xx they are an unknown outcome, never failed over."""

T = TypeVar("T")


class UpstreamClient:
    """One reseller account over one pooled transport: its base URL, key and timeouts.

    Requests are ``httpx.Request`` objects handed straight to the transport. ``httpx.AsyncClient``
    would add a cookie jar, redirect and auth flows and URL merging that the adapters do not use
    and that cost about a sixth of a create's CPU in the benchmark (the cookie jar alone parsed
    every answer). Requests go through :class:`~providers.transport.AiohttpTransport` unless
    ``transport`` is given (the unit tests give httpx's own, which respx mocks). The key goes in
    ``Authorization: <auth_scheme> <key>`` on every request, and every request goes to the base
    URL: the client cannot send the key anywhere else.
    """

    def __init__(
        self,
        settings: ProviderSettings,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        auth_scheme: str = "Bearer",
    ) -> None:
        self._base_url = settings.base_url.rstrip("/")
        self._headers = {
            "Accept": "*/*",
            "Accept-Encoding": "gzip, deflate",
            "Authorization": f"{auth_scheme} {settings.api_key.get_secret_value()}",
            "User-Agent": USER_AGENT,
        }
        timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s, pool=5.0)
        self._timeout = timeout.as_dict()
        self._transport = transport or AiohttpTransport(limits=POOL_LIMITS)

    async def request(
        self, method: str, path: str, *, json: dict[str, Any] | None = None
    ) -> httpx.Response:
        """``path`` (with its query) is appended to the base URL; the whole body is read."""
        request = httpx.Request(
            method, self._base_url + path, json=json, headers=self._headers,
            extensions={"timeout": self._timeout},
        )  # fmt: skip
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Requester(Protocol):
    async def request(
        self, method: str, url: str, *, json: dict[str, Any] | None = None
    ) -> httpx.Response: ...


async def send(
    client: Requester,
    provider: str,
    method: str,
    url: str,
    *,
    json: dict[str, Any] | None = None,
) -> httpx.Response:
    """Send one request; transport failures leave as ProviderErrors, HTTP errors do not."""
    try:
        return await client.request(method, url, json=json)
    except (
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.PoolTimeout,
        httpx.UnsupportedProtocol,
    ) as exc:
        raise Unreachable(provider, f"could not connect: {type(exc).__name__}") from exc
    except httpx.RequestError as exc:
        # Read/write timeouts, dropped connections, protocol errors, and a body that cannot be
        # decoded (DecodingError is no TransportError): the request may have been received and
        # acted on.
        raise OutcomeUnknown(provider, f"no answer: {type(exc).__name__}") from exc


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds, from either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²".isdigit() is True, float("²") fails
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def json_body(response: httpx.Response) -> Any:
    """The parsed JSON body, or None when the body is not JSON (an HTML edge page, say)."""
    try:
        return response.json()
    except ValueError:
        return None


def describe_shape(body: object, *, depth: int = 3) -> str:
    """The keys of a JSON body, never its values: safe to log (URLs and ids stay out)."""
    if isinstance(body, dict):
        if depth <= 0:
            return "{…}"
        inner = ", ".join(
            f"{key}: {describe_shape(value, depth=depth - 1)}"
            if isinstance(value, dict | list)
            else str(key)
            for key, value in sorted(body.items(), key=lambda item: str(item[0]))
        )
        return "{" + inner + "}"
    if isinstance(body, list):
        if not body:
            return "[]"
        return f"[{len(body)} x {describe_shape(body[0], depth=depth - 1)}]"
    return "null" if body is None else type(body).__name__


def error_for_status(
    provider: str,
    response: httpx.Response,
    *,
    message: str | None,
    code: str | None,
    http_status: int | None = None,
) -> ProviderError:
    """Map a failed answer onto the tree.

    ``http_status`` overrides the transport status when a reseller reports its failure in the
    body (an envelope ``code``) instead. Statuses with one meaning (401, 402, 404, 429) decide
    before the content keywords do: "see our billing policy" in a 402 is still out of credits.
    ``504`` and ``524`` are :class:`OutcomeUnknown` (api.md §3), every other 5xx a failover.
    The account's key is scrubbed from everything quoted, in case an upstream echoes it.
    """
    status = http_status if http_status is not None else response.status_code
    secret = _bearer_token(response)
    message = _redact(message, secret)
    code = _redact(code, secret)
    text = message or _redact(_snippet(response), secret) or "error"
    kwargs: dict[str, Any] = {"http_status": status, "upstream_code": code}
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return RateLimited(provider, text, retry_after_s=retry_after, **kwargs)
    if status in (401, 402):
        return AccountError(provider, text, **kwargs)
    if status == 404:
        return TaskNotFound(provider, text, **kwargs)
    if 400 <= status < 500:
        if mentions_content_refusal(message, code):
            return ContentRejected(provider, text, **kwargs)
        if status == 403:
            return AccountError(provider, text, **kwargs)
        # 400, 422, 405, 409, 413…: the upstream refused it, so nothing was created; another
        # reseller would refuse the same translation, so not worth a failover.
        return RequestRejected(provider, text, **kwargs)
    if status in AMBIGUOUS_STATUSES:
        return OutcomeUnknown(provider, f"a proxy gave up waiting: {text}", **kwargs)
    if status >= 500:
        return UpstreamServerError(provider, text, **kwargs)
    return OutcomeUnknown(provider, f"unexpected answer {status}: {text}", **kwargs)


class HTTPAdapter(ABC):
    """The scaffolding of one reseller account spoken to over HTTP.

    It owns the account's client and turns each answer into either a parsed result or a
    :class:`ProviderError`. A subclass keeps its reseller's paths and pure translation, writes
    ``create`` and ``status`` with :meth:`_submit` and :meth:`_poll` (any other request with
    :meth:`_call`), and says how to read a failure body in :meth:`_parse_error` (and, when the
    body can report a failure, :meth:`_failed_status`).
    """

    kind: ClassVar[str]
    models: ClassVar[tuple[str, ...]]
    text_to_video: ClassVar[bool]
    data_uri_images: ClassVar[bool]
    auth_scheme: ClassVar[str] = "Bearer"
    """The word before the key in ``Authorization`` (fal's is ``Key``)."""

    def __init__(
        self, settings: ProviderSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._settings = settings
        self._client = UpstreamClient(settings, transport, auth_scheme=self.auth_scheme)

    @property
    def name(self) -> str:
        return self._settings.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, base_url={self._settings.base_url!r})"

    @abstractmethod
    async def create(self, job: VideoJob) -> Submitted:
        """Submit a paid generation. Raises a ProviderError subclass on any failure."""

    @abstractmethod
    async def status(self, upstream_id: str) -> UpstreamStatus:
        """Read a task's status (free). Raises a ProviderError subclass on any failure."""

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _submit(
        self, path: str, wire: dict[str, object], parse: Callable[[object], Submitted]
    ) -> Submitted:
        """POST a create body; a 2xx answer ``parse`` finds no task id in is OutcomeUnknown."""
        return await self._call(
            "POST", path, parse, json=wire, unreadable="create answer without a task id"
        )

    async def _poll(self, path: str, parse: Callable[[object], UpstreamStatus]) -> UpstreamStatus:
        """GET a task's status; a 2xx answer ``parse`` finds no status in is OutcomeUnknown."""
        return await self._call("GET", path, parse, unreadable="status answer without a status")

    async def _call(
        self,
        method: str,
        path: str,
        parse: Callable[[object], T],
        *,
        unreadable: str,
        json: dict[str, object] | None = None,
    ) -> T:
        """Send one request and read a successful answer's JSON body with ``parse``.

        A failed answer raises its mapped :class:`ProviderError`. A successful one that
        ``parse`` refuses (any ValueError, pydantic's included) raises :class:`OutcomeUnknown`
        described as ``unreadable``: after a 2xx the task may well exist, so routing must not
        try elsewhere.
        """
        response = await send(self._client, self.name, method, path, json=json)
        body = json_body(response)
        failed = self._failed_status(response, body)
        if failed is not None:
            raise self._error(response, body, failed)
        try:
            return parse(body)
        except ValueError as exc:
            raise OutcomeUnknown(
                self.name,
                f"HTTP {response.status_code} {unreadable} (shape {describe_shape(body)})",
                http_status=response.status_code,
            ) from exc

    def _error(self, response: httpx.Response, body: object, status: int) -> ProviderError:
        """The error of a failed answer, mapped by ``status`` (see :func:`error_for_status`)."""
        message, code = self._parse_error(body)
        return error_for_status(self.name, response, message=message, code=code, http_status=status)

    def _failed_status(self, response: httpx.Response, body: object) -> int | None:
        """The status a failed answer is mapped by, or None for a success: here, the HTTP one."""
        return None if response.is_success else response.status_code

    @abstractmethod
    def _parse_error(self, body: object) -> tuple[str | None, str | None]:
        """``(message, code)`` of a failed answer's JSON body (None when it is not JSON)."""


def _bearer_token(response: httpx.Response) -> str | None:
    """The credential the request carried, so that no error can quote it back."""
    try:
        header = response.request.headers.get("Authorization")
    except RuntimeError:  # a response built without a request (tests)
        return None
    if not header:
        return None
    token = header.partition(" ")[2].strip() or header.strip()
    return token or None


def _redact(text: str | None, secret: str | None) -> str | None:
    if text is None or not secret:
        return text
    return text.replace(secret, "[redacted]")


def _snippet(response: httpx.Response, limit: int = 200) -> str:
    """A short, single-line excerpt of a body for error messages (HTML pages included)."""
    text = " ".join(response.text.split())
    reason = response.reason_phrase or "error"
    return f"HTTP {response.status_code} {reason}: {text[:limit]}" if text else reason
