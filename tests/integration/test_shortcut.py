"""Lookups of remembered final tasks, answered ahead of the framework (gateway/shortcut.py):
the same answer as the app's, the same checks, and everything else left to the app."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway.app import Resources
from gateway.shortcut import FinalTaskShortcut
from tests.integration.conftest import CLIENT_KEY, IMAGE, OTHER_KEY, Harness

BODY = {"prompt": "a paper boat on a canal", "image": IMAGE}
ROUTE = "/v1/videos/{task_id}"


async def final_task(h: Harness) -> str:
    task_id: str = (await h.create(BODY)).json()["id"]
    for _ in range(50):
        if (await h.read(task_id)).json()["status"] in ("completed", "failed"):
            return task_id
        await asyncio.sleep(0.1)
    raise AssertionError("the task did not finish")


class Downstream:
    """Stands for the app behind the shortcut: records what reached it, answers 418."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def call(
    shortcut: FinalTaskShortcut, path: str, key: str | None = CLIENT_KEY, method: str = "GET"
) -> tuple[int, dict[bytes, bytes], bytes, dict[str, Any]]:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    scope: dict[str, Any] = {"type": "http", "method": method, "path": path, "headers": headers}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await shortcut(scope, receive, send)  # type: ignore[arg-type]
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body, scope


def shortcut_of(h: Harness, downstream: Downstream) -> FinalTaskShortcut:
    """A shortcut over ``downstream`` with the running app's own keys, cache and limiter."""
    resources: Resources = h.client.app.state.resources
    return FinalTaskShortcut(downstream, lambda: resources)


async def test_remembered_final_task_is_answered_without_the_app_as_the_app_answered_it(
    harness: Harness,
) -> None:
    task_id = await final_task(harness)
    from_app = await harness.read(task_id)
    downstream = Downstream()
    status, headers, body, scope = await call(
        shortcut_of(harness, downstream), f"/v1/videos/{task_id}"
    )
    assert downstream.paths == []
    assert status == 200
    assert body == from_app.content
    assert headers[b"content-type"].decode() == from_app.headers["content-type"]
    assert headers[b"content-length"].decode() == from_app.headers["content-length"]
    assert scope["path_template"] == ROUTE  # what the observer labels and logs
    assert scope["state"]["client"] == "demo"


async def test_everything_but_a_plain_remembered_success_goes_to_the_app(
    harness: Harness,
) -> None:
    task_id = await final_task(harness)
    rendering = (await harness.create(BODY)).json()["id"]
    downstream = Downstream()
    shortcut = shortcut_of(harness, downstream)
    path = f"/v1/videos/{task_id}"
    cases = [
        (path, None, "GET"),  # no key
        (path, "not-a-key", "GET"),  # unknown key
        (path, OTHER_KEY, "GET"),  # another client's task
        (path, CLIENT_KEY, "POST"),  # not a lookup
        (path + "/", CLIENT_KEY, "GET"),  # not a task id
        (f"/v1/videos/{rendering}", CLIENT_KEY, "GET"),  # not final, not remembered
        ("/v1/videos/vid_" + "a" * 26, CLIENT_KEY, "GET"),  # unknown
    ]
    for case_path, key, method in cases:
        status, _, _, _ = await call(shortcut, case_path, key, method)
        assert status == 418, (case_path, key, method)
    assert len(downstream.paths) == len(cases)


async def test_remembered_final_tasks_still_spend_the_clients_rate_limit(
    harness_factory: Callable[..., Any],
) -> None:
    h: Harness = await harness_factory(
        auth={"keys": [{"name": "demo", "key_env": "GATEWAY_KEY_DEMO", "rate_per_minute": 8},
                       {"name": "other", "key_env": "GATEWAY_KEY_OTHER"}]},
    )  # fmt: skip
    task_id = await final_task(h)
    answers = [(await h.read(task_id)).status_code for _ in range(10)]
    assert 429 in answers
    refused = await h.read(task_id)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"


async def test_a_lookup_the_shortcut_hands_on_spends_one_rate_limit_token(
    harness_factory: Callable[..., Any],
) -> None:
    """The shortcut and the app's guard call the same authorize(); its verdict is kept for the
    request, so another client's lookup of a remembered task (handed on, answered 404 by the
    app) costs one token, not two."""
    h: Harness = await harness_factory(
        auth={"keys": [{"name": "demo", "key_env": "GATEWAY_KEY_DEMO"},
                       {"name": "other", "key_env": "GATEWAY_KEY_OTHER", "rate_per_minute": 4}]},
    )  # fmt: skip
    task_id = await final_task(h)
    await h.read(task_id)  # the owner's lookup puts it in the cache
    answers = [(await h.read(task_id, key=OTHER_KEY)).status_code for _ in range(5)]
    assert answers == [404, 404, 404, 404, 429]


async def test_shortcut_answers_are_counted_and_carry_a_request_id(harness: Harness) -> None:
    task_id = await final_task(harness)
    before = (await harness.scrape()).value(
        "gateway_http_requests_total", route=ROUTE, method="GET", status="200"
    )
    answers = [await harness.read(task_id) for _ in range(4)]
    after = (await harness.scrape()).value(
        "gateway_http_requests_total", route=ROUTE, method="GET", status="200"
    )
    assert after - before == 4
    assert len({a.headers["x-request-id"] for a in answers}) == 4
