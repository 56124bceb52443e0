"""The store finished videos are copied into: one API over local files, S3, GCS and Azure.

Everything goes through `obstore <https://developmentseed.org/obstore/>`_ (the Rust
``object_store`` crate): streaming multipart uploads, ranged streaming reads, signed URLs and
request signing are the library's, none is written here. The default (``storage.url`` unset)
is a directory, ``<redis.data_dir>/videos``, which needs nothing installed.

Store failures leave this module as :class:`VideoStoreError` (worth retrying later); a missing
object is ``None`` or :class:`VideoMissing`. (obstore raises Python's own
``FileNotFoundError``/``OSError`` for some failures, its ``BaseError`` tree for others: both are
caught.)
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import AzureStore, GCSStore, LocalStore, S3Store, from_url

from gateway.config import Secrets, StorageSettings

if TYPE_CHECKING:
    from obstore.store import ClientConfig, ObjectStore, RetryConfig, S3Config

_MISSING = (NotFoundError, FileNotFoundError)
_FAILED = (BaseError, OSError)

PART_BYTES = 5 * 1024 * 1024
"""One multipart upload part on an object store (S3's smallest): what a copy buffers per part."""
LOCAL_PART_BYTES = 1024 * 1024
"""Local files have no smallest part: smaller parts, less memory per copy."""
PARTS_IN_FLIGHT = 1
"""Parts uploaded at once per copy: memory per copy is about (1 + this) parts."""
READ_CHUNK_BYTES = 256 * 1024
"""Chunks ``/content`` streams (obstore joins the store's smaller reads up to this)."""
SIGNED_URL_TTL = timedelta(minutes=5)


class VideoStoreError(Exception):
    """The store did not do what was asked (unreachable, refused, timed out)."""


class VideoMissing(Exception):
    """The object is not in the store (deleted by retention, or never written)."""


@dataclass(frozen=True)
class ObjectInfo:
    size: int


class VideoStore:
    """Finished videos by key, in one obstore store."""

    def __init__(self, store: ObjectStore, *, description: str) -> None:
        self._store = store
        self._part_bytes = LOCAL_PART_BYTES if isinstance(store, LocalStore) else PART_BYTES
        self._signer = store if isinstance(store, S3Store | GCSStore | AzureStore) else None
        self.description = description
        """Where the videos go, for logs (no credentials)."""

    @property
    def signs_urls(self) -> bool:
        """S3, GCS and Azure sign URLs; local files do not."""
        return self._signer is not None

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> None:
        """Write ``chunks`` as ``key``, streamed: a multipart upload of :data:`PART_BYTES`
        parts (:data:`LOCAL_PART_BYTES` for files), so memory does not grow with the video. An
        error raised by ``chunks`` aborts the upload and propagates."""
        try:
            await obstore.put_async(
                self._store, key, chunks, use_multipart=True, chunk_size=self._part_bytes,
                max_concurrency=PARTS_IN_FLIGHT,
            )  # fmt: skip
        except _FAILED as exc:
            raise VideoStoreError(f"{self.description}: put failed: {_brief(exc)}") from exc

    async def info(self, key: str) -> ObjectInfo | None:
        try:
            meta = await obstore.head_async(self._store, key)
        except _MISSING:
            return None
        except _FAILED as exc:
            raise VideoStoreError(f"{self.description}: head failed: {_brief(exc)}") from exc
        return ObjectInfo(size=meta["size"])

    async def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive) of ``key``, streamed. The read is started
        before the first chunk is asked for, so a missing object fails here, not mid-answer."""
        try:
            result = await obstore.get_async(self._store, key, options={"range": (start, end)})
        except _MISSING as exc:
            raise VideoMissing(key) from exc
        except _FAILED as exc:
            raise VideoStoreError(f"{self.description}: get failed: {_brief(exc)}") from exc
        return _chunks(result.stream(min_chunk_size=READ_CHUNK_BYTES))

    async def signed_url(self, key: str) -> str | None:
        """A short-lived GET URL for ``key``; None when this store cannot sign."""
        if self._signer is None:
            return None
        try:
            return await obstore.sign_async(self._signer, "GET", key, SIGNED_URL_TTL)
        except _FAILED as exc:
            raise VideoStoreError(f"{self.description}: signing failed: {_brief(exc)}") from exc

    async def delete(self, key: str) -> None:
        """Remove ``key``; a key already gone is fine."""
        try:
            await obstore.delete_async(self._store, key)
        except _MISSING:
            return
        except _FAILED as exc:
            raise VideoStoreError(f"{self.description}: delete failed: {_brief(exc)}") from exc


async def _chunks(stream: AsyncIterable[Any]) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield bytes(chunk)
    except _FAILED as exc:
        raise VideoStoreError(f"read failed: {_brief(exc)}") from exc


def _brief(exc: BaseException) -> str:
    """The first line of obstore's message (the rest is a debug dump of the request)."""
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


def open_video_store(settings: StorageSettings, data_dir: Path, secrets: Secrets) -> VideoStore:
    """The store ``settings`` describe: ``storage.url``, or files under ``data_dir/videos``."""
    if settings.url is None or settings.url.startswith("file://"):
        root = data_dir / "videos" if settings.url is None else Path(urlsplit(settings.url).path)
        root.mkdir(parents=True, exist_ok=True)
        return VideoStore(LocalStore(prefix=root), description=f"files under {root}")
    client: ClientConfig = {"connect_timeout": timedelta(seconds=5), "timeout": "60s"}
    retry: RetryConfig = {"max_retries": 2, "retry_timeout": timedelta(seconds=15)}
    config: S3Config | None = None
    if urlsplit(settings.url).scheme in ("s3", "s3a"):
        config = _s3_config(settings, secrets)
        if settings.endpoint_url is not None:
            client["allow_http"] = settings.endpoint_url.startswith("http://")
    store = from_url(settings.url, config=config, client_options=client, retry_config=retry)
    parts = urlsplit(settings.url)
    return VideoStore(store, description=f"{parts.scheme}://{parts.netloc}{parts.path}")


def _s3_config(settings: StorageSettings, secrets: Secrets) -> S3Config:
    config: S3Config = {}
    if settings.endpoint_url is not None:
        config["endpoint"] = settings.endpoint_url
    if settings.region is not None:
        config["region"] = settings.region
    if secrets.storage_access_key_id is not None:
        config["access_key_id"] = secrets.storage_access_key_id.get_secret_value()
    if secrets.storage_secret_access_key is not None:
        config["secret_access_key"] = secrets.storage_secret_access_key.get_secret_value()
    return config
