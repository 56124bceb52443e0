"""A config reload enabling a provider that was disabled at start: through the real app, on a
real Redis, with the simulated resellers. The test client runs the app in a thread of its own,
where no signal handler can be installed, so the tests call the reloader that ``SIGHUP`` calls
on the app's own live settings (tests/e2e/test_reload_e2e.py sends the signal to a process)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from gateway.app import Resources
from gateway.config import Settings, settings_from_mapping
from gateway.live import Reloader, ReloadSource
from gateway.metrics import Metrics
from tests.integration.conftest import IMAGE, Harness, base_config

BODY = {"prompt": "a paper boat on a canal", "image": IMAGE}
SPARE = {"kind": "runapi", "base_url": "http://spare.sandbox", "api_key_env": "SPARE_API_KEY",
         "enabled": False}  # fmt: skip


class ConfigFile:
    """What the next reload reads: the settings the app started with, some flags changed."""

    def __init__(self, started: Settings) -> None:
        self.data: dict[str, Any] = started.model_dump(mode="json")

    def enable(self, **flags: bool) -> None:
        for name, enabled in flags.items():
            self.data["providers"][name]["enabled"] = enabled

    def read(self) -> Settings:
        return settings_from_mapping(self.data, {})


def reload(h: Harness, file: ConfigFile) -> None:
    """What ``SIGHUP`` does: read the file again and apply it to the app's live settings."""
    resources: Resources = h.client.app.state.resources
    assert Reloader(resources.live, ReloadSource(file.read, {}), metrics=Metrics([])).reload()


async def served_by(h: Harness) -> str:
    created = await h.create(BODY)
    assert created.status_code == 202, created.text
    provider: str = created.json()["provider"]
    return provider


async def enabled(h: Harness) -> dict[str, bool]:
    answer = await h.client.get("/v1/providers", headers=h.headers())
    return {p["name"]: p["enabled"] for p in answer.json()["data"]}


async def reloadable(make: Callable[..., Any], **extra: Any) -> tuple[Harness, ConfigFile]:
    """A harness with apiinone disabled at start (its key is set), and ``extra`` providers."""
    providers = base_config("unused")["providers"]
    providers["apiinone"] = {**providers["apiinone"], "enabled": False}
    h: Harness = await make(providers={**providers, **extra})
    return h, ConfigFile(h.settings)


async def test_a_provider_disabled_at_start_is_enabled_and_disabled_again_by_reloads(
    harness_factory: Callable[..., Any],
) -> None:
    h, file = await reloadable(harness_factory)
    assert await served_by(h) == "runapi"
    assert (await enabled(h))["apiinone"] is False
    scrape = await h.scrape()
    assert scrape.value("gateway_tasks_created_total", provider="apiinone", tier="standard",
                        resolution="768P") == 0  # fmt: skip

    file.enable(apiinone=True, runapi=False)
    reload(h, file)
    assert await enabled(h) == {"runapi": False, "apiinone": True}
    assert await served_by(h) == "apiinone"
    scrape = await h.scrape()
    assert scrape.value("gateway_tasks_created_total", provider="apiinone", tier="standard",
                        resolution="768P") == 1  # fmt: skip
    assert not [s for s in scrape if s.labels.get("provider") == "other"]

    file.enable(apiinone=False, runapi=True)
    reload(h, file)
    assert await served_by(h) == "runapi"
    assert h.apiinone.counters.create_calls == 1


async def test_a_provider_whose_key_was_missing_at_start_stays_disabled_and_the_log_says_why(
    harness_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    h, file = await reloadable(harness_factory, spare=SPARE)
    file.enable(spare=True, apiinone=True)
    with caplog.at_level(logging.WARNING, logger="gateway.live"):
        reload(h, file)
    assert await enabled(h) == {"runapi": True, "apiinone": True, "spare": False}
    (why,) = [r.getMessage() for r in caplog.records if "stays disabled" in r.getMessage()]
    assert "SPARE_API_KEY" in why
    assert "restart" in why
    assert "apiinone" not in why


async def test_readiness_counts_only_the_providers_that_can_serve_now(
    harness_factory: Callable[..., Any],
) -> None:
    """apiinone has a client (a reload may enable it) but is disabled: runapi's open circuit
    leaves nothing to serve creates, so the instance is not ready; enabled, it is again."""
    circuit = {"circuit": {"failures_to_open": 1, "cooldown_s": 30}}
    h, file = await reloadable(lambda **kw: harness_factory(routing=circuit, **kw))
    h.runapi.update_knobs({"create_fault": "http_500"})
    assert (await h.create(BODY)).json()["code"] == "all_providers_failed"
    ready = await h.client.get("/readyz")
    assert ready.status_code == 503
    assert "every provider's circuit is open" in ready.text
    file.enable(apiinone=True)
    reload(h, file)
    assert (await h.client.get("/readyz")).status_code == 200
