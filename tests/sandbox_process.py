"""Run ``python -m providers.sandbox`` as a subprocess and drive it, for integration and e2e
tests."""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from providers.sandbox.ready import parse_ready_urls

ROOT = Path(__file__).resolve().parents[1]
RUNAPI_KEY = "test-runapi-key"
APIINONE_KEY = "test-apiinone-key"
MINIMAX_KEY = "test-minimax-key"
FAL_KEY = "test-fal-key"
IMAGE = "https://example.com/first-frame.png"
RUNAPI_CREATE = "/api/v1/hailuo/image_to_video"
AIO_CREATE = "/api/v1/videos/generations"
FAST = {"queue_s": 0.2, "complete_after_s": 0.5}


@dataclass(frozen=True)
class Running:
    """A sandbox subprocess and the base URLs it announced."""

    process: subprocess.Popen[str]
    runapi_url: str
    apiinone_url: str
    minimax_url: str
    fal_url: str


def start_sandbox(*extra: str) -> Running:
    """``python -m providers.sandbox`` on free ports, once it has printed its READY line."""
    command = [
        sys.executable,
        "-m",
        "providers.sandbox",
        "--runapi-port=0",
        "--apiinone-port=0",
        "--minimax-port=0",
        "--fal-port=0",
        f"--runapi-key={RUNAPI_KEY}",
        f"--apiinone-key={APIINONE_KEY}",
        f"--minimax-key={MINIMAX_KEY}",
        f"--fal-key={FAL_KEY}",
        *extra,
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 15)
    line = process.stdout.readline() if ready else ""
    urls = parse_ready_urls(line)
    if urls is None or "minimax" not in urls or "fal" not in urls:
        process.kill()
        process.wait()
        process.stdout.close()
        raise RuntimeError(f"no READY line from the sandbox, got {line!r}")
    return Running(process, urls["runapi"], urls["apiinone"], urls["minimax"], urls["fal"])


def stop_sandbox(running: Running) -> int:
    """SIGTERM, then the exit status (0 for a clean stop)."""
    running.process.send_signal(signal.SIGTERM)
    try:
        return running.process.wait(timeout=10)
    finally:
        if running.process.stdout is not None:
            running.process.stdout.close()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def runapi_body(**fields: Any) -> dict[str, Any]:
    body = {
        "model": "hailuo-2.3-image-to-video-standard",
        "prompt": "a red fox in snow",
        "first_frame_image_url": IMAGE,
        "duration_seconds": 6,
        "output_resolution": "768p",
    }
    return {k: v for k, v in {**body, **fields}.items() if v is not None}


def aio_body(**fields: Any) -> dict[str, Any]:
    body = {
        "model": "hailuo/2-3-image-to-video-standard",
        "prompt": "a red fox in snow",
        "image": IMAGE,
        "duration": "6",
        "resolution": "768P",
    }
    return {k: v for k, v in {**body, **fields}.items() if v is not None}


def set_knobs(client: httpx.Client, **knobs: Any) -> None:
    client.put("/_sandbox/knobs", json=knobs).raise_for_status()


CORE_COUNTERS = ("create_calls", "accepted_creates", "status_calls", "balance_calls")
"""What every simulated reseller counts; MiniMax's also count file reads and callbacks."""


def counters(client: httpx.Client, *, every: bool = False) -> dict[str, int]:
    """The core counters (``every``: MiniMax's extra ones too)."""
    stats: dict[str, Any] = client.get("/_sandbox/stats").json()
    found: dict[str, int] = stats["counters"]
    return dict(found) if every else {key: found[key] for key in CORE_COUNTERS}


def poll_statuses(client: httpx.Client, path: str, timeout_s: float = 3.0) -> list[Any]:
    """Every status answer body until a final one (or the timeout)."""
    seen: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = client.get(path)
        assert answer.status_code == 200, answer.text
        seen.append(answer.json())
        status = str(answer.json().get("status") or answer.json()["data"]["status"]).lower()
        if status in ("completed", "failed"):
            break
        time.sleep(0.05)
    return seen
