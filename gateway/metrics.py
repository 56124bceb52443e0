"""Every metric the gateway exports, in one place (api.md §5).

One :class:`Metrics` per app, holding its own ``CollectorRegistry`` (never the global one, so
two apps in one process, as in the tests, do not share counters). Code records events through
its small typed methods; nothing else touches ``prometheus_client``.

Labels are bounded: every value is checked against a closed set (providers from config, the
route templates of the app, the outcome words of the ``ProviderError`` tree, fixed statuses)
and anything else is recorded as ``other`` (or ``unmatched`` for a route). A task id, a key, a
prompt, a URL or a raw path can therefore never become a label value. The known label values
are initialised at start, so every series exists (at 0) before its first event.

With one worker (the default) each process keeps its metrics in memory and serves its own
``/metrics``. With ``server.workers`` > 1 (``gateway.workers``) every worker writes its values to
files in a directory shared by the workers (prometheus-client's multiprocess mode, which the
library switches on at import time from ``PROMETHEUS_MULTIPROC_DIR``), and whichever worker
answers ``/metrics`` merges all of them: counters and histograms add up, ``gateway_build_info``
takes the max (1) and ``gateway_circuit_state`` the value set most recently by any worker.
Neither gauge mode needs the files of dead workers removed. Multiprocess mode has no
``*_created`` samples; every other series is the same in both modes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final, Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import values as prometheus_values
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from gateway import __version__
from providers import errors as perr

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

Operation = Literal["create", "status", "balance"]
RedisOperation = Literal[
    "ping", "health", "tasks", "idempotency", "polling", "webhooks", "rate_limit", "budgets",
    "balance", "listing", "invalidation",
]  # fmt: skip
"""Which part of the gateway met a Redis error."""
ResubmitOutcome = Literal["resubmitted", "no_candidate", "refused", "outcome_unknown", "lost_race"]
"""What became of a failed generation's resubmission."""
RESUBMIT_OUTCOMES: Final[tuple[ResubmitOutcome, ...]] = (
    "resubmitted", "no_candidate", "refused", "outcome_unknown", "lost_race",
)  # fmt: skip
WebhookOutcome = Literal["delivered", "rejected", "unreachable", "abandoned"]
"""One delivery attempt: a 2xx; a non-2xx answer; a timeout or connection error. ``abandoned``:
the delivery was given up after its last attempt."""

OTHER: Final = "other"
UNMATCHED: Final = "unmatched"
"""The route label of a request that matched no route (404, 405): never the raw path."""

SUCCESS: Final[Mapping[Operation, str]] = {"create": "accepted", "status": "ok", "balance": "ok"}
TASK_OPERATIONS: Final[tuple[Operation, ...]] = ("create", "status")
"""Operations every provider has, whose series start at 0 (``balance``: only kinds with a
balance API, from their first read)."""
HTTP_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
TIERS: Final = ("standard", "pro")
RESOLUTIONS: Final = ("768P", "1080P")
FINAL_STATUSES: Final = ("completed", "failed")
BUDGET_PERIODS: Final = ("day", "month")
CIRCUIT_VALUES: Final[Mapping[str, int]] = {"closed": 0, "half_open": 1, "open": 2}
REDIS_OPERATIONS: Final[tuple[RedisOperation, ...]] = (
    "ping", "health", "tasks", "idempotency", "polling", "webhooks", "rate_limit", "budgets",
    "balance", "listing", "invalidation",
)  # fmt: skip
CopyOutcome = Literal["stored", "retried", "gave_up"]
"""One copy attempt of a finished video: stored; failed and will be tried again; given up
(the task keeps the reseller's link)."""
COPY_OUTCOMES: Final[tuple[CopyOutcome, ...]] = ("stored", "retried", "gave_up")
DeletionOutcome = Literal["deleted", "failed"]
DELETION_OUTCOMES: Final[tuple[DeletionOutcome, ...]] = ("deleted", "failed")
COPY_BUCKETS: Final = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
WEBHOOK_OUTCOMES: Final[tuple[WebhookOutcome, ...]] = (
    "delivered", "rejected", "unreachable", "abandoned",
)  # fmt: skip
ReloadOutcome = Literal["applied", "refused"]
"""A config reload (``SIGHUP``): the file's live keys applied, or the file refused."""
RELOAD_OUTCOMES: Final[tuple[ReloadOutcome, ...]] = ("applied", "refused")

HTTP_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
UPSTREAM_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)
FINISH_BUCKETS: Final = (5, 10, 15, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800, 3600)


def _error_classes() -> list[type[perr.ProviderError]]:
    found, todo = [perr.ProviderError], [perr.ProviderError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


ERROR_OUTCOMES: Final = tuple(sorted({cls.outcome for cls in _error_classes()}))
"""Every outcome word of the ProviderError tree (``upstream_unavailable``, ``rate_limited``…)."""
FAILOVER_REASONS: Final = tuple(
    sorted({c.outcome for c in _error_classes() if c.failover} | {perr.OutcomeUnknown.outcome})
)
"""The outcomes after which a create may move on (``outcome_unknown`` only when configured)."""


def _pick(value: str, allowed: Iterable[str], fallback: str = OTHER) -> str:
    return value if value in allowed else fallback


class MultiprocessModeOff(RuntimeError):
    """A multiprocess directory was given, but prometheus-client was imported without
    ``PROMETHEUS_MULTIPROC_DIR`` set, so this process's values would never reach the files."""


def _values_go_to_files() -> bool:
    # prometheus-client picks its value class once, when it is imported; only the mmap-backed
    # one has this attribute set.
    return bool(getattr(prometheus_values.ValueClass, "_multiprocess", False))


class Metrics:
    """The gateway's metrics, in a registry of their own. ``providers``: the configured names;
    ``clients``: the client names of ``auth.keys`` (the only ``client`` label values; a reload
    adds the names it brings, :meth:`follow_clients`).

    ``multiprocess_dir``: the directory every worker of one ``gateway serve --workers N``
    writes to (set as ``PROMETHEUS_MULTIPROC_DIR`` before prometheus-client was imported);
    :meth:`exposition` then answers for all workers together.
    """

    def __init__(
        self,
        providers: Sequence[str],
        *,
        clients: Sequence[str] = (),
        version: str = __version__,
        multiprocess_dir: Path | None = None,
    ) -> None:
        if multiprocess_dir is not None and not _values_go_to_files():
            raise MultiprocessModeOff(
                "PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is imported"
            )
        self._multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        self._providers = tuple(providers)
        self._clients = tuple(clients)
        self._routes: frozenset[str] = frozenset()
        r = self.registry
        self._build_info = Gauge(
            "gateway_build_info", "Always 1; the version is a label", ["version"], registry=r,
            multiprocess_mode="max",
        )  # fmt: skip
        self._http_requests = Counter(
            "gateway_http_requests", "HTTP requests answered, by route template, method and "
            "status", ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self._http_seconds = Histogram(
            "gateway_http_request_duration_seconds", "Time to answer an HTTP request",
            ["route", "method"], buckets=HTTP_BUCKETS, registry=r,
        )  # fmt: skip
        self._upstream_calls = Counter(
            "gateway_upstream_calls", "Calls to a reseller, by provider, operation and outcome",
            ["provider", "operation", "outcome"], registry=r,
        )  # fmt: skip
        self._upstream_seconds = Histogram(
            "gateway_upstream_request_duration_seconds", "Latency of calls to a reseller",
            ["provider", "operation"], buckets=UPSTREAM_BUCKETS, registry=r,
        )  # fmt: skip
        self._failovers = Counter(
            "gateway_failovers", "Creates moved on to another provider, by from, to and reason",
            ["from_provider", "to_provider", "reason"], registry=r,
        )  # fmt: skip
        self._ambiguous = Counter(
            "gateway_ambiguous_submits", "Creates sent that got no answer: the reseller may "
            "have taken (and bill) the task", ["provider"], registry=r,
        )  # fmt: skip
        self._tasks_created = Counter(
            "gateway_tasks_created", "Tasks a reseller accepted, by provider, tier and resolution",
            ["provider", "tier", "resolution"], registry=r,
        )  # fmt: skip
        self._spend = Counter(
            "gateway_spend_usd", "Price-table price of every task that completed (what resellers "
            "bill), in US dollars", ["provider"], registry=r,
        )  # fmt: skip
        self._spend_at_risk = Counter(
            "gateway_spend_at_risk_usd", "Prices of creates sent that got no answer (they may "
            "be billed), in US dollars", ["provider"], registry=r,
        )  # fmt: skip
        self._saving = Counter(
            "gateway_price_routing_saving_usd", "For each completed task, the price of the most "
            "expensive eligible provider less the price paid, in US dollars", ["provider"],
            registry=r,
        )  # fmt: skip
        self._client_spend = Counter(
            "gateway_client_spend_usd", "Price of every completed task, by client, in US dollars",
            ["client"], registry=r,
        )  # fmt: skip
        self._budget_refusals = Counter(
            "gateway_budget_refusals", "Creates refused: the client's budget could not "
            "cover the price", ["client"], registry=r,
        )  # fmt: skip
        self._budget = Gauge(
            "gateway_client_budget_usd", "A client's configured budget per UTC period",
            ["client", "period"], registry=r, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self._budget_used = Gauge(
            "gateway_client_budget_used_usd", "What a client has spent and reserved in the "
            "current UTC period (read from Redis at each scrape)", ["client", "period"],
            registry=r, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self._balance = Gauge(
            "gateway_provider_balance_usd", "Last known account balance (less the prices "
            "accepted since it was read), for providers with a balance API", ["provider"],
            registry=r, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self._tasks_finished = Counter(
            "gateway_tasks_finished", "Tasks that reached a final status, by provider and status",
            ["provider", "status"], registry=r,
        )  # fmt: skip
        self._finish_seconds = Histogram(
            "gateway_task_time_to_finish_seconds", "From creation to a final status",
            ["provider", "status"], buckets=FINISH_BUCKETS, registry=r,
        )  # fmt: skip
        self._circuit = Gauge(
            "gateway_circuit_state", "Circuit breaker per provider: 0 closed, 1 half_open, 2 open",
            ["provider"], registry=r, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self._redis_errors = Counter(
            "gateway_redis_errors", "Redis commands that failed, by the part of the gateway",
            ["operation"], registry=r,
        )  # fmt: skip
        self._resubmissions = Counter(
            "gateway_resubmissions", "Failed generations resubmitted or not, by outcome",
            ["outcome"], registry=r,
        )  # fmt: skip
        self._unrecorded = Counter(
            "gateway_unrecorded_upstream_tasks", "Tasks a reseller accepted that the gateway "
            "could not map to a public id: reconcile by hand (the log has the upstream id)",
            ["provider"], registry=r,
        )  # fmt: skip
        self._webhooks = Counter(
            "gateway_webhook_deliveries", "Webhook delivery attempts, by outcome", ["outcome"],
            registry=r,
        )  # fmt: skip
        self._reloads = Counter(
            "gateway_config_reloads", "Config reloads (SIGHUP), by outcome: applied or "
            "refused (the running config stays)", ["outcome"], registry=r,
        )  # fmt: skip
        self._video_copies = Counter(
            "gateway_video_copies", "Copies of finished videos into the gateway's storage, by "
            "outcome", ["outcome"], registry=r,
        )  # fmt: skip
        self._video_copy_bytes = Counter(
            "gateway_video_copy_bytes", "Bytes of finished videos written to the store",
            registry=r,
        )  # fmt: skip
        self._video_copy_seconds = Histogram(
            "gateway_video_copy_duration_seconds", "Time to copy one finished video (download "
            "and store)", buckets=COPY_BUCKETS, registry=r,
        )  # fmt: skip
        self._video_served_bytes = Counter(
            "gateway_video_served_bytes", "Bytes of stored videos sent by /content", registry=r,
        )  # fmt: skip
        self._video_deletions = Counter(
            "gateway_video_deletions", "Stored videos removed by retention, by outcome",
            ["outcome"], registry=r,
        )  # fmt: skip
        self._build_info.labels(version=version).set(1)
        self._initialise()

    def _initialise(self) -> None:
        for p in self._providers:
            for op in TASK_OPERATIONS:
                self._upstream_seconds.labels(p, op)
                for outcome in (SUCCESS[op], *ERROR_OUTCOMES):
                    self._upstream_calls.labels(p, op, outcome)
            for to in self._providers:
                for reason in FAILOVER_REASONS if to != p else ():
                    self._failovers.labels(p, to, reason)
            self._ambiguous.labels(p)
            self._unrecorded.labels(p)
            for tier in TIERS:
                for resolution in RESOLUTIONS:
                    self._tasks_created.labels(p, tier, resolution)
            self._spend.labels(p)
            self._spend_at_risk.labels(p)
            self._saving.labels(p)
            for status in FINAL_STATUSES:
                self._tasks_finished.labels(p, status)
                self._finish_seconds.labels(p, status)
            self._circuit.labels(p).set(CIRCUIT_VALUES["closed"])
        self._start_clients(self._clients)
        for operation in REDIS_OPERATIONS:
            self._redis_errors.labels(operation)
        for outcome in WEBHOOK_OUTCOMES:
            self._webhooks.labels(outcome)
        for resubmit in RESUBMIT_OUTCOMES:
            self._resubmissions.labels(resubmit)
        for reload_outcome in RELOAD_OUTCOMES:
            self._reloads.labels(reload_outcome)
        for copy_outcome in COPY_OUTCOMES:
            self._video_copies.labels(copy_outcome)
        for deletion in DELETION_OUTCOMES:
            self._video_deletions.labels(deletion)

    def _start_clients(self, clients: Iterable[str]) -> None:
        for client in clients:
            self._client_spend.labels(client)
            self._budget_refusals.labels(client)

    def follow_clients(self, names: Iterable[str]) -> None:
        """The client names of the settings in force after a reload: each new one gets its own
        series (at 0) from now on instead of ``other``. Names only ever come from the config,
        and none is forgotten (a removed client's totals stay), so the set stays bounded."""
        new = [name for name in dict.fromkeys(names) if name not in self._clients]
        self._clients = (*self._clients, *new)
        self._start_clients(new)

    def routes(self, methods_by_route: Mapping[str, Iterable[str]]) -> None:
        """Declare the app's route templates (the only route labels allowed) and start their
        duration series at 0."""
        self._routes = frozenset(methods_by_route)
        for route, methods in methods_by_route.items():
            for method in methods:
                self._http_seconds.labels(route, _pick(method, HTTP_METHODS))

    def _provider(self, name: str) -> str:
        return _pick(name, self._providers)

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request; ``route`` is the matched template, else :data:`UNMATCHED`."""
        route = _pick(route, self._routes, UNMATCHED)
        method = _pick(method.upper(), HTTP_METHODS)
        code = str(status) if 100 <= status <= 599 else OTHER
        self._http_requests.labels(route, method, code).inc()
        self._http_seconds.labels(route, method).observe(seconds)

    def upstream_call(
        self, provider: str, operation: Operation, outcome: str, seconds: float
    ) -> None:
        """One create or status call; ``outcome`` is ``accepted``/``ok`` or the error's word."""
        provider = self._provider(provider)
        outcome = _pick(outcome, (SUCCESS[operation], *ERROR_OUTCOMES), "upstream_error")
        self._upstream_calls.labels(provider, operation, outcome).inc()
        self._upstream_seconds.labels(provider, operation).observe(seconds)

    def failover(self, from_provider: str, to_provider: str, reason: str) -> None:
        """A create that failed at ``from_provider`` (``reason``: its outcome word) is being
        sent to ``to_provider``."""
        self._failovers.labels(
            self._provider(from_provider),
            self._provider(to_provider),
            _pick(reason, FAILOVER_REASONS),
        ).inc()

    def ambiguous_submit(self, provider: str, price_usd: float) -> None:
        """A create got no answer: its price may be billed."""
        provider = self._provider(provider)
        self._ambiguous.labels(provider).inc()
        self._spend_at_risk.labels(provider).inc(max(price_usd, 0.0))

    def task_created(self, provider: str, tier: str, resolution: str) -> None:
        """A reseller accepted a task (it is billed only if it completes: :meth:`spent`)."""
        provider = self._provider(provider)
        tier, resolution = _pick(tier, TIERS), _pick(resolution, RESOLUTIONS)
        self._tasks_created.labels(provider, tier, resolution).inc()

    def spent(self, provider: str, client: str, price_usd: float) -> None:
        """A task completed: resellers bill successful generations."""
        price = max(price_usd, 0.0)
        self._spend.labels(self._provider(provider)).inc(price)
        self._client_spend.labels(_pick(client, self._clients)).inc(price)

    def routing_saving(self, provider: str, saving_usd: float) -> None:
        """A completed task cost ``saving_usd`` less than the dearest eligible provider's."""
        self._saving.labels(self._provider(provider)).inc(max(saving_usd, 0.0))

    def budget_refusal(self, client: str) -> None:
        self._budget_refusals.labels(_pick(client, self._clients)).inc()

    def budget(self, client: str, period: str, used_usd: float, budget_usd: float | None) -> None:
        """One client's use of one period; ``budget_usd`` None: no budget (no series)."""
        client, period = _pick(client, self._clients), _pick(period, BUDGET_PERIODS)
        self._budget_used.labels(client, period).set(used_usd)
        if budget_usd is not None:
            self._budget.labels(client, period).set(budget_usd)

    def provider_balance(self, provider: str, balance_usd: float) -> None:
        self._balance.labels(self._provider(provider)).set(balance_usd)

    def task_finished(self, provider: str, status: str, seconds_to_finish: float) -> None:
        """A task reached ``completed`` or ``failed``, ``seconds_to_finish`` after creation."""
        provider, status = self._provider(provider), _pick(status, FINAL_STATUSES)
        self._tasks_finished.labels(provider, status).inc()
        self._finish_seconds.labels(provider, status).observe(max(seconds_to_finish, 0.0))

    def circuit_state(self, provider: str, state: str) -> None:
        """``state``: ``closed``, ``half_open`` or ``open`` (``gateway.health.Circuit``)."""
        value = CIRCUIT_VALUES.get(state)
        if value is not None:
            self._circuit.labels(self._provider(provider)).set(value)

    def resubmission(self, outcome: ResubmitOutcome) -> None:
        self._resubmissions.labels(_pick(outcome, RESUBMIT_OUTCOMES)).inc()

    def unrecorded_task(self, provider: str) -> None:
        """An upstream accepted (and may bill) a task no public id maps to."""
        self._unrecorded.labels(self._provider(provider)).inc()

    def redis_error(self, operation: RedisOperation) -> None:
        self._redis_errors.labels(_pick(operation, REDIS_OPERATIONS)).inc()

    def webhook_delivery(self, outcome: WebhookOutcome) -> None:
        self._webhooks.labels(_pick(outcome, WEBHOOK_OUTCOMES)).inc()

    def config_reload(self, outcome: ReloadOutcome) -> None:
        self._reloads.labels(_pick(outcome, RELOAD_OUTCOMES)).inc()

    def video_copy(self, outcome: CopyOutcome) -> None:
        self._video_copies.labels(_pick(outcome, COPY_OUTCOMES)).inc()

    def video_stored(self, size: int, seconds: float) -> None:
        """A finished video of ``size`` bytes was copied into the store in ``seconds``."""
        self._video_copies.labels("stored").inc()
        self._video_copy_bytes.inc(size)
        self._video_copy_seconds.observe(seconds)

    def video_served(self, size: int) -> None:
        self._video_served_bytes.inc(size)

    def video_deletion(self, outcome: DeletionOutcome) -> None:
        self._video_deletions.labels(_pick(outcome, DELETION_OUTCOMES)).inc()

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format (:data:`CONTENT_TYPE`); in multiprocess
        mode, merged from the files of every worker (a fresh registry per scrape, as the
        collector reads the directory when collected)."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(self._multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(merged)
