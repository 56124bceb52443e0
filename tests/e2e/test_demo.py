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


def test_demo_prints_a_create_and_a_read_command_that_work(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--config", str(ROOT / "config.yaml"),
         "--port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    try:
        lines = read_usage(process)
        create = next(line for line in lines if line.startswith("ID=$(curl"))
        read = next(line for line in lines if line.startswith("curl -s http"))
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
            task = json.loads(again.stdout)
            if task["status"] == "completed" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert task["status"] == "completed"
        assert task["video_url"] == f"/v1/videos/{task_id}/content"  # the stored copy
        download = next(line for line in lines if "/content" in line)
        subprocess.run(["bash", "-c", f"ID={task_id}\n{download}"], cwd=tmp_path, timeout=20,
                       check=True, capture_output=True)  # fmt: skip
        assert (tmp_path / "video.mp4").read_bytes()[4:8] == b"ftyp"
        assert (tmp_path / ".gateway" / "appendonly.aof").exists()
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0
