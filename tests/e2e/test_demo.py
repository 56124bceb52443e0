"""``gateway demo`` prints curl commands that work as pasted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("curl") is None, reason="the demo prints curl commands"),
]


def read_usage(process: subprocess.Popen[str], timeout_s: float = 30.0) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if line.startswith("OpenAPI:"):
            return lines
    raise AssertionError(f"no usage printed: {lines}")


def test_demo_prints_text_and_image_create_commands_that_work(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--config", str(ROOT / "config.yaml"),
         "--port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    try:
        lines = read_usage(process)
        creates = [line for line in lines if line.startswith("ID=$(curl")]
        read = next(line for line in lines if line.startswith("curl -s http"))
        assert len(creates) == 2  # text-to-video, then Fast image-to-video
        tasks = [run_to_completion(create, read) for create in creates]
        assert [t["mode"] for t in tasks] == ["text_to_video", "image_to_video"]
        assert [t["model"] for t in tasks] == ["hailuo-2.3", "hailuo-2.3-fast"]
        for task in tasks:  # the stored copies, served by the gateway
            assert task["video_url"] == f"/v1/videos/{task['id']}/content"
        download = next(line for line in lines if "/content" in line)
        subprocess.run(["bash", "-c", f"ID={tasks[0]['id']}\n{download}"], cwd=tmp_path,
                       timeout=20, check=True, capture_output=True)  # fmt: skip
        assert (tmp_path / "video.mp4").read_bytes()[4:8] == b"ftyp"
        usage_line = next(line for line in lines if "/v1/usage" in line)
        spend = subprocess.run(["bash", "-c", usage_line], capture_output=True, text=True,
                               timeout=20, check=True)  # fmt: skip
        assert json.loads(spend.stdout)["tasks"] == 2  # both tasks above, at their prices
        assert (tmp_path / ".gateway" / "appendonly.aof").exists()
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0


def run_to_completion(create: str, read: str) -> dict[str, object]:
    """Run the printed create and read commands, then read until the task is final."""
    created = subprocess.run(
        ["bash", "-c", f"{create}\n{read}"], capture_output=True, text=True, timeout=20
    )
    task_id, first = created.stdout.splitlines()[:2]
    assert task_id.startswith("vid_")
    assert json.loads(first)["id"] == task_id
    deadline = time.monotonic() + 15
    while True:
        again = subprocess.run(
            ["bash", "-c", f"ID={task_id}\n{read}"], capture_output=True, text=True, timeout=20
        )
        task: dict[str, object] = json.loads(again.stdout)
        if task["status"] == "completed" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert task["status"] == "completed", task
    assert task["video_url"]
    return task
