"""The real ``openai`` Python SDK against the gateway (api.md §6): ``client.videos.create``,
``retrieve``, ``poll``/``create_and_poll``, ``list``, ``delete`` and ``download_content``, as a
service built on the SDK would call them. The SDK talks to the app in process (through the
harness's test client), the app to a real Redis, the simulated resellers and the local-file
video store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import openai
import pytest
from openai import AsyncOpenAI
from openai.types import VideoSeconds, VideoSize

from tests.integration.conftest import CLIENT_KEY, IMAGE, OTHER_KEY, Harness, minimax_config
from tests.integration.test_stored_videos import expected_video, files, stored_harness

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
PROMPT = "a heron taking off from a pond"
BY_URL = {"input_reference": {"image_url": IMAGE}}
"""The SDK's ``input_reference`` parameter takes files only; a URL goes as the form field
``input_reference[image_url]``, which the SDK writes from this."""
SIX = cast(VideoSeconds, "6")  # the SDK's types name OpenAI's own durations (4, 8, 12)
LANDSCAPE: VideoSize = "1280x720"


def sdk(h: Harness, key: str = CLIENT_KEY) -> AsyncOpenAI:
    """The SDK over the harness's test client (an ``httpx.AsyncClient`` that runs the app where
    its lifespan runs). Not closed by the test: the harness closes its client."""
    return AsyncOpenAI(
        api_key=key, base_url="http://gateway.test/v1", http_client=h.client, max_retries=0
    )


@pytest.fixture
def client(harness: Harness) -> AsyncOpenAI:
    return sdk(harness)


async def test_sdk_create_with_an_image_url_and_retrieve(
    harness: Harness, client: AsyncOpenAI
) -> None:
    video = await client.videos.create(
        prompt=PROMPT, seconds=SIX, size=LANDSCAPE, model="hailuo-2.3",
        extra_body={**BY_URL, "metadata": {"order": "A-1"}},
    )  # fmt: skip
    assert video.id.startswith("vid_")
    assert (video.status, video.seconds, video.size, video.model) == (
        "queued", "6", "768P", "hailuo-2.3"
    )  # fmt: skip
    assert 0 <= video.progress < 100
    again = await client.videos.retrieve(video.id)
    assert again.id == video.id
    assert again.model_extra is not None
    assert again.model_extra["metadata"] == {"order": "A-1"}
    assert harness.upstream_creates == 1


async def test_sdk_upload_of_a_png_is_unsupported_without_a_data_uri_provider(
    harness: Harness, client: AsyncOpenAI
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        await client.videos.create(prompt=PROMPT, input_reference=("frame.png", PNG, "image/png"))
    assert cast(dict[str, Any], refused.value.body)["code"] == "unsupported"
    assert harness.upstream_creates == 0


async def test_sdk_errors_are_readable(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        await client.videos.create(prompt=PROMPT, extra_body=BY_URL,
                                   seconds="4")  # fmt: skip
    body = cast(dict[str, Any], refused.value.body)
    assert [e["field"] for e in body["errors"]] == ["seconds"]
    with pytest.raises(openai.NotFoundError):
        await client.videos.retrieve("vid_aaaaaaaaaaaaaaaaaaaaaaaaaa")


async def test_sdk_poll_waits_as_the_gateway_says_until_completed(
    harness: Harness, client: AsyncOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness.runapi.update_knobs({"queue_s": 0, "complete_after_s": 1.0})
    slept: list[float] = []
    real_sleep = client.videos._sleep

    async def recorded(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0.3)  # the test need not wait the whole interval

    monkeypatch.setattr(client.videos, "_sleep", recorded)
    video = await client.videos.create_and_poll(prompt=PROMPT, extra_body=BY_URL)
    assert (video.status, video.progress) == ("completed", 100)
    assert slept
    assert set(slept) == {1.0}


async def test_sdk_list_pages_through_the_clients_own_tasks(
    harness: Harness, client: AsyncOpenAI
) -> None:
    ids = [(await client.videos.create(prompt=PROMPT, extra_body=BY_URL)).id for _ in range(5)]
    await sdk(harness, OTHER_KEY).videos.create(prompt=PROMPT, extra_body=BY_URL)
    page = await client.videos.list(limit=2)
    assert [v.id for v in page.data] == ids[::-1][:2]
    assert page.has_more
    every = [video.id async for video in client.videos.list(limit=2)]  # follows the cursor
    assert every == ids[::-1]
    oldest_first = await client.videos.list(order="asc")
    assert [v.id for v in oldest_first.data] == ids


async def test_sdk_delete(harness: Harness, client: AsyncOpenAI) -> None:
    video = await client.videos.create(prompt=PROMPT, extra_body=BY_URL)
    deleted = await client.videos.delete(video.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (video.id, True, "video.deleted")
    with pytest.raises(openai.NotFoundError):
        await client.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        await client.videos.delete(video.id)
    assert (await client.videos.list()).data == []


async def test_sdk_upload_of_a_png_is_accepted_by_a_provider_that_takes_data_uris(
    harness_factory: Callable[..., Any],
) -> None:
    """MiniMax's ``first_frame_image`` takes data URIs: the upload goes there, as a data URI."""
    h: Harness = await harness_factory(providers={"minimax": minimax_config()})
    video = await sdk(h).videos.create(
        prompt=PROMPT, input_reference=("frame.png", PNG, "image/png")
    )
    assert (video.status, video.model_extra and video.model_extra["provider"]) == (
        "queued", "minimax"
    )  # fmt: skip
    assert video.model_extra is not None
    assert video.model_extra["mode"] == "image_to_video"
    assert h.minimax.counters.accepted_creates == 1


async def test_sdk_download_content_is_the_stored_copy_and_delete_removes_it(
    harness_factory: Callable[..., Any], tmp_path: Path
) -> None:
    h = await stored_harness(harness_factory, tmp_path)
    client = sdk(h)
    video = await client.videos.create_and_poll(prompt=PROMPT, extra_body=BY_URL)
    assert video.status == "completed"
    content = await client.videos.download_content(video.id)
    stored = files(tmp_path)
    assert len(stored) == 1
    assert content.content == stored[0].read_bytes()
    assert content.content == await expected_video(cast(str, video.model_extra["provider_task_id"]))  # type: ignore[index]
    await client.videos.delete(video.id)
    assert files(tmp_path) == []  # the stored copy went with the task
    with pytest.raises(openai.NotFoundError):
        await client.videos.download_content(video.id)
