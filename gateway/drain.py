"""Drain on SIGTERM: stop being ready before stopping to listen.

A SIGTERM first makes ``/readyz`` answer ``503`` (reason ``draining``) while every request is
still served, for ``server.drain_s`` seconds, so a load balancer or an orchestrator takes the
instance out of rotation; then the signal goes on to uvicorn, which closes the listening
socket, lets requests in flight finish and runs the app's shutdown (where the poller hands
its leases back). A second SIGTERM, or SIGINT, does not wait.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

logger = logging.getLogger(__name__)

Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


class Drain:
    """Whether this process is draining; :meth:`install` makes SIGTERM start it."""

    def __init__(self, drain_s: float) -> None:
        self._drain_s = drain_s
        self.draining = False
        self._previous: Handler = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """Take SIGTERM over from whoever handles it (uvicorn), to hand it on after the drain.
        Only the main thread may set signal handlers; elsewhere (an app under a test client)
        this does nothing. Returns the function that puts the previous handler back."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        self._loop = loop
        self._previous = signal.signal(signal.SIGTERM, self._on_term)

        def restore() -> None:
            if signal.getsignal(signal.SIGTERM) == self._on_term:
                signal.signal(signal.SIGTERM, self._previous)

        return restore

    def _on_term(self, sig: int, frame: FrameType | None) -> None:
        again, self.draining = self.draining, True
        if again or self._drain_s <= 0 or self._loop is None:
            self._hand_on(sig)
            return
        logger.warning("SIGTERM: draining, /readyz answers 503",
                       extra={"drain_s": self._drain_s})  # fmt: skip
        # Through the loop's wake-up pipe: a signal handler may run while the loop waits.
        self._loop.call_soon_threadsafe(self._loop.call_later, self._drain_s, self._hand_on, sig)

    def _hand_on(self, sig: int) -> None:
        previous = self._previous
        if callable(previous):
            previous(sig, None)
            return
        signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        signal.raise_signal(sig)
