"""The integration harness itself: no app a test starts outlives the test (its lifespan, with
the poller, copier and webhook loops, ends at teardown at the latest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.conftest import Harness, app_threads, stop_all


async def test_a_stopped_harness_leaves_no_app_running(
    harness_factory: Callable[..., Any],
) -> None:
    before = app_threads()
    h: Harness = await harness_factory(status={"background_polling": True})
    assert len(app_threads() - before) == 1
    await h.stop()
    await h.stop()  # a second stop (the fixture's, at teardown) does nothing
    assert app_threads() == before


async def test_every_harness_is_stopped_even_when_one_shutdown_raises(
    harness_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = app_threads()
    first: Harness = await harness_factory(status={"background_polling": True})
    second: Harness = await harness_factory(status={"background_polling": True})
    really_stop = first.stop

    async def failing_stop() -> None:
        await really_stop()
        raise RuntimeError("shutdown failed")

    monkeypatch.setattr(first, "stop", failing_stop)
    with pytest.raises(RuntimeError, match="shutdown failed"):
        await stop_all([first, second])
    assert (first.stopped, second.stopped) == (True, True)
    assert app_threads() == before
