"""Settings that change without a restart (``SIGHUP``, ``gateway reload``).

:class:`LiveSettings` holds the settings in force; the router, the rate limiter and the
provider catalogue read it on every request, so a reload reaches them at once. A reload reads
the file again (:class:`Reloader`); a file that does not load or validate changes nothing (the
running settings stay, and the log says why). Of a valid file, the keys in :data:`LIVE_KEYS`
take effect; every other changed key (listen address, Redis URL, workers, timeouts, client
keys…) keeps its running value until a restart, and the log names each one. A provider disabled
at start can be enabled when it has an adapter (its API key variable was set at start); one
without stays disabled, and the log says which variable was missing.
"""

from __future__ import annotations

import fnmatch
import logging
import signal
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError

from gateway.config import ConfigError, Settings

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
    "auth.keys.*.rate_per_minute",
    "auth.keys.*.budget_usd",
    "auth.keys.*.budget_usd.*",
)
"""Dotted keys (``*``: a provider name, a client's index, a price key) a reload applies."""

_ABSENT: Final = object()
Tree = dict[str, Any]


class LiveSettings:
    """The settings in force. ``adapters``: the providers that have an adapter (built at start
    for each provider with an API key; default: those enabled); enabling any other one needs a
    restart."""

    def __init__(self, settings: Settings, *, adapters: Iterable[str] | None = None) -> None:
        self._settings = settings
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

    def apply(self, new: Settings) -> tuple[list[str], list[str]]:
        """Take ``new``'s live keys; returns (keys applied, changed keys left for a restart)."""
        old_tree, new_tree = _dump(self._settings), _dump(new)
        applied, fixed = [], []
        for path in _changed(old_tree, new_tree):
            if self._is_live(path, new):
                applied.append(path)
            else:
                fixed.append(path)
                _put(new_tree, path, _get(old_tree, path))
        if applied:
            try:
                self._settings = Settings.model_validate(new_tree)
            except ValidationError as exc:  # live keys mixed with kept ones: refuse them all
                raise ConfigError(f"the reloaded settings do not fit together: {exc}") from exc
        return applied, fixed

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


class Reloader:
    """Re-reads the settings with ``read`` (the same file and overrides as at start) and applies
    them to ``live``. Never raises: a refused reload is logged and counted."""

    def __init__(
        self, live: LiveSettings, read: Callable[[], Settings], *, metrics: Metrics
    ) -> None:
        self._live = live
        self._read = read
        self._metrics = metrics

    def reload(self) -> bool:
        try:
            applied, fixed = self._live.apply(self._read())
        except ConfigError as exc:
            return self._refuse(str(exc))
        self._metrics.config_reload("applied")
        self._metrics.follow_clients(key.name for key in self._live.settings.auth.keys)
        logger.warning(
            "config reloaded",
            extra={"applied": applied, "needs_restart": fixed},
        )
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
