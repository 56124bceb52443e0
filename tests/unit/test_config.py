from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_settings, resolve_secrets

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"
ENV = {
    "GATEWAY_KEY_DEMO": "client-key-for-tests",
    "RUNAPI_API_KEY": "runapi-test-key",
    "APIINONE_API_KEY": "apiinone-test-key",
    "MINIMAX_API_KEY": "minimax-test-key",
    "FAL_KEY": "fal-test-key",
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_shipped_config_loads_with_the_documented_defaults() -> None:
    settings = load_settings(REPO_CONFIG, {})
    assert settings.server.port == 8080
    assert settings.server.workers == 1
    assert settings.redis.url is None
    assert settings.routing.strategy == "cheapest"
    assert settings.routing.circuit.failures_to_open == 5
    assert settings.status.poll_interval_s == 2
    assert settings.providers["runapi"].price("hailuo-2.3", "standard", "10s_768P") == 0.50
    assert settings.providers["apiinone"].price("hailuo-2.3", "pro", "6s_1080P") == 0.85
    assert settings.auth.keys[0].budget_usd is not None
    assert settings.auth.keys[0].budget_usd.day == 50
    assert settings.providers["runapi"].balance is not None
    assert settings.providers["apiinone"].balance is None


def test_env_overrides_a_nested_value_and_keeps_the_rest_of_the_file() -> None:
    settings = load_settings(
        REPO_CONFIG,
        {"GATEWAY_REDIS__URL": "redis://127.0.0.1:6390/0", "GATEWAY_ROUTING__MAX_ATTEMPTS": "2"},
    )
    assert settings.redis.url == "redis://127.0.0.1:6390/0"
    assert settings.routing.max_attempts == 2
    assert settings.routing.strategy == "cheapest"
    assert set(settings.providers) == {"runapi", "apiinone", "minimax", "fal"}


def test_env_override_reaches_into_a_provider() -> None:
    settings = load_settings(REPO_CONFIG, {"GATEWAY_PROVIDERS__RUNAPI__ENABLED": "false"})
    assert settings.providers["runapi"].enabled is False
    assert settings.providers["runapi"].kind == "runapi"


def test_unknown_key_in_the_file_fails_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "routing:\n  strategyy: cheapest\n")
    with pytest.raises(ConfigError, match=r"routing\.strategyy"):
        load_settings(path, {})


def test_bad_value_fails_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "routing:\n  strategy: fastest\n")
    with pytest.raises(ConfigError, match=r"routing\.strategy"):
        load_settings(path, {})


def test_unreadable_redis_url_fails_naming_the_key_and_the_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "redis:\n  url: redis+sentinel://h1:26379\n")
    with pytest.raises(ConfigError, match=r"redis\.url.*service name"):
        load_settings(path, {})


def test_sentinel_and_cluster_urls_are_accepted(tmp_path: Path) -> None:
    for url in ("redis+sentinel://h1:26379,h2:26379/mymaster", "redis+cluster://h1:7000,h2:7001"):
        assert load_settings(write(tmp_path, f"redis:\n  url: {url}\n"), {}).redis.url == url


def test_poll_interval_below_one_second_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "status:\n  poll_interval_s: 0.5\n")
    with pytest.raises(ConfigError, match=r"status\.poll_interval_s"):
        load_settings(path, {})


def test_price_for_ten_seconds_at_1080p_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "providers:\n  r:\n    kind: runapi\n    base_url: http://x\n    api_key_env: K\n"
        "    prices_usd: {standard: {10s_1080P: 0.9}}\n",
    )
    with pytest.raises(ConfigError, match=r"providers\.r\.prices_usd"):
        load_settings(path, {})


def test_unknown_provider_kind_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path, "providers:\n  r:\n    kind: sora\n    base_url: http://x\n    api_key_env: K\n"
    )
    with pytest.raises(ConfigError, match=r"providers\.r\.kind"):
        load_settings(path, {})


def test_text_to_video_cannot_be_switched_on_for_a_kind_without_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "providers:\n  r:\n    kind: runapi\n    base_url: http://x\n    api_key_env: K\n"
        "    text_to_video: true\n",
    )
    with pytest.raises(ConfigError, match="text_to_video"):
        load_settings(path, {})


def test_server_workers_is_read_from_the_file_and_overridden_by_the_environment(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "server:\n  workers: 2\n")
    assert load_settings(path, {}).server.workers == 2
    assert load_settings(path, {"GATEWAY_SERVER__WORKERS": "4"}).server.workers == 4


@pytest.mark.parametrize("workers", [0, 65])
def test_server_workers_outside_1_to_64_is_refused(tmp_path: Path, workers: int) -> None:
    path = write(tmp_path, f"server:\n  workers: {workers}\n")
    with pytest.raises(ConfigError, match=r"server\.workers"):
        load_settings(path, {})


def test_secrets_come_from_the_named_env_vars() -> None:
    settings = load_settings(REPO_CONFIG, {})
    secrets = resolve_secrets(settings, ENV)
    assert secrets.client_keys["demo"].get_secret_value() == "client-key-for-tests"
    assert secrets.provider_keys["runapi"].get_secret_value() == "runapi-test-key"
    assert "runapi-test-key" not in repr(secrets)


def test_missing_secret_fails_naming_key_and_variable() -> None:
    settings = load_settings(REPO_CONFIG, {})
    env = {k: v for k, v in ENV.items() if k != "APIINONE_API_KEY"}
    with pytest.raises(ConfigError, match=r"providers\.apiinone\.api_key_env.*APIINONE_API_KEY"):
        resolve_secrets(settings, env)


def test_disabled_provider_needs_no_key() -> None:
    settings = load_settings(REPO_CONFIG, {"GATEWAY_PROVIDERS__APIINONE__ENABLED": "false"})
    env = {k: v for k, v in ENV.items() if k != "APIINONE_API_KEY"}
    assert set(resolve_secrets(settings, env).provider_keys) == {"runapi", "minimax", "fal"}


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml", {})


def provider(tmp_path: Path, kind: str, extra: str) -> Path:
    return write(
        tmp_path,
        f"providers:\n  p:\n    kind: {kind}\n    base_url: http://x\n    api_key_env: K\n{extra}",
    )


def test_a_tier_first_price_table_prices_hailuo_2_3(tmp_path: Path) -> None:
    path = provider(tmp_path, "minimax", "    prices_usd: {standard: {6s_768P: 0.28}}\n")
    cfg = load_settings(path, {}).providers["p"]
    assert cfg.price("hailuo-2.3", "standard", "6s_768P") == 0.28
    assert cfg.price("hailuo-2.3-fast", "standard", "6s_768P") is None
    assert cfg.served_models == ("hailuo-2.3",)  # Fast has no price: not served


def test_shipped_minimax_prices_are_keyed_by_model_and_standard_only() -> None:
    cfg = load_settings(REPO_CONFIG, {}).providers["minimax"]
    assert cfg.price("hailuo-2.3", "standard", "10s_768P") == 0.56
    assert cfg.price("hailuo-2.3-fast", "standard", "6s_1080P") == 0.33
    assert cfg.price("hailuo-2.3", "pro", "6s_768P") is None
    assert cfg.served_models == ("hailuo-2.3", "hailuo-2.3-fast")
    assert cfg.modes("hailuo-2.3") == ("image_to_video", "text_to_video")
    assert cfg.modes("hailuo-2.3-fast") == ("image_to_video",)
    assert cfg.takes_data_uri_images


def test_a_table_mixing_tiers_and_models_is_refused(tmp_path: Path) -> None:
    path = provider(
        tmp_path,
        "minimax",
        "    prices_usd:\n      standard: {6s_768P: 0.28}\n"
        "      hailuo-2.3-fast: {standard: {6s_768P: 0.19}}\n",
    )
    with pytest.raises(ConfigError, match=r"providers\.p\.prices_usd.*not both"):
        load_settings(path, {})


def test_a_price_for_a_model_the_kind_does_not_serve_is_refused(tmp_path: Path) -> None:
    path = provider(
        tmp_path, "runapi", "    prices_usd: {hailuo-2.3-fast: {standard: {6s_768P: 0.19}}}\n"
    )
    with pytest.raises(ConfigError, match=r"prices_usd: kind 'runapi' does not serve"):
        load_settings(path, {})


def test_text_to_video_can_be_switched_off_for_minimax(tmp_path: Path) -> None:
    path = provider(
        tmp_path, "minimax", "    text_to_video: false\n    prices_usd: {standard: {6s_768P: 1}}\n"
    )
    assert load_settings(path, {}).providers["p"].modes("hailuo-2.3") == ("image_to_video",)


def test_models_limits_what_a_minimax_account_is_sent(tmp_path: Path) -> None:
    path = provider(
        tmp_path,
        "minimax",
        "    models: [hailuo-2.3-fast]\n    prices_usd:\n"
        "      hailuo-2.3: {standard: {6s_768P: 0.28}}\n"
        "      hailuo-2.3-fast: {standard: {6s_768P: 0.19}}\n",
    )
    assert load_settings(path, {}).providers["p"].served_models == ("hailuo-2.3-fast",)


def test_shipped_fal_prices_both_models_for_standard_only() -> None:
    cfg = load_settings(REPO_CONFIG, {}).providers["fal"]
    assert cfg.served_models == ("hailuo-2.3", "hailuo-2.3-fast")
    assert cfg.price("hailuo-2.3-fast", "standard", "10s_768P") == 0.32
    assert cfg.price("hailuo-2.3", "pro", "6s_1080P") is None


def test_client_budgets_and_provider_balance_are_read_from_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "auth:\n  keys:\n    - {name: a, key_env: A, budget_usd: {day: 50, month: 1000}}\n"
        "    - {name: b, key_env: B}\n"
        "providers:\n  r:\n    kind: runapi\n    base_url: http://x\n    api_key_env: K\n"
        "    balance: {refresh_s: 30, min_usd: 5}\n",
    )
    settings = load_settings(path, {})
    budgets = [k.budget_usd for k in settings.auth.keys]
    assert budgets[0] is not None
    assert (budgets[0].day, budgets[0].month) == (50, 1000)
    assert budgets[1] is None
    balance = settings.providers["r"].balance
    assert balance is not None
    assert (balance.refresh_s, balance.min_usd) == (30, 5)


def test_balance_is_refused_for_a_kind_without_a_balance_api(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "providers:\n  r:\n    kind: apiinone\n    base_url: http://x\n    api_key_env: K\n"
        "    balance: {refresh_s: 30}\n",
    )
    with pytest.raises(ConfigError, match=r"providers\.r.*balance"):
        load_settings(path, {})


def test_a_budget_must_be_positive(tmp_path: Path) -> None:
    path = write(tmp_path, "auth:\n  keys:\n    - {name: a, key_env: A, budget_usd: {day: 0}}\n")
    with pytest.raises(ConfigError, match=r"auth\.keys\.0\.budget_usd\.day"):
        load_settings(path, {})
