"""Settings that change without a restart (``SIGHUP``, ``gateway reload``).

:class:`LiveSettings` holds the settings in force; the router, the rate limiter and the
provider catalogue read it on every request, so a reload reaches them at once. A reload reads
the file again (:class:`Reloader`); a file that does not load or validate changes nothing (the
running settings stay, and the log says why). Of a valid file, the keys in :data:`LIVE_KEYS`
take effect; every other changed key (listen address, Redis URL, workers, timeouts…) keeps its
running value until a restart, and the log names each one. A provider disabled at start can be
enabled when it has an adapter (its API key variable was set at start); one without stays
disabled, and the log says which variable was missing.

The client list (``auth.keys``) changes live too: a client added, removed, renamed or pointed at
another ``key_env`` takes effect at once (:meth:`LiveSettings.client_keys`, which the
:class:`~gateway.auth.Authorizer` reads on every request), its key read from the environment
the process started with (:func:`gateway.config.resolve_client_keys`). A client list that cannot
be read that way (a variable not set, two clients sharing one key, no client left) keeps the
running client list and keys, and the log names the key path and variable; the rest of the
reload applies.
"""

from __future__ import annotations

import fnmatch
import logging
import signal
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from pydantic import SecretStr, ValidationError

from gateway.client_keys import ClientKeys
from gateway.config import ConfigError, Settings, resolve_client_keys

if TYPE_CHECKING:  # not imported at run time: the parent of workers stays without metrics
    from gateway.metrics import Metrics

logger = logging.getLogger(__name__)

_early_hangup = False
"""A ``SIGHUP`` came before the app's own handler was in place (:func:`hold_early_hangups`)."""

LIVE_KEYS: Final = (
    "routing.strategy",
    "routing.max_attempts",
    "routing.failover_on_timeout",
    "providers.*.enabled",
    "providers.*.priority",
    "providers.*.weight",
    "providers.*.prices_usd",
    "providers.*.prices_usd.*",
    "providers.*.balance.min_usd",
    "providers.*.balance.refresh_s",
    "auth.keys",
    "auth.keys.*.name",
    "auth.keys.*.key_env",
    "auth.keys.*.rate_per_minute",
    "auth.keys.*.budget_usd",
    "auth.keys.*.budget_usd.*",
)
"""Dotted keys (``*``: a provider name, a client's index, a price key) a reload applies."""

CLIENT_LIST_KEYS: Final = ("auth.keys", "auth.keys.*.name", "auth.keys.*.key_env")
"""Changed, they change who may call: the client keys are read again (``auth.keys``: clients
added or removed)."""

_ABSENT: Final = object()
Tree = dict[str, Any]


class Applied(NamedTuple):
    """What :meth:`LiveSettings.apply` did with a reloaded file."""

    applied: list[str]
    """Changed keys now in force."""
    fixed: list[str]
    """Changed keys that keep their running values (a restart, or a fix, is needed)."""
    clients_kept: str | None
    """Why the changed client list could not be read, so the running one stays (its changed
    keys are in ``fixed``); None when it was applied or did not change."""


class ReloadSource(NamedTuple):
    """What a reload reads: the settings (the same file and overrides as at start) and the
    environment the process started with, where the key variables of a changed client list are
    looked up."""

    read: Callable[[], Settings]
    environ: Mapping[str, str]


class LiveSettings:
    """The settings in force, and the client keys in force. ``adapters``: the providers that
    have an adapter (built at start for each provider with an API key; default: those enabled);
    enabling any other one needs a restart. ``client_keys``: the keys read at start
    (``Secrets.client_keys``; default: none, no client is let in)."""

    def __init__(
        self,
        settings: Settings,
        *,
        adapters: Iterable[str] | None = None,
        client_keys: Mapping[str, SecretStr] | None = None,
    ) -> None:
        self._settings = settings
        self._client_keys = ClientKeys(client_keys or {})
        self.adapters = frozenset(
            adapters if adapters is not None
            else (name for name, p in settings.providers.items() if p.enabled)
        )  # fmt: skip

    @property
    def settings(self) -> Settings:
        return self._settings

    def enabled(self) -> list[str]:
        """The providers that can serve now: enabled in the settings in force, with an adapter."""
        return [n for n, p in self._settings.providers.items() if p.enabled and n in self.adapters]

    def rate_limits(self) -> Mapping[str, int | None]:
        return {key.name: key.rate_per_minute for key in self._settings.auth.keys}

    def client_keys(self) -> ClientKeys:
        """The client keys in force: those of ``settings.auth.keys``. A reload replaces them
        together with the settings, in one step."""
        return self._client_keys

    def apply(self, new: Settings, environ: Mapping[str, str]) -> Applied:
        """Take ``new``'s live keys. ``environ``: the environment the process started with,
        where the keys of a changed client list are read."""
        old_tree, new_tree = _dump(self._settings), _dump(new)
        changed = list(_changed(old_tree, new_tree))
        keys, clients_kept = _new_client_keys(new, environ, changed)
        applied, fixed = [], []
        for path in changed:
            if self._is_live(path, new) and not (clients_kept and is_client_key(path)):
                applied.append(path)
            else:
                fixed.append(path)
                _put(new_tree, path, _get(old_tree, path))
        if applied:
            try:
                settings = Settings.model_validate(new_tree)
            except ValidationError as exc:  # live keys mixed with kept ones: refuse them all
                raise ConfigError(f"the reloaded settings do not fit together: {exc}") from exc
            self._settings = settings
            if keys is not None:  # with the settings naming the same clients, in one step
                self._client_keys = keys
        return Applied(applied, fixed, clients_kept)

    def _is_live(self, path: str, new: Settings) -> bool:
        if not any(fnmatch.fnmatchcase(path, pattern) for pattern in LIVE_KEYS):
            return False
        parts = path.split(".")
        if parts[0] == "providers" and parts[2] == "enabled":
            return parts[1] in self.adapters or not new.providers[parts[1]].enabled
        return True

    def missing_keys(self, fixed: Iterable[str]) -> dict[str, str]:
        """Of the changed keys a reload left for a restart, the providers it could not enable
        (no adapter: no API key at start) → the variable that was not set."""
        names = [p.split(".")[1] for p in fixed if fnmatch.fnmatchcase(p, "providers.*.enabled")]
        return {name: self._settings.providers[name].api_key_env for name in names}


def is_client_key(path: str) -> bool:
    """Whether a changed key is in the client list (``auth.keys``)."""
    return path == "auth.keys" or path.startswith("auth.keys.")


def _new_client_keys(
    new: Settings, environ: Mapping[str, str], changed: Iterable[str]
) -> tuple[ClientKeys | None, str | None]:
    """The keys of ``new``'s client list when it changed (None: unchanged, keep the running
    ones), or why they cannot be read (the message names key paths and variables, no key)."""
    if not any(fnmatch.fnmatchcase(p, pattern) for p in changed for pattern in CLIENT_LIST_KEYS):
        return None, None
    try:
        return ClientKeys(resolve_client_keys(new, environ)), None
    except ConfigError as exc:
        return None, str(exc)


def _log_kept_clients(kept: list[str], why: str) -> None:
    """A changed client list that could not be read: ``why`` names key paths and variables
    (never a key)."""
    logger.warning(
        f"the client list (auth.keys) keeps its running value, and so do its changed keys "
        f"({', '.join(kept)}): {why}\nFix the file and reload; a variable not set when the "
        "gateway started is read only by a restart with it set",
        extra={"clients_kept": kept, "error": why},
    )


class Reloader:
    """Re-reads the settings from ``source`` and applies them to ``live``. Never raises: a
    refused reload is logged and counted."""

    def __init__(self, live: LiveSettings, source: ReloadSource, *, metrics: Metrics) -> None:
        self._live = live
        self._source = source
        self._metrics = metrics

    def reload(self) -> bool:
        try:
            applied, fixed, clients_kept = self._live.apply(
                self._source.read(), self._source.environ
            )
        except ConfigError as exc:
            return self._refuse(str(exc))
        self._metrics.config_reload("applied")
        self._metrics.follow_clients(key.name for key in self._live.settings.auth.keys)
        kept = [path for path in fixed if is_client_key(path)]
        fixed = [path for path in fixed if not is_client_key(path)]
        logger.warning(
            "config reloaded",
            extra={"applied": applied, "needs_restart": fixed, "clients_kept": kept},
        )
        if clients_kept:
            _log_kept_clients(kept, clients_kept)
        for provider, variable in self._live.missing_keys(fixed).items():
            logger.warning(
                f"provider {provider} stays disabled: its API key variable {variable} was not "
                "set when the gateway started, so it has no client; set it and restart",
                extra={"provider": provider, "variable": variable},
            )
        if fixed:
            logger.warning(
                "changed keys that cannot change live keep their running values until a "
                "restart: " + ", ".join(fixed),
                extra={"needs_restart": fixed},
            )
        return True

    def _refuse(self, why: str) -> bool:
        self._metrics.config_reload("refused")
        logger.error(
            "config reload refused; the running config stays: " + why, extra={"error": why}
        )
        return False


def _dump(settings: Settings) -> Tree:
    tree: Tree = settings.model_dump(mode="json")
    return tree


def _changed(old: Any, new: Any, prefix: str = "") -> Iterator[str]:
    """The dotted paths where ``old`` and ``new`` differ: mappings key by key, lists of the
    same length item by item; anything else (or lists of different lengths) as one value."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
            if a != b:
                yield from _changed(a, b, f"{prefix}{key}.")
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            if a != b:
                yield from _changed(a, b, f"{prefix}{index}.")
    elif old != new:
        yield prefix.rstrip(".")


def _get(tree: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(tree, list):
            tree = tree[int(part)]
        elif isinstance(tree, dict) and part in tree:
            tree = tree[part]
        else:
            return _ABSENT
    return tree


def _put(tree: Any, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        tree = tree[int(part)] if isinstance(tree, list) else tree[part]
    if isinstance(tree, list):
        tree[int(last)] = value
    elif value is _ABSENT:
        del tree[last]
    else:
        tree[last] = value


def hold_early_hangups() -> None:
    """Called first in a serving process: until the app installs its ``SIGHUP`` handler (in
    its start-up), a ``SIGHUP``'s default action would kill the process (a worker still
    starting, when the parent forwards a reload). Note it instead: the app applies it once its
    handler is in place (:func:`take_early_hangup`)."""

    def note(signum: int, frame: object) -> None:
        global _early_hangup
        _early_hangup = True

    signal.signal(signal.SIGHUP, note)


def take_early_hangup() -> bool:
    """Whether a ``SIGHUP`` came before the app's handler (and forget it)."""
    global _early_hangup
    noted, _early_hangup = _early_hangup, False
    return noted
