"""Routes whose adapters are :class:`~providers.fake.FakeProvider`\\ s: settings for accounts
``a``, ``b`` and ``c`` (cheapest first) and the routes that put a fake behind each, plugged in
as ``gateway.app.build_routes`` plugs in the real adapters."""

from __future__ import annotations

from typing import Any

from gateway.config import Settings, settings_from_mapping
from gateway.router import Route
from gateway.strategies import Candidate
from providers.base import VideoJob
from providers.fake import FakeProvider

NAMES = ("a", "b", "c")
PRICES_USD = {"a": 0.20, "b": 0.30, "c": 0.40}
JOB = VideoJob(prompt="a lighthouse in the fog")


def fake_settings(**sections: Any) -> Settings:
    """Three enabled accounts (any real kind does: the config validates kinds, and the fake
    stands in for the adapter), overlaid with ``sections`` (``routing={...}``)."""
    providers = {
        name: {
            "kind": "minimax",
            "base_url": f"http://{name}.fake",
            "api_key_env": "FAKE_PROVIDER_KEY",
            "prices_usd": {"hailuo-2.3": {"standard": {"6s_768P": price}}},
        }
        for name, price in PRICES_USD.items()
    }
    return settings_from_mapping({"providers": providers, **sections}, {})


def fake_routes(settings: Settings) -> tuple[list[Route], dict[str, FakeProvider]]:
    """A route per configured account, each with its own fake adapter (returned by name)."""
    fakes = {name: FakeProvider(name) for name in settings.providers}
    routes = [
        Route(name, cfg, adapter=fakes[name], file_order=order)
        for order, (name, cfg) in enumerate(settings.providers.items())
    ]
    return routes, fakes


def candidates(*names: str) -> list[Candidate]:
    """The candidates ``Router.plan`` would hand ``submit``, in the order given."""
    return [
        Candidate(name=n, price_usd=PRICES_USD[n], priority=1, weight=1.0, file_order=i)
        for i, n in enumerate(names)
    ]
