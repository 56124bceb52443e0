"""The running gateway's process id, in ``redis.data_dir/gateway.pid``, for ``gateway reload``.

``gateway serve`` writes it at start (with ``--workers N``, the parent, which forwards the
signal to its workers) and removes it at exit. ``gateway reload`` reads it and sends
``SIGHUP``; the gateway then re-reads its config file (``gateway.live``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from gateway.config import Settings

logger = logging.getLogger(__name__)

NAME: Final = "gateway.pid"


class NotRunning(Exception):
    """No gateway answers at the pid file's process id (or there is no pid file)."""


def path_for(settings: Settings) -> Path:
    return settings.redis.data_dir / NAME


@contextlib.contextmanager
def pid_file(path: Path) -> Iterator[None]:
    """This process's id in ``path`` while the block runs; removed after, if still ours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = str(os.getpid())
    path.write_text(mine + "\n", encoding="ascii")
    try:
        yield
    finally:
        try:
            if path.read_text(encoding="ascii").strip() == mine:
                path.unlink()
        except OSError as exc:  # another gateway's now, or gone already: nothing to remove
            logger.info("pid file not removed", extra={"path": str(path), "error": str(exc)})


def send_reload(path: Path) -> int:
    """``SIGHUP`` to the process named in ``path``; returns its id."""
    try:
        pid = int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError) as exc:
        raise NotRunning(f"no running gateway: cannot read {path} ({exc})") from exc
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise NotRunning(f"no running gateway: process {pid} in {path} is gone") from exc
    return pid
