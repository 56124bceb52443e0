"""What the load sends: realistic bodies, the request sets of each scenario, and the tasks that
lookups need to exist first (created through the real APIs before a run starts)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from benchmarks.load import RequestSet
from benchmarks.processes import CLIENT_KEY, RUNAPI_KEY
from providers.base import VideoJob
from providers.runapi import CREATE_PATH, STATUS_PATH, to_wire

PROMPT = (
    "A slow dolly shot through a rain-soaked neon market at night: steam rises from food stalls, "
    "a cyclist in a yellow raincoat weaves between shoppers, reflections ripple in puddles, "
    "cinematic lighting, shallow depth of field."
)
IMAGE = "https://images.example.com/uploads/2025/11/22/first-frame-8f3a2c91d4e7.png"
SLOW_MARKER = " [sandbox:slow]"
"""The sandbox keeps a task with this in its prompt rendering for ever."""

GATEWAY_HEADERS = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}
RUNAPI_HEADERS = {"Authorization": f"Bearer {RUNAPI_KEY}", "Content-Type": "application/json"}
SETUP_CONCURRENCY = 32
SETUP_WAIT_S = 30.0
"""How long a task created for the lookups may take to be as expected (its video copied)."""


def canonical_body(prompt: str = PROMPT) -> dict[str, object]:
    """``POST /v1/videos``: image-to-video, standard, 6 s at 768P (the default combination)."""
    return {"prompt": prompt, "image": IMAGE, "duration": 6, "resolution": "768P"}


def runapi_body() -> dict[str, object]:
    """The same job in RunAPI's wire format, by the gateway's own adapter translation."""
    return to_wire(VideoJob(prompt=PROMPT, image=IMAGE, duration=6, resolution="768P"))


def direct_creates() -> RequestSet:
    return RequestSet(
        method="POST",
        paths=[CREATE_PATH],
        headers=RUNAPI_HEADERS,
        body=json.dumps(runapi_body()),
        expect_status=200,
    )


def gateway_creates() -> RequestSet:
    return RequestSet(
        method="POST",
        paths=["/v1/videos"],
        headers=GATEWAY_HEADERS,
        body=json.dumps(canonical_body()),
        expect_status=202,
    )


def direct_lookups(upstream_ids: list[str]) -> RequestSet:
    paths = [STATUS_PATH.format(id=upstream_id) for upstream_id in upstream_ids]
    return RequestSet(method="GET", paths=paths, headers=RUNAPI_HEADERS, expect_status=200)


def gateway_lookups(task_ids: list[str]) -> RequestSet:
    paths = [f"/v1/videos/{task_id}" for task_id in task_ids]
    headers = {"Authorization": GATEWAY_HEADERS["Authorization"]}
    return RequestSet(method="GET", paths=paths, headers=headers, expect_status=200)


def create_direct_tasks(runapi_url: str, count: int) -> list[str]:
    """``count`` tasks created straight at the simulated RunAPI; their upstream ids."""
    ids = []
    with httpx.Client(base_url=runapi_url, headers=RUNAPI_HEADERS, timeout=10) as client:
        for _ in range(count):
            answer = client.post(CREATE_PATH, json=runapi_body())
            answer.raise_for_status()
            ids.append(str(answer.json()["id"]))
    return ids


def create_gateway_tasks(gateway_url: str, count: int, *, rendering: bool) -> list[str]:
    """``count`` tasks created through the gateway, each then looked up until it is as
    expected.

    The sandbox finishes a task as soon as it is created, so the first lookup reads it
    completed; the gateway then copies its video into its storage (``storage``, on by default)
    and reports it ``completed`` once stored: later lookups find it final, served from Redis.
    A ``rendering`` task carries the sandbox's slow marker and stays ``in_progress``. Raises if
    any task is not as expected within ``SETUP_WAIT_S``.
    """
    expected = {"in_progress"} if rendering else {"completed"}
    prompt = PROMPT + SLOW_MARKER if rendering else PROMPT
    return asyncio.run(_create_and_check(gateway_url, count, prompt, expected))


async def _create_and_check(url: str, count: int, prompt: str, expected: set[str]) -> list[str]:
    limit = asyncio.Semaphore(SETUP_CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, headers=GATEWAY_HEADERS, timeout=10) as client:

        async def one() -> str:
            async with limit:
                created = await client.post("/v1/videos", json=canonical_body(prompt))
                if created.status_code != 202:
                    raise RuntimeError(f"create: {created.status_code} {created.text[:300]}")
                task_id = str(created.json()["id"])
                deadline = time.monotonic() + SETUP_WAIT_S
                while True:
                    seen = await client.get(f"/v1/videos/{task_id}")
                    status = seen.json().get("status") if seen.status_code == 200 else seen.text
                    if status in expected:
                        return task_id
                    if status != "in_progress" or time.monotonic() > deadline:
                        raise RuntimeError(f"task {task_id} is {status!r}, expected {expected}")
                    await asyncio.sleep(0.2)  # its video is being copied

        return list(await asyncio.gather(*(one() for _ in range(count))))


def upstream_status_calls(runapi_url: str) -> int:
    """The simulated RunAPI's count of status calls since it started."""
    stats = httpx.get(f"{runapi_url}/_sandbox/stats", timeout=5).json()
    return int(stats["counters"]["status_calls"])
