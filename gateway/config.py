"""Typed settings: ``config.yaml`` overlaid with ``GATEWAY_<SECTION>__<FIELD>`` environment values.

Settings are built once (by the CLI or a test) and passed in; nothing else reads the
environment. Secrets never live in the file: the file names the environment variables that hold
them (``*_env`` keys), and :func:`resolve_secrets` reads them (the client keys through
:func:`resolve_client_keys`, which a reload that changes the client list calls again).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings.sources import PydanticBaseSettingsSource

from gateway import redis_urls
from providers.base import Tier
from providers.capabilities import HAILUO, KINDS, Mode

StrategyName = Literal["cheapest", "healthiest", "priority", "weighted"]
PRICE_KEYS = ("6s_768P", "10s_768P", "6s_1080P")
"""The combinations any reseller offers; 10 s at 1080P exists nowhere."""

EnvVarName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class ConfigError(Exception):
    """The configuration cannot be used; the message names the offending key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str | None = None
    max_body_bytes: int = Field(12 * 1024 * 1024, ge=1024)
    workers: int = Field(1, ge=1, le=64)
    """Worker processes sharing the listening socket (``gateway.workers``). 1: the app runs in
    the ``gateway serve`` process itself."""
    drain_s: float = Field(3.0, ge=0, le=300)
    """On SIGTERM: seconds of ``/readyz`` answering 503 while every request is still served, so
    a load balancer takes the instance out; then the listening socket closes and requests in
    flight finish (``gateway.drain``)."""


class RedisSettings(_Section):
    url: str | None = None
    """None starts an embedded ``redis-server`` with its data in ``data_dir``; else
    ``redis://``, ``rediss://``, ``redis+sentinel://`` or ``redis+cluster://``
    (:mod:`gateway.redis_urls`)."""
    data_dir: Path = Path(".gateway")
    accept_retry_s: float = Field(20.0, gt=0, le=25)
    """How long a create retries recording a task an upstream accepted, during a Redis outage,
    before answering ``504`` with the task's id (the write goes on in the background). At most
    25 s: the poller takes a create for interrupted 30 s after the longest one could take."""

    @field_validator("url")
    @classmethod
    def _known_topology(cls, url: str | None) -> str | None:
        if url is not None:
            redis_urls.parse(url)  # its ValueError names what is wrong
        return url


class BudgetSettings(_Section):
    """A client's spend budgets per UTC period, in US dollars; an absent period is unlimited."""

    day: float | None = Field(None, gt=0)
    month: float | None = Field(None, gt=0)


class ClientKeySettings(_Section):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    key_env: EnvVarName
    rate_per_minute: int | None = Field(None, ge=1)
    budget_usd: BudgetSettings | None = None
    """Absent: no budget (spend is still counted, see ``GET /v1/usage``)."""


class AuthSettings(_Section):
    keys: list[ClientKeySettings] = Field(default_factory=list)

    @field_validator("keys")
    @classmethod
    def _names_unique(cls, keys: list[ClientKeySettings]) -> list[ClientKeySettings]:
        names = [k.name for k in keys]
        if len(set(names)) != len(names):
            raise ValueError("client key names must be unique")
        return keys


class CircuitSettings(_Section):
    failures_to_open: int = Field(5, ge=1)
    cooldown_s: float = Field(30.0, gt=0)
    account_cooldown_s: float = Field(300.0, gt=0)
    """How long a 401/402/403 (our key or credits) keeps a provider out: an operator must act."""


class RoutingSettings(_Section):
    strategy: StrategyName = "cheapest"
    max_attempts: int = Field(3, ge=1, le=10)
    failover_on_timeout: bool = False
    circuit: CircuitSettings = CircuitSettings()


class StatusSettings(_Section):
    poll_interval_s: float = Field(2.0, ge=1.0)
    task_ttl_days: float = Field(7.0, gt=0)
    deadline_s: float = Field(1800.0, gt=0)
    background_polling: bool = True
    """Refresh non-final tasks without waiting for a client to ask (needed for webhooks)."""
    expected_render_s: float = Field(90.0, gt=0)
    """About how long a generation takes: background polls thin out until then, then back off."""
    max_poll_interval_s: float = Field(30.0, ge=1.0)
    poll_concurrency: int = Field(16, ge=1)
    """Background status calls in flight per provider, per instance."""
    resubmit_failed: int = Field(1, ge=0, le=3)
    """Resubmissions of a generation that failed for a reason other than content, to the next
    eligible provider, under the same public id (resellers do not bill failed generations)."""


class WebhookSettings(_Section):
    secret_env: EnvVarName | None = "GATEWAY_WEBHOOK_SECRET"  # noqa: S105 - a variable name
    timeout_s: float = Field(10.0, gt=0)
    max_attempts: int = Field(8, ge=1, le=20)
    retry_delays_s: list[float] = Field(
        default_factory=lambda: [5.0, 20.0, 60.0, 180.0, 600.0, 1200.0, 1800.0], min_length=1
    )
    """Waits before the 2nd, 3rd, … try (the last repeats): 8 tries over about 64 minutes."""
    allow_hosts: list[str] = Field(default_factory=list)
    """Host names a ``webhook_url`` may name although they resolve to a loopback, private or
    otherwise internal address (api.md §3 "Webhooks"); compared case-insensitively."""


class StorageSettings(_Section):
    """Where finished videos are kept (api.md §3 "Stored videos"; README "Stored videos")."""

    enabled: bool = True
    """False: ``video_url`` is the reseller's link and nothing is copied."""
    url: str | None = Field(None, pattern=r"^(file|s3|s3a|gs|az|azure|abfs|abfss)://")
    """None: files under ``<redis.data_dir>/videos``. ``file:///path``, ``s3://bucket/prefix``,
    ``gs://bucket/prefix``, ``az://container/prefix``."""
    endpoint_url: str | None = Field(None, pattern=r"^https?://")
    """An S3-compatible endpoint (SeaweedFS, MinIO, R2…)."""
    region: str | None = None
    access_key_id_env: EnvVarName | None = None
    secret_access_key_env: EnvVarName | None = None
    max_bytes: int = Field(200 * 1024 * 1024, ge=1024)
    copy_deadline_s: float = Field(600.0, gt=0)
    retention_days: float = Field(7.0, gt=0)
    redirect: bool = False
    """``/content`` answers 302 to a short-lived signed URL where the store signs."""
    allow_private_sources: bool = False
    """True only for simulated resellers on loopback or private addresses."""
    copy_concurrency: int = Field(4, ge=1, le=64)
    """Copies one instance runs at once (each holds about two 5 MiB upload parts)."""
    copy_lease_s: float = Field(30.0, ge=1.0)
    """How long a copy stays claimed by an instance that stopped extending it (it died)."""


class IdempotencySettings(_Section):
    ttl_s: int = Field(86400, ge=60)
    """How long an ``Idempotency-Key`` is remembered (default 24 h)."""


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


PriceCells = dict[str, float]
"""``"<duration>s_<resolution>"`` → USD."""
PriceTable = dict[str, dict[Tier, PriceCells]]
"""model → tier → combination → USD: the form every price table is read into."""
TIERS: tuple[Tier, ...] = ("standard", "pro")


def _by_model(table: Any) -> Any:
    """A tier-first table (``{standard: {...}, pro: {...}}``) prices ``hailuo-2.3``: read it as
    ``{hailuo-2.3: {...}}``. A model-first table passes as it is; one that mixes tiers and
    models is refused."""
    if not isinstance(table, dict) or not table:
        return table
    tiers = [key for key in table if key in TIERS]
    if not tiers:
        return table
    if len(tiers) != len(table):
        raise ValueError("key the table by tier (it then prices hailuo-2.3) or by model, not both")
    return {HAILUO: table}


class BalanceSettings(_Section):
    """Balance-aware routing for a provider whose kind has a balance API."""

    refresh_s: float = Field(60.0, ge=1.0)
    """The account balance is read at most this often, across all instances."""
    min_usd: float = Field(0.0, ge=0)
    """Below this known balance the provider is not eligible."""


class ProviderConfig(_Section):
    kind: str
    base_url: str = Field(pattern=r"^https?://")
    api_key_env: EnvVarName
    enabled: bool = True
    priority: int = 1
    weight: float = Field(1.0, ge=0)
    connect_timeout_s: float = Field(3.0, gt=0)
    timeout_s: float = Field(30.0, gt=0)
    models: list[str] | None = None
    """Default: what the kind serves."""
    text_to_video: bool | None = None
    """Default: what the kind serves."""
    prices_usd: Annotated[PriceTable, BeforeValidator(_by_model)] = Field(default_factory=dict)
    """Keyed by model first; a tier-first table in the file prices ``hailuo-2.3``."""
    balance: BalanceSettings | None = None
    """Only for kinds with a balance API (``runapi``); absent: the balance is not watched."""

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; known: {', '.join(sorted(KINDS))}")
        return kind

    @field_validator("prices_usd")
    @classmethod
    def _valid_prices(cls, table: PriceTable) -> PriceTable:
        for model, tiers in table.items():
            for tier, prices in tiers.items():
                for key, price in prices.items():
                    where = f"{model}.{tier}.{key}"
                    if key not in PRICE_KEYS:
                        raise ValueError(f"{where}: not a combination; use one of {PRICE_KEYS}")
                    if price <= 0:
                        raise ValueError(f"{where}: a price must be positive")
        return table

    @model_validator(mode="after")
    def _capabilities_within_kind(self) -> ProviderConfig:
        kind = KINDS[self.kind]
        if self.text_to_video and not kind.text_to_video:
            raise ValueError(f"text_to_video: kind {self.kind!r} does not serve text-to-video")
        unknown = set(self.models or ()) - set(kind.models)
        if unknown:
            raise ValueError(f"models: kind {self.kind!r} does not serve {sorted(unknown)}")
        unpriceable = set(self.prices_usd) - set(kind.models)
        if unpriceable:
            raise ValueError(
                f"prices_usd: kind {self.kind!r} does not serve {sorted(unpriceable)} "
                f"(it serves {list(kind.models)})"
            )
        if self.balance is not None and not kind.balance_api:
            raise ValueError(f"balance: kind {self.kind!r} has no balance API")
        return self

    @property
    def served_models(self) -> tuple[str, ...]:
        """The models it may be sent: configured (default: the kind's) and priced."""
        models = tuple(self.models) if self.models is not None else KINDS[self.kind].models
        return tuple(m for m in models if self.prices_usd.get(m))

    @property
    def takes_data_uri_images(self) -> bool:
        return KINDS[self.kind].data_uri_images

    @property
    def serves_text_to_video(self) -> bool:
        if self.text_to_video is not None:
            return self.text_to_video
        return KINDS[self.kind].text_to_video

    def modes(self, model: str) -> tuple[Mode, ...]:
        """The modes it renders ``model`` in (Fast is image-to-video only, everywhere)."""
        return KINDS[self.kind].modes(model, text_to_video=self.serves_text_to_video)

    def price(self, model: str, tier: Tier, price_key: str) -> float | None:
        """The price of one combination, or None when this provider does not serve it."""
        return self.prices_usd.get(model, {}).get(tier, {}).get(price_key)


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    server: ServerSettings = ServerSettings()
    redis: RedisSettings = RedisSettings()
    auth: AuthSettings = AuthSettings()
    routing: RoutingSettings = RoutingSettings()
    status: StatusSettings = StatusSettings()
    webhooks: WebhookSettings = WebhookSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    storage: StorageSettings = StorageSettings()
    log: LogSettings = LogSettings()
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)

    @field_validator("providers")
    @classmethod
    def _provider_names(cls, providers: dict[str, ProviderConfig]) -> dict[str, ProviderConfig]:
        for name in providers:
            if not name.replace("_", "").replace("-", "").isalnum() or name != name.lower():
                raise ValueError(f"{name!r}: provider names are lower-case letters, digits, _ or -")
        return providers


class _MappingEnvSource(EnvSettingsSource):
    """The environment source, reading a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        # The documented prefix is upper case; match case-insensitively like the default source.
        self.env_vars = {k.lower(): v for k, v in environ.items()}


def load_settings(path: Path | None, environ: Mapping[str, str]) -> Settings:
    """Read ``path`` (YAML; None means defaults only), overlay ``GATEWAY_*`` values from
    ``environ``, and validate. Raises :class:`ConfigError` naming the key on any problem."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        data = loaded or {}
    return settings_from_mapping(data, environ, source=str(path) if path else None)


def settings_from_mapping(
    data: Mapping[str, Any], environ: Mapping[str, str], *, source: str | None = None
) -> Settings:
    """Validate already-parsed configuration ``data`` overlaid with ``GATEWAY_*`` values."""

    class _Loader(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            # Earlier sources win: the environment overrides the file.
            return (_MappingEnvSource(settings_cls, environ), init_settings)

    try:
        return _Loader(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from exc


def override_server(settings: Settings, **values: str | int | None) -> Settings:
    """``settings`` with the ``server`` keys given (the CLI's ``--host``, ``--port``,
    ``--workers``; None leaves a key alone), validated like the file: ``model_copy`` alone
    would let ``--workers 0`` through."""
    update = {key: value for key, value in values.items() if value is not None}
    if not update:
        return settings
    try:
        server = ServerSettings.model_validate({**settings.server.model_dump(), **update})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "command line", prefix="server.")) from exc
    return settings.model_copy(update={"server": server})


def _describe(exc: ValidationError, source: str | None, *, prefix: str = "") -> str:
    where = source or "configuration"
    lines = [f"{where}: {exc.error_count()} invalid setting(s)"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  {prefix}{key}: {error['msg']}")
    return "\n".join(lines)


def _valid_webhook_secret(value: str) -> bool:
    if not value.startswith("whsec_"):
        return False
    try:
        return len(base64.b64decode(value.removeprefix("whsec_"), validate=True)) >= 16
    except binascii.Error:
        return False


class Secrets(BaseModel):
    """Secrets read from the environment. ``SecretStr`` keeps them out of reprs and logs."""

    model_config = ConfigDict(frozen=True)

    client_keys: dict[str, SecretStr]
    """client name → key"""
    provider_keys: dict[str, SecretStr]
    """provider name → upstream API key: every enabled provider, and each disabled one whose
    variable is set (those are the providers that get an adapter)"""
    webhook_secret: SecretStr | None
    storage_access_key_id: SecretStr | None = None
    storage_secret_access_key: SecretStr | None = None


def _read_secret(
    environ: Mapping[str, str], key: str, var: str, problems: list[str]
) -> SecretStr | None:
    """The secret in ``var``; an unset or blank one is a problem naming ``key`` and ``var``."""
    value = environ.get(var, "").strip()
    if not value:
        problems.append(f"  {key}: environment variable {var} is not set")
        return None
    return SecretStr(value)


def _client_keys(
    settings: Settings, environ: Mapping[str, str], problems: list[str]
) -> dict[str, SecretStr]:
    """Each client's key (client name → key); what is wrong goes to ``problems`` (key paths
    and variables, never a key)."""
    client_keys: dict[str, SecretStr] = {}
    first: dict[str, tuple[str, str]] = {}  # key → the first client holding it, its variable
    for i, client in enumerate(settings.auth.keys):
        secret = _read_secret(environ, f"auth.keys.{i}.key_env", client.key_env, problems)
        if secret is None:
            continue
        holder = first.setdefault(secret.get_secret_value(), (client.name, client.key_env))
        if holder[0] != client.name:
            problems.append(
                f"  auth.keys.{i}.key_env: clients {holder[0]!r} and {client.name!r} share one "
                f"key (variables {holder[1]} and {client.key_env})"
            )
        client_keys[client.name] = secret
    if not settings.auth.keys:
        problems.append("  auth.keys: at least one client key is needed")
    return client_keys


def resolve_client_keys(settings: Settings, environ: Mapping[str, str]) -> dict[str, SecretStr]:
    """Read the client keys ``settings.auth.keys`` name (client name → key): at start, through
    :func:`resolve_secrets`, and when a reload changes the client list (:mod:`gateway.live`).
    Raises ConfigError naming each key path and variable at fault (never a key)."""
    problems: list[str] = []
    client_keys = _client_keys(settings, environ, problems)
    if problems:
        raise ConfigError("client keys cannot be read:\n" + "\n".join(problems))
    return client_keys


def resolve_secrets(settings: Settings, environ: Mapping[str, str]) -> Secrets:
    """Read every secret the settings name. Raises ConfigError naming the key and variable."""
    problems: list[str] = []

    def read(key: str, var: str) -> SecretStr | None:
        return _read_secret(environ, key, var, problems)

    client_keys = _client_keys(settings, environ, problems)

    provider_keys: dict[str, SecretStr] = {}
    for name, provider in settings.providers.items():
        if provider.enabled:
            secret = read(f"providers.{name}.api_key_env", provider.api_key_env)
        else:  # optional: with its key, a reload can enable it (gateway.live)
            value = environ.get(provider.api_key_env, "").strip()
            secret = SecretStr(value) if value else None
        if secret is not None:
            provider_keys[name] = secret
    if not any(p.enabled for p in settings.providers.values()):
        problems.append("  providers: no provider is enabled")

    webhook_secret = None
    if settings.webhooks.secret_env:
        value = environ.get(settings.webhooks.secret_env, "").strip()
        webhook_secret = SecretStr(value) if value else None
        if value and not _valid_webhook_secret(value):
            problems.append(
                f"  webhooks.secret_env: {settings.webhooks.secret_env} must hold whsec_<base64>"
            )

    storage = settings.storage
    key_id = read("storage.access_key_id_env", storage.access_key_id_env) if (
        storage.enabled and storage.access_key_id_env) else None  # fmt: skip
    secret_key = read("storage.secret_access_key_env", storage.secret_access_key_env) if (
        storage.enabled and storage.secret_access_key_env) else None  # fmt: skip

    if problems:
        raise ConfigError("missing secrets or keys:\n" + "\n".join(problems))
    return Secrets(
        client_keys=client_keys, provider_keys=provider_keys, webhook_secret=webhook_secret,
        storage_access_key_id=key_id, storage_secret_access_key=secret_key,
    )  # fmt: skip
