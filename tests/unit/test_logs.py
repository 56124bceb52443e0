"""What never reaches a log line: callback tokens and the input values validation errors quote."""

from __future__ import annotations

import json
import logging
import sys

from pydantic import BaseModel

from gateway.logs import JsonFormatter, redact

TOKEN = "cbtok_R4nd0mL00kingT0ken"
PROMPT = " ".join(["a", "secret", "prompt"])  # built, so no source line in a traceback holds it


class Job(BaseModel):
    duration: int


def line_for(message: str, exc: BaseException | None = None) -> dict[str, object]:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    record = logging.LogRecord("gateway.test", logging.ERROR, __file__, 1, message, (), info)
    entry: dict[str, object] = json.loads(JsonFormatter().format(record))
    return entry


def raise_chained() -> BaseException:
    try:
        try:
            Job.model_validate({"duration": PROMPT})
        except ValueError as inner:
            raise RuntimeError(f"bad callback on /callbacks/minimax/{TOKEN}") from inner
    except RuntimeError as outer:
        return outer
    raise AssertionError("unreachable")


def test_a_callback_token_in_a_message_is_redacted() -> None:
    line = line_for(f"POST /callbacks/runapi/{TOKEN}?x=1 failed")
    assert TOKEN not in json.dumps(line)
    assert line["msg"] == "POST /callbacks/runapi/[redacted]?x=1 failed"


def test_the_older_v1_callback_route_is_redacted_too() -> None:
    assert redact(f"/v1/callbacks/apiinone/{TOKEN}") == "/v1/callbacks/apiinone/[redacted]"


def test_a_chained_validation_error_keeps_its_fields_but_not_the_input() -> None:
    line = json.dumps(line_for("unhandled", raise_chained()))
    assert PROMPT not in line
    assert TOKEN not in line
    assert "duration: int_parsing" in line
    assert "RuntimeError" in line  # the chain is still there, outermost last


def test_an_exception_line_still_names_where_it_happened() -> None:
    exc = raise_chained()
    line = line_for("unhandled", exc)
    assert "raise_chained" in str(line["exc"])
    assert str(sys.modules[__name__].__file__) in str(line["exc"])
