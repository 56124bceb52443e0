"""Webhooks: a final task POSTed to its ``webhook_url``, signed the Standard Webhooks way.

Deliveries are queued in Redis atomically with the task's move to a final state
(``TaskStore.finalize``), so each final state queues exactly one delivery and a restart loses
none. Delivery is at least once: a non-2xx answer or a timeout is retried after 5 s, then with
growing delays (``webhooks.retry_delays_s``; 8 tries over about 64 minutes by default). Every
retry carries the same ``webhook-id``, so receivers can drop duplicates.

A ``webhook_url`` is the client's choice of where the gateway sends a request: it must not
reach the gateway's own network (:mod:`gateway.netguard`). It is checked when the task is
created (:func:`refusal`, a ``422``) and again when each delivery connects (the sender's
transport connects only to the address it checked, so DNS rebinding cannot redirect it);
``webhooks.allow_hosts`` names hosts the operator trusts. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import secrets
import socket
import time
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel

from gateway.config import WebhookSettings
from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics, WebhookOutcome
from gateway.netguard import AddressPolicy, GuardedTransport, UnsafeDestination, check_url
from gateway.redis_client import RedisClient
from gateway.shards import draw, shard_of
from gateway.store import Keys, TaskStore, translated
from gateway.tasks import TaskRecord

logger = logging.getLogger(__name__)

LEASE_S = 60.0
TICK_S = 0.5
BATCH = 32
REFUSED = "refused:"
"""How a delivery error starts when the gateway itself refused the destination."""

# A delivery's record and its place on the schedule, changed in one step. A script rather than
# a MULTI: redis-py's asyncio Cluster client runs each command queued in a transaction through a
# thread of its own. KEYS: delivery, deliveries-due (its shard). ARGV: delivery id, the record
# to keep ('' deletes it), due at ('' takes it off the schedule). The record keeps its TTL.
_UPDATE_DELIVERY = """
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
"""


class WebhookDelivery(BaseModel):
    id: str
    """The ``webhook-id``: the same on every try."""
    task_id: str
    url: str
    payload: str
    """The task object's JSON as it was when the task became final."""
    attempt: int = 0
    created_at: float
    last_error: str | None = None


def new_delivery(record: TaskRecord, url: str) -> WebhookDelivery:
    return WebhookDelivery(
        id=draw(lambda: "msg_" + secrets.token_urlsafe(18), shard_of(record.id)),
        task_id=record.id,
        url=url,
        payload=record.public().model_dump_json(),
        created_at=time.time(),
    )


def signing_key(secret: str) -> bytes:
    """The HMAC key: the base64-decoded part of ``whsec_<base64>``."""
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(key: bytes, msg_id: str, timestamp: int, body: str) -> str:
    """``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>``"""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def retry_delay_s(attempt: int, delays: list[float]) -> float:
    """Wait after the ``attempt``-th failed try (1-based); the last delay repeats."""
    return delays[min(attempt, len(delays)) - 1]


def address_policy(settings: WebhookSettings) -> AddressPolicy:
    """Where webhooks may go: public addresses, and the hosts in ``webhooks.allow_hosts``."""
    return AddressPolicy(allow_hosts=frozenset(h.lower().rstrip(".") for h in settings.allow_hosts))


async def refusal(url: str, settings: WebhookSettings, listen: tuple[str, int]) -> str | None:
    """Why the gateway will not deliver to ``url``, or None when it will."""
    try:
        await check_url(url, address_policy(settings))
    except UnsafeDestination as exc:
        return f"refused: {exc.reason}"
    if await points_at_self(url, *listen):
        return "must not point at this gateway"
    return None


async def points_at_self(url: str, listen_host: str, listen_port: int) -> bool:
    """Does ``url`` resolve to the gateway's own listen address (a webhook loop)?"""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if parts.hostname is None or port != listen_port:
        return False
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM), timeout=2.0
        )
    except (OSError, TimeoutError):
        return False  # it does not resolve here, so it cannot reach us
    targets = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    own = ipaddress.ip_address(listen_host) if _is_ip(listen_host) else None
    if own is None or own.is_unspecified:
        # Listening on every address (or on a name): any loopback or local address is us.
        return any(t.is_loopback or str(t) in _local_addresses() for t in targets)
    return own in targets or (own.is_loopback and any(t.is_loopback for t in targets))


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _local_addresses() -> set[str]:
    try:
        return {str(i[4][0]) for i in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        return set()


class WebhookSender:
    """Delivers due webhooks; one loop per instance, each delivery leased to one instance."""

    def __init__(
        self,
        redis: RedisClient,
        store: TaskStore,
        settings: WebhookSettings,
        secret: str,
        listen_host: str,
        listen_port: int,
        *,
        metrics: Metrics,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._metrics = metrics
        self._redis = redis
        self._store = store
        self._settings = settings
        self._key = signing_key(secret)
        self._listen = (listen_host, listen_port)
        self._client = httpx.AsyncClient(
            timeout=settings.timeout_s,
            follow_redirects=False,
            transport=GuardedTransport(address_policy(settings), transport),
        )
        self._stop = asyncio.Event()
        self._update = redis.register_script(_UPDATE_DELIVERY)

    async def run(self) -> None:
        """Deliver until :meth:`stop`; errors are logged and the loop goes on."""
        while not self._stop.is_set():
            due: list[str] = []
            try:
                due = await self._store.claim_due("webhooks", time.time(), LEASE_S, BATCH)
            except StoreUnavailable:
                self._metrics.redis_error("webhooks")
                logger.warning("webhook queue unreachable; retrying")
            results = await asyncio.gather(*(self._deliver(d) for d in due), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    logger.error("webhook delivery step failed", exc_info=result)
            if len(due) < BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), TICK_S)

    async def stop(self) -> None:
        self._stop.set()
        await self._client.aclose()

    async def _load(self, delivery_id: str) -> WebhookDelivery | None:
        async with translated():
            raw = await self._redis.get(Keys.webhook(delivery_id))
        return WebhookDelivery.model_validate_json(raw) if raw else None

    async def _deliver(self, delivery_id: str) -> None:
        delivery = await self._load(delivery_id)
        if delivery is None:
            await self._forget(delivery_id)
            return
        delivery.attempt += 1
        outcome, error = await self._post(delivery)
        self._metrics.webhook_delivery(outcome)
        if error is None:
            logger.info("webhook delivered", extra={"task_id": delivery.task_id,
                                                    "attempt": delivery.attempt})  # fmt: skip
            await self._forget(delivery_id)
            return
        delivery.last_error = error
        # A destination the address rules refuse stays refused: no point trying it again.
        if delivery.attempt >= self._settings.max_attempts or error.startswith(REFUSED):
            self._metrics.webhook_delivery("abandoned")
            logger.error(
                "webhook given up",
                extra={"task_id": delivery.task_id, "attempts": delivery.attempt, "error": error},
            )
            await self._forget(delivery_id, keep=delivery)
            return
        at = time.time() + retry_delay_s(delivery.attempt, self._settings.retry_delays_s)
        async with translated():
            await self._update(
                keys=[Keys.webhook(delivery_id), self._store.due_key("webhooks", delivery_id, at)],
                args=[delivery_id, delivery.model_dump_json(), at],
            )
        logger.warning("webhook failed; will retry", extra={
            "task_id": delivery.task_id, "attempt": delivery.attempt, "error": error})  # fmt: skip

    async def _post(self, delivery: WebhookDelivery) -> tuple[WebhookOutcome, str | None]:
        """The outcome, and why it failed (None on success)."""
        if await points_at_self(delivery.url, *self._listen):
            return "rejected", f"{REFUSED} the URL points at this gateway"
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, delivery.id, timestamp, delivery.payload),
        }
        try:
            response = await self._client.post(delivery.url, content=delivery.payload,
                                               headers=headers)  # fmt: skip
        except UnsafeDestination as exc:
            return "rejected", f"{REFUSED} {exc.reason}"
        except httpx.HTTPError as exc:
            return "unreachable", type(exc).__name__
        if response.is_success:
            return "delivered", None
        return "rejected", f"HTTP {response.status_code}"

    async def _forget(self, delivery_id: str, keep: WebhookDelivery | None = None) -> None:
        # A dead letter (``keep``) stays, with its TTL, for an operator to look at.
        kept = "" if keep is None else keep.model_dump_json()
        keys = [Keys.webhook(delivery_id), Keys.due("webhooks", shard_of(delivery_id))]
        async with translated():
            await self._update(keys=keys, args=[delivery_id, kept, ""])
