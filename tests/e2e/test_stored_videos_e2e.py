"""Stored videos with real processes: gateways (``python -m gateway serve``), the simulated
resellers serving video bytes over loopback, and a real S3-compatible server (SeaweedFS, started
here) or the local-file default. Faults: the reseller's link dies after completion, a download
cut short, an instance SIGKILLed in the middle of a copy."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import obstore
import pytest

from providers.sandbox.videos import video_body
from tests.e2e.conftest import CLIENT_KEY, Gateway, Sandbox, gateway_config, wait_final
from tests.scrape import Scrape
from tests.seaweedfs import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedFS, start_seaweedfs

pytestmark = pytest.mark.e2e
IMAGE = "https://example.com/first-frame.png"
BODY = {"prompt": "rain on a tin roof", "image": IMAGE}
PREFIX = "gateway-videos"


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    weed = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield weed
    weed.stop()


def s3_storage(weed: SeaweedFS, **more: Any) -> dict[str, Any]:
    return {"url": f"s3://{BUCKET}/{PREFIX}", "endpoint_url": weed.endpoint,
            "region": "us-east-1", "access_key_id_env": "VIDEO_STORE_KEY_ID",
            "secret_access_key_env": "VIDEO_STORE_SECRET", "allow_private_sources": True,
            **more}  # fmt: skip


S3_ENV = {"VIDEO_STORE_KEY_ID": ACCESS_KEY, "VIDEO_STORE_SECRET": SECRET_KEY}


def start(
    gateways: list[Gateway],
    sandbox: Sandbox,
    redis_url: str,
    tmp_path: Path,
    name: str = "gw",
    **storage: Any,
) -> Gateway:
    config = gateway_config(sandbox, redis_url, tmp_path / f"{name}-data", storage=storage)
    gw = Gateway(config, tmp_path, name, env=S3_ENV)
    gateways.append(gw)
    return gw.start()


def expected(upstream_id: str, size: int) -> bytes:
    async def collect() -> bytes:
        return b"".join([chunk async for chunk in video_body(upstream_id, size)])

    return asyncio.run(collect())


def in_bucket(weed: SeaweedFS, task_id: str) -> bytes:
    async def read() -> bytes:
        got = await obstore.get_async(weed.store(), f"{PREFIX}/{task_id}.video")
        return bytes(await got.bytes_async())

    return asyncio.run(read())


@pytest.mark.seaweedfs
def test_s3_copy_is_served_with_ranges_after_the_resellers_link_died(
    seaweed: SeaweedFS, sandbox: Sandbox, redis_url: str, tmp_path: Path,
    gateways: list[Gateway],
) -> None:  # fmt: skip
    size = 1_500_000
    sandbox.knobs("runapi", video_bytes=size)
    gw = start(gateways, sandbox, redis_url, tmp_path, **s3_storage(seaweed))
    with gw.client() as client:
        task = wait_final(client, client.post("/v1/videos", json=BODY).json()["id"])
        assert task["video_url"] == f"/v1/videos/{task['id']}/content"
        video = expected(task["provider_task_id"], size)
        assert in_bucket(seaweed, task["id"]) == video
        assert sandbox.stats("runapi")["video_downloads"] == 1
        sandbox.knobs("runapi", video_fault="expired")
        assert httpx.get(task["upstream_video_url"]).status_code == 403  # the link is dead
        with ThreadPoolExecutor(8) as pool:
            reads = list(pool.map(lambda _: client.get(task["video_url"]), range(16)))
        assert all(r.status_code == 200 and r.content == video for r in reads)
        part = client.get(task["video_url"], headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206
        assert part.content == video[1000:2000]
        assert part.headers["content-range"] == f"bytes 1000-1999/{size}"
    assert sandbox.stats("runapi")["video_downloads"] == 2  # the copy and the probe above
    seen = httpx.get(f"{sandbox.runapi}/_sandbox/stats").json()["authorizations"]
    assert seen  # the API calls carried the reseller's key…
    assert not any(CLIENT_KEY in header for header in seen)  # …and no client key went there


@pytest.mark.seaweedfs
def test_s3_redirect_answers_a_signed_url_that_serves_the_video(
    seaweed: SeaweedFS, sandbox: Sandbox, redis_url: str, tmp_path: Path,
    gateways: list[Gateway],
) -> None:  # fmt: skip
    gw = start(gateways, sandbox, redis_url, tmp_path, **s3_storage(seaweed, redirect=True))
    with gw.client() as client:
        task = wait_final(client, client.post("/v1/videos", json=BODY).json()["id"])
        answer = client.get(task["video_url"], follow_redirects=False)
        assert answer.status_code == 302
        signed = answer.headers["location"]
        assert signed.startswith(seaweed.endpoint)
        assert "X-Amz-Signature=" in signed
        fetched = httpx.get(signed)  # no gateway key: the signature is the permission
        assert fetched.status_code == 200
        assert fetched.content == expected(task["provider_task_id"], 64 * 1024)


@pytest.mark.seaweedfs
def test_an_instance_killed_mid_copy_is_taken_over_by_another(
    seaweed: SeaweedFS, sandbox: Sandbox, redis_url: str, tmp_path: Path,
    gateways: list[Gateway],
) -> None:  # fmt: skip
    size = 3_000_000
    sandbox.knobs("runapi", video_bytes=size, video_bytes_per_s=1_000_000)  # ~3 s per copy
    storage = s3_storage(seaweed, copy_lease_s=2)
    first = start(gateways, sandbox, redis_url, tmp_path, "first", **storage)
    with first.client() as client:
        task_id = client.post("/v1/videos", json=BODY).json()["id"]
    deadline = time.monotonic() + 15
    while sandbox.stats("runapi")["video_downloads"] == 0:
        assert time.monotonic() < deadline, "the copy never started"
        time.sleep(0.1)
    time.sleep(0.5)  # in the middle of the download
    first.stop(signal.SIGKILL)
    second = start(gateways, sandbox, redis_url, tmp_path, "second", **storage)
    with second.client() as client:
        task = wait_final(client, task_id, timeout_s=30)
        assert task["video_url"] == f"/v1/videos/{task_id}/content"
        video = expected(task["provider_task_id"], size)
        assert client.get(task["video_url"]).content == video
    assert in_bucket(seaweed, task_id) == video
    assert sandbox.stats("runapi")["video_downloads"] == 2
    scrape = Scrape(httpx.get(f"{second.url}/metrics").text)
    assert scrape.value("gateway_video_copies_total", outcome="stored") == 1


def test_a_download_cut_short_is_retried_and_then_stored_in_local_files(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    sandbox.knobs("runapi", video_fault="truncated", video_bytes=400_000)
    gw = start(gateways, sandbox, redis_url, tmp_path, allow_private_sources=True)
    with gw.client() as client:
        task_id = client.post("/v1/videos", json=BODY).json()["id"]
        deadline = time.monotonic() + 15
        while sandbox.stats("runapi")["video_downloads"] == 0:
            assert time.monotonic() < deadline, "the copy never started"
            time.sleep(0.1)
        assert client.get(f"/v1/videos/{task_id}").json()["status"] == "in_progress"
        sandbox.knobs("runapi", video_fault="none")
        task = wait_final(client, task_id, timeout_s=20)
        assert task["video_url"] == f"/v1/videos/{task_id}/content"
        video = expected(task["provider_task_id"], 400_000)
        assert client.get(task["video_url"]).content == video
        head = client.head(task["video_url"])  # through uvicorn: the headers, no body
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-length"] == str(len(video))
        assert head.headers["content-type"] == "video/mp4"
    stored = list((tmp_path / "gw-data" / "videos").iterdir())
    assert [p.name for p in stored] == [f"{task_id}.video"]
    scrape = Scrape(httpx.get(f"{gw.url}/metrics").text)
    assert scrape.value("gateway_video_copies_total", outcome="retried") >= 1
    assert scrape.value("gateway_video_copies_total", outcome="stored") == 1


@pytest.mark.seaweedfs
def test_the_store_going_down_mid_copy_is_retried_then_the_resellers_link_is_kept(
    sandbox: Sandbox, redis_url: str, tmp_path: Path, gateways: list[Gateway]
) -> None:
    own = tmp_path / "own-seaweedfs"
    own.mkdir()
    weed = start_seaweedfs(own)  # this test's own server, stopped in the middle
    try:
        sandbox.knobs("runapi", video_bytes=12_000_000, video_bytes_per_s=2_000_000)  # ~6 s
        gw = start(gateways, sandbox, redis_url, tmp_path, **s3_storage(weed, copy_deadline_s=8))
        with gw.client() as client:
            task_id = client.post("/v1/videos", json=BODY).json()["id"]
            deadline = time.monotonic() + 15
            while sandbox.stats("runapi")["video_downloads"] == 0:
                assert time.monotonic() < deadline, "the copy never started"
                time.sleep(0.1)
            time.sleep(1.0)  # some parts are uploaded
            weed.stop()
            task = wait_final(client, task_id, timeout_s=30)
        assert task["video_url"] == task["upstream_video_url"]
        assert task["expires_at"] is None
        scrape = Scrape(httpx.get(f"{gw.url}/metrics").text)
        assert scrape.value("gateway_video_copies_total", outcome="retried") >= 1
        assert scrape.value("gateway_video_copies_total", outcome="gave_up") == 1
        assert scrape.value("gateway_video_copies_total", outcome="stored") == 0
        assert "video not copied; the task keeps the reseller's link" in gw.logs()
    finally:
        weed.stop()
