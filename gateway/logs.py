"""Structured logs: one JSON object per line, with the ``extra`` fields of each record.

Every line written while a request is being served carries its ``request_id`` (set by
``gateway.access``), so an upstream call's line can be joined to its request's line.

Two things never reach a line, whoever logs them: a callback token (the credential in
``/callbacks/{provider}/{token}``, wherever a path is quoted) and the input values that a
pydantic ``ValidationError`` quotes (a prompt, a URL, a key sent in the wrong field), including
one chained under another exception's traceback: validation errors are written as their field
locations and error types only.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from pydantic import ValidationError

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

_CALLBACK_TOKEN = re.compile(r"(/callbacks/[\w.-]+/)[\w.~%-]+")
"""A callback URL's token segment (also under ``/v1/callbacks/``, the older route)."""
_CALLBACK_MARK = "/callbacks/"
"""In every match of ``_CALLBACK_TOKEN``."""
REDACTED = "[redacted]"

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the request being served in this context, if any."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        current = request_id.get()
        if current is not None:
            entry.setdefault("request_id", current)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(
            {k: redact(v) if isinstance(v, str) else v for k, v in entry.items()}, default=str
        )

    def formatException(self, ei: ExcInfo) -> str:
        return format_exception(ei[1]) if ei[1] is not None else ""


def redact(text: str) -> str:
    """``text`` without callback tokens. Every string of every line passes here, so the
    expression runs only on a string that can hold a token: the substring test costs a small
    fraction of a substitution, which was half of the time a line took to format."""
    if _CALLBACK_MARK not in text:
        return text
    return _CALLBACK_TOKEN.sub(rf"\1{REDACTED}", text)


def format_exception(exc: BaseException) -> str:
    """The traceback of ``exc`` and of the exceptions chained to it (as Python prints them),
    with each validation error reduced to locations and error types."""
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, "The above exception was the direct cause of:"
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, "During handling of the above exception:"
        else:
            current = None
    parts = []
    for item, link in reversed(chain):
        frames = "".join(traceback.format_tb(item.__traceback__))
        parts.append(f"Traceback (most recent call last):\n{frames}{_describe(item)}")
        if link:
            parts.append(link)
    return "\n\n".join(parts)


def _describe(exc: BaseException) -> str:
    name = type(exc).__qualname__
    if isinstance(exc, ValidationError):
        where = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['type']}"
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        return f"{name}: {exc.error_count()} validation error(s) for {exc.title}: {where}"
    return f"{name}: {exc}" if str(exc) else name


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO; ours are logged by the gateway with less detail.
    logging.getLogger("httpx").setLevel(logging.WARNING)
