"""Stored videos (api.md §3): the copy before ``completed``, ``/content``, fallbacks and
retention, through the real app on a real Redis, with the simulated resellers serving the
videos and the local-file store (the default kind) in a temporary directory."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from gateway.config import resolve_secrets
from gateway.metrics import Metrics
from gateway.retention import Retention
from gateway.storage import open_video_store
from gateway.store import TaskStore
from providers.sandbox.engine import Knobs
from providers.sandbox.videos import video_body
from tests.integration.conftest import ENV, IMAGE, OTHER_KEY, Harness
from tests.integration.test_status import Receiver, until

BODY = {"prompt": "a paper boat on a canal", "image": IMAGE}
VIDEO_BYTES = 300_000


async def stored_harness(
    make: Callable[..., Any], root: Path, *, knobs: Knobs | None = None, **storage: Any
) -> Harness:
    settings = {"enabled": True, "allow_private_sources": True, "url": f"file://{root}",
                **storage}  # fmt: skip
    harness: Harness = await make(
        knobs=knobs or Knobs(queue_s=0, complete_after_s=0, video_bytes=VIDEO_BYTES),
        storage=settings,
    )
    return harness


async def completed(h: Harness, task_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """Look the task up (lookups drive refreshes here) until it is completed."""
    deadline = time.monotonic() + timeout_s
    while True:
        task: dict[str, Any] = (await h.read(task_id)).json()
        if task["status"] in ("completed", "failed"):
            return task
        assert time.monotonic() < deadline, f"task still {task['status']}"
        await asyncio.sleep(0.05)


async def expected_video(upstream_id: str, size: int = VIDEO_BYTES) -> bytes:
    return b"".join([chunk async for chunk in video_body(upstream_id, size)])


def files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


async def test_completed_task_links_to_its_stored_copy_with_expiry_and_upstream_link(
    harness_factory: Callable[..., Any], tmp_path: Path
) -> None:
    h = await stored_harness(harness_factory, tmp_path)
    task_id = (await h.create(BODY)).json()["id"]
    task = await completed(h, task_id)
    assert task["status"] == "completed"
    assert task["video_url"] == f"/v1/videos/{task_id}/content"
    assert task["upstream_video_url"].startswith("http://runapi.sandbox/files/")
    retention_s = 7 * 86400
    assert 0 < task["expires_at"] - time.time() <= retention_s
    answer = await h.client.get(task["video_url"], headers=h.headers())
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "video/mp4"
    assert answer.headers["content-length"] == str(VIDEO_BYTES)
    video = await expected_video(task["provider_task_id"])
    assert answer.content == video
    assert answer.headers["etag"] == f'"{hashlib.sha256(video).hexdigest()[:32]}"'
    scrape = await h.scrape()
    assert scrape.value("gateway_video_copies_total", outcome="stored") == 1
    assert scrape.value("gateway_video_copy_bytes_total") == VIDEO_BYTES
    assert scrape.value("gateway_video_served_bytes_total") == VIDEO_BYTES


async def test_range_request_answers_206_with_content_range_and_the_bytes_asked_for(
    harness_factory: Callable[..., Any], tmp_path: Path
) -> None:
    h = await stored_harness(harness_factory, tmp_path)
    task = await completed(h, (await h.create(BODY)).json()["id"])
    video = await expected_video(task["provider_task_id"])
    cases = {"bytes=100-199": (100, 200), "bytes=-50": (VIDEO_BYTES - 50, VIDEO_BYTES),
             f"bytes={VIDEO_BYTES - 10}-": (VIDEO_BYTES - 10, VIDEO_BYTES)}  # fmt: skip
    for header, (start, end) in cases.items():
        answer = await h.client.get(task["video_url"], headers={**h.headers(), "Range": header})
        assert answer.status_code == 206, header
        assert answer.headers["content-range"] == f"bytes {start}-{end - 1}/{VIDEO_BYTES}"
        assert answer.headers["content-length"] == str(end - start)
        assert answer.content == video[start:end]
    past = await h.client.get(task["video_url"], headers={**h.headers(), "Range": "bytes=999999-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{VIDEO_BYTES}"
    etag: str = (await h.client.get(task["video_url"], headers=h.headers())).headers["etag"]
    unchanged = await h.client.get(
        task["video_url"], headers={**h.headers(), "If-None-Match": etag}
    )
    assert unchanged.status_code == 304


async def test_content_is_served_after_the_resellers_link_died_from_one_download(
    harness_factory: Callable[..., Any], tmp_path: Path
) -> None:
    h = await stored_harness(harness_factory, tmp_path)
    task_id = (await h.create(BODY)).json()["id"]
    many = await asyncio.gather(*(h.read(task_id) for _ in range(20)))  # lookups during copy
    assert all(r.status_code == 200 for r in many)
    task = await completed(h, task_id)
    h.runapi.update_knobs({"video_fault": "expired"})
    reads = await asyncio.gather(
        *(h.client.get(task["video_url"], headers=h.headers()) for _ in range(10))
    )
    video = await expected_video(task["provider_task_id"])
    assert all(r.status_code == 200 and r.content == video for r in reads)
    assert h.runapi.counters.video_downloads == 1


async def test_content_is_404_for_another_key_an_unfinished_task_and_other_variants(
    harness_factory: Callable[..., Any], tmp_path: Path
) -> None:
    h = await stored_harness(harness_factory, tmp_path, knobs=Knobs(queue_s=0, complete_after_s=30))
    pending = (await h.create(BODY)).json()["id"]
    assert (
        await h.client.get(f"/v1/videos/{pending}/content", headers=h.headers())
    ).status_code == 404
    h.runapi.update_knobs({"complete_after_s": 0})
    h.apiinone.update_knobs({"complete_after_s": 0})
    task = await completed(h, (await h.create(BODY)).json()["id"])
    url = task["video_url"]
    other = await h.client.get(url, headers=h.headers(OTHER_KEY))
    assert other.status_code == 404
    assert other.json()["code"] == "not_found"
    assert (await h.client.get(url)).status_code == 401
    assert (await h.client.get(url + "?variant=thumbnail", headers=h.headers())).status_code == 404
    assert (await h.client.get(url + "?variant=video", headers=h.headers())).status_code == 200


async def test_html_instead_of_a_video_keeps_the_resellers_link_and_stores_nothing(
    harness_factory: Callable[..., Any], tmp_path: Path
) -> None:
    for fault in ("html", "http_404"):
        h = await stored_harness(harness_factory, tmp_path / fault)
        h.runapi.update_knobs({"video_fault": fault})
        h.apiinone.update_knobs({"video_fault": fault})
        task = await completed(h, (await h.create(BODY)).json()["id"])
        assert task["video_url"] == task["upstream_video_url"]
        assert task["video_url"].startswith("http://")
        assert task["expires_at"] is None
        content = await h.client.get(
            f"/v1/videos/{task['id']}/content", headers=h.headers(), follow_redirects=False
        )
        assert content.status_code == 302
        assert content.headers["location"] == task["upstream_video_url"]
        assert files(tmp_path / fault) == []
        assert (await h.scrape()).value("gateway_video_copies_total", outcome="gave_up") == 1
        # Stopped, so its copier does not claim the next case's copy from the shared Redis
        # (and count that give-up in its own metrics).
        await h.stop()


async def test_a_video_over_max_bytes_is_not_stored(
    harness_factory: Callable[..., Any], tmp_path: Path
) -> None:
    h = await stored_harness(harness_factory, tmp_path, max_bytes=100_000)
    task = await completed(h, (await h.create(BODY)).json()["id"])
    assert task["video_url"] == task["upstream_video_url"]
    assert files(tmp_path) == []


async def test_a_copy_still_running_at_the_deadline_is_given_up(
    harness_factory: Callable[..., Any], tmp_path: Path
) -> None:
    slow = Knobs(queue_s=0, complete_after_s=0, video_bytes=VIDEO_BYTES, video_bytes_per_s=50_000)
    h = await stored_harness(harness_factory, tmp_path, knobs=slow, copy_deadline_s=1.5)
    started = time.monotonic()
    task = await completed(h, (await h.create(BODY)).json()["id"])
    assert time.monotonic() - started < 5  # not the 6 s the download would take
    assert task["video_url"] == task["upstream_video_url"]
    assert files(tmp_path) == []
    assert (await h.scrape()).value("gateway_video_copies_total", outcome="gave_up") == 1


async def test_store_down_during_the_copy_is_retried_then_the_resellers_link_is_kept(
    harness_factory: Callable[..., Any], tmp_path: Path
) -> None:
    # A real S3 client against an address where nothing listens: the store is down.
    h: Harness = await harness_factory(
        knobs=Knobs(queue_s=0, complete_after_s=0),
        storage={"enabled": True, "allow_private_sources": True, "url": "s3://videos/gw",
                 "endpoint_url": "http://127.0.0.1:9", "region": "us-east-1",
                 "copy_deadline_s": 4},
    )  # fmt: skip
    task_id = (await h.create(BODY)).json()["id"]
    first = (await h.read(task_id)).json()
    assert first["status"] == "in_progress"  # completed upstream, not copied yet
    task = await completed(h, task_id, timeout_s=30)
    assert task["video_url"] == task["upstream_video_url"]
    scrape = await h.scrape()
    assert scrape.value("gateway_video_copies_total", outcome="retried") >= 1
    assert scrape.value("gateway_video_copies_total", outcome="gave_up") == 1
    assert scrape.value("gateway_video_copies_total", outcome="stored") == 0


async def test_webhook_fires_after_the_copy_with_the_stable_link(
    harness_factory: Callable[..., Any], tmp_path: Path
) -> None:
    receiver = Receiver()
    h: Harness = await harness_factory(
        knobs=Knobs(queue_s=0, complete_after_s=0),
        webhooks=receiver,
        status={"background_polling": True},
        storage={"enabled": True, "allow_private_sources": True, "url": f"file://{tmp_path}"},
    )
    task_id = (await h.create({**BODY, "webhook_url": "https://hooks.example/v"})).json()["id"]
    await until(lambda: len(receiver.calls) == 1)
    delivered = json.loads(receiver.calls[0][1])
    assert delivered["status"] == "completed"
    assert delivered["video_url"] == f"/v1/videos/{task_id}/content"
    assert delivered["upstream_video_url"].startswith("http://")
    await asyncio.sleep(0.5)
    assert len(receiver.calls) == 1


async def test_retention_deletes_the_stored_copy_and_content_then_answers_404(
    harness_factory: Callable[..., Any], tmp_path: Path, redis: Redis
) -> None:
    h = await stored_harness(harness_factory, tmp_path)
    task = await completed(h, (await h.create(BODY)).json()["id"])
    assert len(files(tmp_path)) == 1
    # Another instance's sweeper (the app's runs in the test client's own event loop).
    videos = open_video_store(h.settings.storage, tmp_path, resolve_secrets(h.settings, ENV))
    retention = Retention(TaskStore(redis, ttl_s=3600), videos, metrics=Metrics([]))
    assert await retention.sweep(now=time.time()) == 0  # not due yet
    assert await retention.sweep(now=task["expires_at"] + 1) == 1
    assert files(tmp_path) == []
    gone = await h.client.get(task["video_url"], headers=h.headers())
    assert gone.status_code == 404
    again = (await h.read(task["id"])).json()
    assert again == task  # a final task never changes


async def test_storage_disabled_keeps_the_resellers_link_and_content_redirects_to_it(
    harness: Harness,
) -> None:
    task = await completed(harness, (await harness.create(BODY)).json()["id"])
    assert task["video_url"] == task["upstream_video_url"]
    content = await harness.client.get(
        f"/v1/videos/{task['id']}/content", headers=harness.headers(), follow_redirects=False
    )
    assert content.status_code == 302
    assert content.headers["location"] == task["video_url"]


async def test_head_on_content_answers_gets_status_and_headers_without_a_body(
    harness_factory: Callable[..., Any], tmp_path: Path
) -> None:
    h = await stored_harness(harness_factory, tmp_path)
    task = await completed(h, (await h.create(BODY)).json()["id"])
    url = task["video_url"]
    served = (await h.scrape()).value("gateway_video_served_bytes_total")
    etag = (await h.client.get(url, headers=h.headers())).headers["etag"]
    asks: dict[str, tuple[str, dict[str, str]]] = {
        "whole": (url, h.headers()),
        "range": (url, {**h.headers(), "Range": "bytes=100-199"}),
        "past the end": (url, {**h.headers(), "Range": "bytes=999999-"}),
        "unchanged": (url, {**h.headers(), "If-None-Match": etag}),
        "another key": (url, h.headers(OTHER_KEY)),
        "no key": (url, {}),
        "another variant": (url + "?variant=thumbnail", h.headers()),
    }
    expected = {"whole": 200, "range": 206, "past the end": 416, "unchanged": 304,
                "another key": 404, "no key": 401, "another variant": 404}  # fmt: skip
    varying = {"date", "x-request-id"}
    for name, (target, headers) in asks.items():
        got = await h.client.get(target, headers=headers)
        headed = await h.client.head(target, headers=headers)
        assert headed.status_code == got.status_code == expected[name], name
        assert headed.content == b"", name
        assert {k: v for k, v in headed.headers.items() if k not in varying} == {
            k: v for k, v in got.headers.items() if k not in varying
        }, name
    whole = await h.client.head(url, headers=h.headers())
    assert whole.headers["content-length"] == str(VIDEO_BYTES)
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    # only the GETs sent bytes: the whole video twice (the ETag, "whole"), then 100 ("range")
    scrape = await h.scrape()
    assert scrape.value("gateway_video_served_bytes_total") == served + 2 * VIDEO_BYTES + 100
