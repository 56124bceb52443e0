"""``python -m providers.sandbox``: the simulated resellers in one process and one event loop.

Once all listen, prints exactly one line to stdout (logs go to stderr)::

    SANDBOX READY runapi=http://127.0.0.1:<port> apiinone=http://127.0.0.1:<port> minimax=… fal=…

and runs until SIGTERM or SIGINT, which stop it gracefully (exit status 0).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence

from providers.sandbox.engine import Knobs
from providers.sandbox.server import (
    DEFAULT_APIINONE_KEY,
    DEFAULT_FAL_KEY,
    DEFAULT_MINIMAX_KEY,
    DEFAULT_RUNAPI_KEY,
    Sandbox,
    SandboxConfig,
)


def parse_args(argv: Sequence[str] | None = None) -> tuple[SandboxConfig, str]:
    """The sandbox's config and the log level, from the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m providers.sandbox",
        description="Simulated RunAPI, API in One, MiniMax and fal.ai.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="an IPv4 loopback address")
    parser.add_argument("--runapi-port", type=int, default=9101, help="0 picks a free port")
    parser.add_argument("--apiinone-port", type=int, default=9102, help="0 picks a free port")
    parser.add_argument("--minimax-port", type=int, default=9103, help="0 picks a free port")
    parser.add_argument("--fal-port", type=int, default=9104, help="0 picks a free port")
    parser.add_argument("--runapi-key", default=DEFAULT_RUNAPI_KEY)
    parser.add_argument("--apiinone-key", default=DEFAULT_APIINONE_KEY)
    parser.add_argument("--minimax-key", default=DEFAULT_MINIMAX_KEY)
    parser.add_argument("--fal-key", default=DEFAULT_FAL_KEY)
    parser.add_argument("--queue-s", type=float, default=Knobs().queue_s)
    parser.add_argument("--complete-after-s", type=float, default=Knobs().complete_after_s)
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    args = parser.parse_args(argv)
    try:
        config = SandboxConfig(
            host=args.host,
            runapi_port=args.runapi_port,
            apiinone_port=args.apiinone_port,
            minimax_port=args.minimax_port,
            fal_port=args.fal_port,
            runapi_key=args.runapi_key,
            apiinone_key=args.apiinone_key,
            minimax_key=args.minimax_key,
            fal_key=args.fal_key,
            knobs=Knobs(queue_s=args.queue_s, complete_after_s=args.complete_after_s),
        )
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        parser.error(str(exc))
    return config, args.log_level


async def run(config: SandboxConfig, ready: Callable[[str], None]) -> None:
    """Serve until SIGTERM/SIGINT; ``ready`` gets the READY line once every server listens."""
    sandbox = Sandbox(config)
    await sandbox.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sandbox.request_stop)
    try:
        ready(sandbox.ready_line)
        await sandbox.wait_stopped()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    config, log_level = parse_args(argv)
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(run(config, _print_ready))
    return 0


def _print_ready(line: str) -> None:
    print(line, flush=True)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # optional: the stock loop works, only slower
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    sys.exit(main())
