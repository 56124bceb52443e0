"""A config reload that changes the client list (``auth.keys``), through the real app on a real
Redis with the simulated resellers: the guard and the final-task shortcut both refuse a removed
client's key at once, and what follows a client's name (tasks, usage, metrics) stays sound. The
test client runs the app in a thread of its own, where no signal handler can be installed, so
the tests call the reloader ``SIGHUP`` calls (tests/e2e/test_reload_e2e.py sends the signal)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from gateway.app import Resources
from gateway.config import settings_from_mapping
from gateway.errors import Unauthorized
from gateway.live import Reloader, ReloadSource
from gateway.metrics import Metrics
from tests.integration.conftest import CLIENT_KEY, ENV, IMAGE, OTHER_KEY, Harness
from tests.integration.test_shortcut import Downstream, call, shortcut_of

BODY = {"prompt": "a paper boat on a canal", "image": IMAGE}


def reload_clients(h: Harness, keys: list[dict[str, Any]]) -> None:
    """What ``SIGHUP`` does after ``auth.keys`` was edited to ``keys``."""
    data = h.settings.model_dump(mode="json")
    data["auth"]["keys"] = keys
    source = ReloadSource(lambda: settings_from_mapping(data, ENV), ENV)
    assert Reloader(resources(h).live, source, metrics=Metrics([])).reload()


def resources(h: Harness) -> Resources:
    running: Resources = h.client.app.state.resources
    return running


async def finished_task(h: Harness, key: str) -> str:
    task_id: str = (await h.create(BODY, key)).json()["id"]
    for _ in range(50):
        if (await h.read(task_id, key)).json()["status"] in ("completed", "failed"):
            return task_id
        await asyncio.sleep(0.1)
    raise AssertionError("the task did not finish")


async def test_a_removed_client_is_refused_by_the_guard_and_the_shortcut_and_its_tasks_are_nobodys(
    harness: Harness,
) -> None:
    task_id = await finished_task(harness, OTHER_KEY)  # remembered final: the shortcut has it
    downstream = Downstream()
    shortcut = shortcut_of(harness, downstream)
    assert (await call(shortcut, f"/v1/videos/{task_id}", OTHER_KEY))[0] == 200

    reload_clients(harness, [{"name": "demo", "key_env": "GATEWAY_KEY_DEMO"}])

    path = f"/v1/videos/{task_id}"
    status, _, _, scope = await call(shortcut, path, OTHER_KEY)
    assert (status, downstream.paths) == (418, [path])  # not served from the cache: handed on
    with pytest.raises(Unauthorized):  # with the verdict the app's guard repeats
        await resources(harness).authorizer.authorize(scope)  # type: ignore[arg-type]
    assert (await harness.read(task_id, OTHER_KEY)).status_code == 401
    assert (
        await harness.client.get("/v1/usage", headers=harness.headers(OTHER_KEY))
    ).status_code == 401
    assert (await harness.read(task_id, CLIENT_KEY)).status_code == 404  # not demo's
    assert (await harness.client.get("/v1/usage", headers=harness.headers())).status_code == 200
    scrape = await harness.scrape()  # the removed client's series stay, with its spend
    assert scrape.value("gateway_client_spend_usd_total", client="other") > 0


async def test_a_renamed_client_keeps_its_key_and_its_earlier_tasks_stay_with_the_old_name(
    harness: Harness,
) -> None:
    task_id = await finished_task(harness, OTHER_KEY)
    reload_clients(harness, [
        {"name": "demo", "key_env": "GATEWAY_KEY_DEMO"},
        {"name": "partner", "key_env": "GATEWAY_KEY_OTHER"},
    ])  # fmt: skip
    assert (await harness.read(task_id, OTHER_KEY)).status_code == 404
    created = await harness.create(BODY, OTHER_KEY)
    assert created.status_code == 202, created.text
    assert (await harness.read(created.json()["id"], OTHER_KEY)).status_code == 200
    assert (await harness.read(created.json()["id"], CLIENT_KEY)).status_code == 404


async def test_a_client_list_that_cannot_be_read_keeps_every_running_key(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory()
    reload_clients(h, [{"name": "demo", "key_env": "GATEWAY_KEY_UNSET_IN_ENV"}])
    assert (await h.client.get("/v1/providers", headers=h.headers())).status_code == 200
    assert (await h.client.get("/v1/providers", headers=h.headers(OTHER_KEY))).status_code == 200
