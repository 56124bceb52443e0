"""``gateway.metrics`` in prometheus-client's multiprocess mode (``gateway serve --workers N``).

The library chooses its mode once, when imported, from ``PROMETHEUS_MULTIPROC_DIR``; this
process imported it without, so the multiprocess side runs in child processes
(``tests/unit/metrics_events.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Metrics, MultiprocessModeOff
from tests.scrape import Scrape
from tests.unit.metrics_events import CLIENTS, PROVIDERS, record

ROOT = Path(__file__).resolve().parents[2]
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def in_child_process(directory: Path, circuit: str) -> str:
    """The exposition after a child process recorded :func:`record` into ``directory``."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.unit.metrics_events", str(directory), circuit],
        cwd=ROOT,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def series(text: str) -> Series:
    """Every sample but ``*_created`` (a creation time, which multiprocess mode has not)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for s in Scrape(text)
        if not s.name.endswith("_created")
    }


def families(text: str) -> dict[str, tuple[str, str]]:
    """Name → (type, help); without the ``*_created`` gauges the text format makes of them."""
    return {
        f.name: (f.type, f.documentation)
        for f in text_string_to_metric_families(text)
        if not f.name.endswith("_created")
    }


def test_multiprocess_exposition_has_the_same_metrics_series_and_values_as_one_process(
    tmp_path: Path,
) -> None:
    single = Metrics(PROVIDERS, clients=CLIENTS)
    record(single)
    expected = single.exposition().decode()
    merged = in_child_process(tmp_path, "open")
    assert families(merged) == families(expected)
    assert series(merged) == pytest.approx(series(expected))


def test_workers_add_up_counters_and_histograms(tmp_path: Path) -> None:
    in_child_process(tmp_path, "open")
    s = Scrape(in_child_process(tmp_path, "open"))
    route = {"route": "/v1/videos", "method": "POST"}
    assert s.value("gateway_http_requests_total", status="202", **route) == 2
    assert s.value("gateway_http_request_duration_seconds_count", **route) == 2
    assert s.value("gateway_http_request_duration_seconds_bucket", le="0.025", **route) == 2
    assert s.value("gateway_spend_usd_total", provider="apiinone") == pytest.approx(0.60)
    assert s.value("gateway_failovers_total", from_provider="runapi", to_provider="apiinone",
                   reason="upstream_unavailable") == 2  # fmt: skip


def test_build_info_stays_one_series_at_one_and_the_latest_circuit_state_wins(
    tmp_path: Path,
) -> None:
    in_child_process(tmp_path, "open")  # an earlier worker saw the circuit open
    s = Scrape(in_child_process(tmp_path, "closed"))  # a later one saw it closed again
    assert [x.value for x in s if x.name == "gateway_build_info"] == [1]
    assert s.value("gateway_circuit_state", provider="runapi") == 0
    assert s.value("gateway_circuit_state", provider="apiinone") == 0


def test_a_multiprocess_dir_is_refused_when_prometheus_client_was_imported_without_it(
    tmp_path: Path,
) -> None:
    with pytest.raises(MultiprocessModeOff):
        Metrics(PROVIDERS, multiprocess_dir=tmp_path)
