"""``gateway serve`` flags, and what a multi-worker parent hands to its workers; the workers
themselves run in ``tests/e2e/test_workers_e2e.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import build_parser, main
from gateway.config import ConfigError, load_settings, override_server
from gateway.workers import worker_app, worker_environ

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"
ENV = {
    "GATEWAY_KEY_DEMO": "client-key-for-tests",
    "RUNAPI_API_KEY": "runapi-test-key",
    "APIINONE_API_KEY": "apiinone-test-key",
    "FAL_KEY": "fal-test-key",
}


def test_serve_takes_a_workers_flag_and_leaves_it_unset_by_default() -> None:
    parser = build_parser()
    assert parser.parse_args(["serve", "--workers", "3"]).workers == 3
    assert parser.parse_args(["serve"]).workers is None


def test_workers_flag_overrides_the_config_and_keeps_the_other_server_keys() -> None:
    settings = load_settings(REPO_CONFIG, {"GATEWAY_SERVER__WORKERS": "2"})
    overridden = override_server(settings, host=None, port=9001, workers=4)
    assert (overridden.server.workers, overridden.server.port) == (4, 9001)
    assert overridden.server.host == settings.server.host
    assert override_server(settings, workers=None).server.workers == 2


def test_zero_workers_on_the_command_line_is_refused_naming_the_key() -> None:
    settings = load_settings(REPO_CONFIG, {})
    with pytest.raises(ConfigError, match=r"command line.*\n  server\.workers"):
        override_server(settings, workers=0)


def test_serve_with_zero_workers_exits_2_before_starting_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["serve", "--config", str(REPO_CONFIG), "--workers", "0"], ENV)
    assert status == 2
    assert "server.workers" in capsys.readouterr().err


def test_workers_rebuild_the_parents_settings_with_its_redis(tmp_path: Path) -> None:
    parent = override_server(load_settings(REPO_CONFIG, ENV), port=9001, workers=2)
    added = worker_environ(
        parent, REPO_CONFIG, redis_url="unix:///tmp/x/redis.sock", metrics_dir=tmp_path
    )
    rebuilt = load_settings(Path(added["GATEWAY_CONFIG"]), {**ENV, **added})
    assert rebuilt.redis.url == "unix:///tmp/x/redis.sock"
    # (each load makes its own Settings subclass, so the values are compared, not the models)
    assert rebuilt.model_dump(exclude={"redis"}) == parent.model_dump(exclude={"redis"})
    assert added["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)


def test_a_worker_app_outside_a_multi_worker_parent_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="gateway serve --workers"):
        worker_app(ENV)


def test_reload_without_a_running_gateway_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "gateway.pid"
    assert main(["reload", "--config", str(REPO_CONFIG), "--pid-file", str(missing)], {}) == 1
    assert "no running gateway" in capsys.readouterr().err
    missing.write_text("999999999\n")  # no such process
    assert main(["reload", "--config", str(REPO_CONFIG), "--pid-file", str(missing)], {}) == 1
    assert "is gone" in capsys.readouterr().err


def test_reload_refuses_a_bad_file_before_signalling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text("routing:\n  max_atempts: 2\n")
    pid_file = tmp_path / "gateway.pid"
    pid_file.write_text("1\n")  # init: must not be signalled
    assert main(["reload", "--config", str(bad), "--pid-file", str(pid_file)], {}) == 2
    assert "routing.max_atempts" in capsys.readouterr().err
