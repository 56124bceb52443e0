"""The same metric events, recorded in this process or in a child process in multiprocess mode.

``python -m tests.unit.metrics_events DIR STATE`` records :func:`record` with the circuit of
``runapi`` ending in ``STATE`` into a :class:`Metrics` writing to ``DIR`` (the caller sets
``PROMETHEUS_MULTIPROC_DIR`` to ``DIR``: prometheus-client reads it once, when imported, so
multiprocess mode can only be tested in a process of its own), then prints the exposition.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gateway.metrics import Metrics

PROVIDERS = ["runapi", "apiinone"]
CLIENTS = ["demo"]


def record(metrics: Metrics, circuit: str = "open") -> None:
    """One event of every kind, so every metric has a non-zero series."""
    metrics.routes({"/v1/videos": {"POST"}, "/v1/videos/{task_id}": {"GET"}})
    metrics.http_request("/v1/videos", "POST", 202, 0.02)
    metrics.http_request("/v1/videos/{task_id}", "GET", 200, 0.003)
    metrics.http_request("/nowhere", "GET", 404, 0.001)
    metrics.upstream_call("runapi", "create", "upstream_unavailable", 0.4)
    metrics.upstream_call("apiinone", "create", "accepted", 0.7)
    metrics.upstream_call("apiinone", "status", "ok", 0.05)
    metrics.failover("runapi", "apiinone", "upstream_unavailable")
    metrics.ambiguous_submit("runapi", 0.30)
    metrics.task_created("apiinone", "standard", "768P")
    metrics.task_finished("apiinone", "completed", 95.0)
    metrics.spent("apiinone", "demo", 0.30)
    metrics.routing_saving("apiinone", 0.02)
    metrics.budget_refusal("demo")
    metrics.provider_balance("runapi", 41.5)
    metrics.budget("demo", "day", 0.30, 10.0)
    metrics.circuit_state("runapi", circuit)
    metrics.redis_error("polling")
    metrics.webhook_delivery("delivered")


def main(argv: list[str]) -> None:
    directory, circuit = argv
    metrics = Metrics(PROVIDERS, clients=CLIENTS, multiprocess_dir=Path(directory))
    record(metrics, circuit)
    sys.stdout.write(metrics.exposition().decode())


if __name__ == "__main__":
    main(sys.argv[1:])
