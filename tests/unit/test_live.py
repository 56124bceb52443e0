"""``gateway.live``: which changed keys a reload applies, and which wait for a restart."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import yaml

from gateway.app import reload_on_hangup
from gateway.config import ConfigError, Settings, settings_from_mapping
from gateway.live import LiveSettings, Reloader, hold_early_hangups, take_early_hangup
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

    applied, fixed = live.apply(settings(changed))

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
    live.apply(settings(data))
    assert live.rate_limits() == {"demo": 30}


def test_disabling_is_live_but_enabling_a_provider_not_started_needs_a_restart() -> None:
    data = config()
    data["providers"]["apiinone"]["enabled"] = False
    live = LiveSettings(settings(data))
    both = config()
    both["providers"]["runapi"]["enabled"] = False
    applied, fixed = live.apply(settings(both))
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
    applied, fixed = live.apply(settings(config()))
    assert (applied, fixed) == (["providers.apiinone.enabled"], ["providers.minimax.enabled"])
    assert live.enabled() == ["runapi", "apiinone", "fal"]
    assert live.missing_keys(fixed) == {"minimax": "MINIMAX_API_KEY"}


def test_a_new_client_key_waits_for_a_restart() -> None:
    live = LiveSettings(settings(config()))
    more = config()
    more["auth"]["keys"].append({"name": "late", "key_env": "GATEWAY_KEY_LATE"})
    applied, fixed = live.apply(settings(more))
    assert (applied, fixed) == ([], ["auth.keys"])
    assert [k.name for k in live.settings.auth.keys] == [
        k["name"] for k in config()["auth"]["keys"]
    ]


def test_a_refused_reload_is_counted_and_changes_nothing() -> None:
    before = settings(config())
    live = LiveSettings(before)
    metrics = Metrics(["runapi"])

    def broken() -> Settings:
        raise ConfigError("config.yaml: 1 invalid setting(s)")

    assert not Reloader(live, broken, metrics=metrics).reload()
    assert live.settings is before
    scrape = Scrape(metrics.exposition().decode())
    assert scrape.value("gateway_config_reloads_total", outcome="refused") == 1
    assert scrape.value("gateway_config_reloads_total", outcome="applied") == 0


def test_reloading_an_unchanged_file_changes_nothing() -> None:
    before = settings(config())
    live = LiveSettings(before)
    assert live.apply(settings(config())) == ([], [])
    assert live.settings is before


def test_a_client_budget_changes_live() -> None:
    data = config()
    data["auth"] = {"keys": [{"name": "demo", "key_env": "GATEWAY_KEY_DEMO"}]}
    live = LiveSettings(settings(data))
    data["auth"]["keys"][0]["budget_usd"] = {"day": 5}
    assert live.apply(settings(data)) == (["auth.keys.0.budget_usd"], [])
    data["auth"]["keys"][0]["budget_usd"] = {"day": 7, "month": 100}
    applied, _ = live.apply(settings(data))
    assert applied == ["auth.keys.0.budget_usd.day", "auth.keys.0.budget_usd.month"]
    budget = live.settings.auth.keys[0].budget_usd
    assert budget is not None
    assert (budget.day, budget.month) == (7, 100)


def test_a_providers_balance_minimum_and_refresh_change_live_but_not_the_watch_itself() -> None:
    live = LiveSettings(settings(config()))
    changed = config()
    changed["providers"]["runapi"]["balance"] = {"refresh_s": 30, "min_usd": 20}
    assert live.apply(settings(changed)) == (
        ["providers.runapi.balance.min_usd", "providers.runapi.balance.refresh_s"], [],
    )  # fmt: skip
    balance = live.settings.providers["runapi"].balance
    assert balance is not None
    assert (balance.refresh_s, balance.min_usd) == (30, 20)
    del changed["providers"]["runapi"]["balance"]  # watching starts and stops with a restart
    assert live.apply(settings(changed)) == ([], ["providers.runapi.balance"])


def test_an_applied_reload_gives_the_client_names_in_force_their_own_series() -> None:
    live = LiveSettings(settings(config()))
    metrics = Metrics(["runapi"])  # started knowing no client name
    cheaper = config()
    cheaper["providers"]["runapi"]["weight"] = 5
    assert Reloader(live, lambda: settings(cheaper), metrics=metrics).reload()
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
        remove = reload_on_hangup(live, lambda: settings(changed), Metrics(["runapi"]))
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
