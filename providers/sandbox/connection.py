"""What a simulated reseller can do to a connection besides answering: hold it, or drop it.

Dropping is the part ASGI cannot express: an app that returns or raises without a response makes
uvicorn answer ``500 Internal Server Error``, which is a different failure (the client knows the
upstream refused). To close the socket with no response at all, the sandbox serves its apps with
:class:`AbortableHttpToolsProtocol`, uvicorn's own httptools protocol plus one ASGI scope
extension, :data:`ABORT_EXTENSION`, that carries the transport's ``abort``. A handler calls
:func:`drop_connection`, which aborts the transport and waits until uvicorn has seen the
disconnect, so uvicorn neither logs nor sends anything for that request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from litestar import Request
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

ABORT_EXTENSION = "sandbox.abort"

logger = logging.getLogger(__name__)


class AbortableHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, exposing ``transport.abort`` to the app through the scope."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {ABORT_EXTENSION: {"abort": self.transport.abort}}


async def drop_connection(request: Request[Any, Any, Any]) -> None:
    """Close the client's connection without a response, and wait until uvicorn has seen it.

    Under a server that does not expose :data:`ABORT_EXTENSION` this only logs a warning, and
    whatever the handler answers next reaches the client.
    """
    extensions: Mapping[str, Mapping[object, object]] = request.scope.get("extensions") or {}
    abort = extensions.get(ABORT_EXTENSION, {}).get("abort")
    if not callable(abort):
        logger.warning("the drop fault needs AbortableHttpToolsProtocol; answering 500 instead")
        return
    abort()
    await _until_disconnected(request.receive)


async def hold(request: Request[Any, Any, Any], seconds: float, stopping: asyncio.Event) -> bool:
    """Wait ``seconds`` before answering; True if the client is still there to get the answer.

    The wait ends early when the client hangs up (nothing is created for it then) or when the
    server is stopping, so a hung request never delays a shutdown.
    """
    gone = asyncio.ensure_future(_until_disconnected(request.receive))
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({gone, stop}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        stop.cancel()
    return not (gone.done() and not gone.cancelled())


async def _until_disconnected(receive: Callable[[], Awaitable[Any]]) -> None:
    # Handlers have read the whole body before calling this, so the next message uvicorn
    # delivers is the disconnect.
    while True:
        message: Mapping[str, object] = await receive()
        if message.get("type") == "http.disconnect":
            return
