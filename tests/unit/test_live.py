"""``gateway.live``: which changed keys a reload applies, and which wait for a restart."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from gateway.app import reload_on_hangup
from gateway.config import ConfigError, Settings, resolve_client_keys, settings_from_mapping
from gateway.live import (
    LiveSettings,
    Reloader,
    ReloadSource,
    hold_early_hangups,
    take_early_hangup,
)
from gateway.metrics import Metrics
from tests.scrape import Scrape

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"


def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(REPO_CONFIG.read_text())
    return loaded


def settings(data: dict[str, Any]) -> Settings:
    return settings_from_mapping(data, {})


def test_live_keys_apply_and_the_rest_keep_their_running_values() -> None:
    live = LiveSettings(settings(config()))
    changed = config()
    changed["providers"]["runapi"]["prices_usd"]["standard"]["6s_768P"] = 0.11
    changed["providers"]["runapi"]["weight"] = 3
    changed["routing"]["max_attempts"] = 1
    changed["server"]["port"] = 9999
    changed["redis"]["url"] = "redis://10.0.0.9:6379/0"
    changed["providers"]["runapi"]["timeout_s"] = 5

    applied, fixed, _ = live.apply(settings(changed), {})

    assert applied == [
        "providers.runapi.prices_usd.hailuo-2.3.standard.6s_768P",
        "providers.runapi.weight",
        "routing.max_attempts",
    ]
    assert fixed == ["providers.runapi.timeout_s", "redis.url", "server.port"]
    now = live.settings
    assert now.providers["runapi"].price("hailuo-2.3", "standard", "6s_768P") == 0.11
    assert now.providers["runapi"].weight == 3
    assert now.routing.max_attempts == 1
    assert now.server.port == 8080
    assert now.redis.url is None
    assert now.providers["runapi"].timeout_s == settings(config()).providers["runapi"].timeout_s


def test_rate_limits_follow_the_live_settings() -> None:
    data = config()
    data["auth"] = {"keys": [{"name": "demo", "key_env": "GATEWAY_KEY_DEMO"}]}
    live = LiveSettings(settings(data))
    data["auth"]["keys"][0]["rate_per_minute"] = 30
    live.apply(settings(data), {})
    assert live.rate_limits() == {"demo": 30}


def test_disabling_is_live_but_enabling_a_provider_not_started_needs_a_restart() -> None:
    data = config()
    data["providers"]["apiinone"]["enabled"] = False
    live = LiveSettings(settings(data))
    both = config()
    both["providers"]["runapi"]["enabled"] = False
    applied, fixed, _ = live.apply(settings(both), {})
    assert applied == ["providers.runapi.enabled"]
    assert fixed == ["providers.apiinone.enabled"]
    assert not live.settings.providers["runapi"].enabled
    assert not live.settings.providers["apiinone"].enabled  # no adapter was built for it


def test_a_provider_disabled_at_start_with_an_adapter_is_enabled_by_a_reload() -> None:
    data = config()
    data["providers"]["apiinone"]["enabled"] = False
    data["providers"]["minimax"]["enabled"] = False
    live = LiveSettings(settings(data), adapters=["runapi", "apiinone", "fal"])
    assert live.enabled() == ["runapi", "fal"]
    applied, fixed, _ = live.apply(settings(config()), {})
    assert (applied, fixed) == (["providers.apiinone.enabled"], ["providers.minimax.enabled"])
    assert live.enabled() == ["runapi", "apiinone", "fal"]
    assert live.missing_keys(fixed) == {"minimax": "MINIMAX_API_KEY"}


# Made-up client keys for the tests, in the variables the test settings name.
DEMO_KEY, OTHER_KEY, LATE_KEY = "unit-demo-client", "unit-other-client", "unit-late-client"
ENVIRON = {"GATEWAY_KEY_DEMO": DEMO_KEY, "GATEWAY_KEY_OTHER": OTHER_KEY,
           "GATEWAY_KEY_LATE": LATE_KEY}  # fmt: skip


def two_clients() -> dict[str, Any]:
    data = config()
    data["auth"]["keys"].append({"name": "other", "key_env": "GATEWAY_KEY_OTHER"})
    return data


def live_with_two_clients() -> LiveSettings:
    started = settings(two_clients())
    return LiveSettings(started, client_keys=resolve_client_keys(started, ENVIRON))


def who(live: LiveSettings, key: str) -> str | None:
    return live.client_keys().identify(f"Bearer {key}")


def test_a_client_removed_from_the_file_is_refused_after_a_reload() -> None:
    live = live_with_two_clients()
    assert (who(live, DEMO_KEY), who(live, OTHER_KEY)) == ("demo", "other")
    applied, fixed, kept = live.apply(settings(config()), ENVIRON)
    assert (applied, fixed, kept) == (["auth.keys"], [], None)
    assert (who(live, DEMO_KEY), who(live, OTHER_KEY)) == ("demo", None)
    assert [k.name for k in live.settings.auth.keys] == ["demo"]
    assert set(live.rate_limits()) == {"demo"}


def test_a_client_added_to_the_file_gets_its_key_from_the_environment() -> None:
    live = LiveSettings(settings(config()), client_keys={"demo": SecretStr(DEMO_KEY)})
    more = config()
    more["auth"]["keys"].append(
        {"name": "late", "key_env": "GATEWAY_KEY_LATE", "rate_per_minute": 5}
    )
    assert live.apply(settings(more), ENVIRON) == (["auth.keys"], [], None)
    assert (who(live, DEMO_KEY), who(live, LATE_KEY)) == ("demo", "late")
    assert live.rate_limits() == {"demo": 600, "late": 5}


def test_a_renamed_client_keeps_its_key_under_its_new_name() -> None:
    live = live_with_two_clients()
    renamed = two_clients()
    renamed["auth"]["keys"][1]["name"] = "partner"
    assert live.apply(settings(renamed), ENVIRON) == (["auth.keys.1.name"], [], None)
    assert who(live, OTHER_KEY) == "partner"
    assert [k.name for k in live.settings.auth.keys] == ["demo", "partner"]


def test_a_client_pointed_at_another_variable_takes_that_key() -> None:
    live = live_with_two_clients()
    moved = two_clients()
    moved["auth"]["keys"][1]["key_env"] = "GATEWAY_KEY_LATE"
    assert live.apply(settings(moved), ENVIRON) == (["auth.keys.1.key_env"], [], None)
    assert (who(live, OTHER_KEY), who(live, LATE_KEY)) == (None, "other")


def test_a_rate_change_alone_does_not_read_client_keys_again() -> None:
    live = live_with_two_clients()
    before = live.client_keys()
    slower = two_clients()
    slower["auth"]["keys"][1]["rate_per_minute"] = 2
    assert live.apply(settings(slower), {}) == (["auth.keys.1.rate_per_minute"], [], None)
    assert live.client_keys() is before
    assert live.rate_limits()["other"] == 2


def _unset_variable(data: dict[str, Any]) -> None:
    data["auth"]["keys"].append({"name": "late", "key_env": "GATEWAY_KEY_UNSET"})


def _shared_key(data: dict[str, Any]) -> None:
    data["auth"]["keys"][1]["key_env"] = "GATEWAY_KEY_DEMO"


def _no_client_left(data: dict[str, Any]) -> None:
    data["auth"]["keys"] = []


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (_unset_variable, "auth.keys.2.key_env: environment variable GATEWAY_KEY_UNSET is not set"),
        (_shared_key, "auth.keys.1.key_env: clients 'demo' and 'other' share one key"),
        (_no_client_left, "auth.keys: at least one client key is needed"),
    ],
)
def test_a_client_list_that_cannot_be_resolved_keeps_the_running_one(
    edit: Callable[[dict[str, Any]], None], why: str
) -> None:
    live = live_with_two_clients()
    before = live.client_keys()
    changed = two_clients()
    changed["auth"]["keys"][0]["rate_per_minute"] = 1  # kept too: the whole running list stays
    edit(changed)
    changed["routing"]["max_attempts"] = 1  # the rest of the reload applies

    applied, fixed, kept = live.apply(settings(changed), ENVIRON)

    assert applied == ["routing.max_attempts"]
    assert fixed
    assert all(path.startswith("auth.keys") for path in fixed)
    assert kept is not None
    assert why in kept
    assert live.client_keys() is before
    assert live.settings.auth == settings(two_clients()).auth
    assert live.settings.routing.max_attempts == 1


def test_a_kept_client_list_is_logged_by_key_path_and_variable_never_by_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    live = live_with_two_clients()
    changed = two_clients()
    changed["auth"]["keys"][1]["key_env"] = "GATEWAY_KEY_DEMO"  # shares demo's key
    changed["auth"]["keys"].append({"name": "late", "key_env": "GATEWAY_KEY_UNSET"})
    with caplog.at_level(logging.WARNING, logger="gateway.live"):
        reloaded = Reloader(
            live, ReloadSource(lambda: settings(changed), ENVIRON), metrics=Metrics(["runapi"])
        ).reload()
    assert reloaded
    kept = [r for r in caplog.records if "client list" in r.getMessage()]
    assert len(kept) == 1
    message = kept[0].getMessage()
    assert "auth.keys.2.key_env" in message
    assert "GATEWAY_KEY_UNSET" in message
    assert "share one key" in message
    everything = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert DEMO_KEY not in everything
    assert OTHER_KEY not in everything
    assert who(live, OTHER_KEY) == "other"


def test_a_refused_reload_is_counted_and_changes_nothing() -> None:
    before = settings(config())
    live = LiveSettings(before)
    metrics = Metrics(["runapi"])

    def broken() -> Settings:
        raise ConfigError("config.yaml: 1 invalid setting(s)")

    assert not Reloader(live, ReloadSource(broken, {}), metrics=metrics).reload()
    assert live.settings is before
    scrape = Scrape(metrics.exposition().decode())
    assert scrape.value("gateway_config_reloads_total", outcome="refused") == 1
    assert scrape.value("gateway_config_reloads_total", outcome="applied") == 0


def test_reloading_an_unchanged_file_changes_nothing() -> None:
    before = settings(config())
    live = LiveSettings(before)
    assert live.apply(settings(config()), {}) == ([], [], None)
    assert live.settings is before


def test_a_client_budget_changes_live() -> None:
    data = config()
    data["auth"] = {"keys": [{"name": "demo", "key_env": "GATEWAY_KEY_DEMO"}]}
    live = LiveSettings(settings(data))
    data["auth"]["keys"][0]["budget_usd"] = {"day": 5}
    assert live.apply(settings(data), {}) == (["auth.keys.0.budget_usd"], [], None)
    data["auth"]["keys"][0]["budget_usd"] = {"day": 7, "month": 100}
    applied, _, _ = live.apply(settings(data), {})
    assert applied == ["auth.keys.0.budget_usd.day", "auth.keys.0.budget_usd.month"]
    budget = live.settings.auth.keys[0].budget_usd
    assert budget is not None
    assert (budget.day, budget.month) == (7, 100)


def test_a_providers_balance_minimum_and_refresh_change_live_but_not_the_watch_itself() -> None:
    live = LiveSettings(settings(config()))
    changed = config()
    changed["providers"]["runapi"]["balance"] = {"refresh_s": 30, "min_usd": 20}
    assert live.apply(settings(changed), {}) == (
        ["providers.runapi.balance.min_usd", "providers.runapi.balance.refresh_s"], [], None,
    )  # fmt: skip
    balance = live.settings.providers["runapi"].balance
    assert balance is not None
    assert (balance.refresh_s, balance.min_usd) == (30, 20)
    del changed["providers"]["runapi"]["balance"]  # watching starts and stops with a restart
    assert live.apply(settings(changed), {}) == ([], ["providers.runapi.balance"], None)


def test_an_applied_reload_gives_the_client_names_in_force_their_own_series() -> None:
    live = LiveSettings(settings(config()))
    metrics = Metrics(["runapi"])  # started knowing no client name
    cheaper = config()
    cheaper["providers"]["runapi"]["weight"] = 5
    assert Reloader(live, ReloadSource(lambda: settings(cheaper), {}), metrics=metrics).reload()
    metrics.spent("runapi", "demo", 0.30)
    scrape = Scrape(metrics.exposition().decode())
    assert scrape.value("gateway_client_spend_usd_total", client="demo") == 0.30
    assert not [s for s in scrape if s.labels.get("client") == "other"]


async def test_a_sighup_before_the_handler_is_in_place_is_held_then_applied() -> None:
    """A worker still starting when the parent forwards a reload: SIGHUP's default action would
    kill it. Held instead, and applied once the app's handler is installed."""
    previous = signal.getsignal(signal.SIGHUP)
    live = LiveSettings(settings(config()))
    changed = config()
    changed["routing"]["max_attempts"] = 1
    try:
        hold_early_hangups()
        os.kill(os.getpid(), signal.SIGHUP)  # still alive after this line: the test goes on
        source = ReloadSource(lambda: settings(changed), {})
        remove = reload_on_hangup(live, source, Metrics(["runapi"]))
        remove()
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert live.settings.routing.max_attempts == 1  # the held reload was applied
    assert take_early_hangup() is False  # once


def test_without_an_early_sighup_starting_reloads_nothing() -> None:
    previous = signal.getsignal(signal.SIGHUP)
    try:
        hold_early_hangups()
        assert take_early_hangup() is False
    finally:
        signal.signal(signal.SIGHUP, previous)
