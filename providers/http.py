"""HTTP plumbing shared by the adapters: one client per account, transport errors mapped.

The mapping follows one rule: a failure *before the request was sent* proves the upstream
created nothing (:class:`Unreachable`); a failure *after* leaves the outcome unknown.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx

from providers.base import ProviderSettings
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

USER_AGENT = "hailuo-gateway/0.1"


def build_client(
    settings: ProviderSettings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """A pooled client for one reseller account; the key rides in a default header."""
    timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s, pool=5.0)
    return httpx.AsyncClient(
        base_url=settings.base_url,
        timeout=timeout,
        transport=transport,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        headers={
            "Authorization": f"Bearer {settings.api_key.get_secret_value()}",
            "User-Agent": USER_AGENT,
        },
    )


async def send(
    client: httpx.AsyncClient,
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
    if status >= 500:
        return UpstreamServerError(provider, text, **kwargs)
    return OutcomeUnknown(provider, f"unexpected answer {status}: {text}", **kwargs)


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
