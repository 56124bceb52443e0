"""Adapter classes by ``kind``, the word an account's config names its reseller with."""

from __future__ import annotations

from typing import Protocol

import httpx

from providers.apiinone import APIInOneProvider
from providers.base import Provider, ProviderSettings
from providers.fal import FalProvider
from providers.minimax import MiniMaxProvider
from providers.runapi import RunAPIProvider


class ProviderClass(Protocol):
    """An adapter class: what it offers, and how to build one account of it."""

    @property
    def kind(self) -> str: ...

    @property
    def models(self) -> tuple[str, ...]: ...

    @property
    def text_to_video(self) -> bool: ...

    @property
    def data_uri_images(self) -> bool: ...

    def __call__(
        self, settings: ProviderSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> Provider: ...


PROVIDER_KINDS: dict[str, ProviderClass] = {
    RunAPIProvider.kind: RunAPIProvider,
    APIInOneProvider.kind: APIInOneProvider,
    MiniMaxProvider.kind: MiniMaxProvider,
    FalProvider.kind: FalProvider,
}


def build_provider(
    kind: str, settings: ProviderSettings, transport: httpx.AsyncBaseTransport | None = None
) -> Provider:
    """A ready adapter for one account. Raises ValueError for a kind no adapter handles."""
    try:
        cls = PROVIDER_KINDS[kind]
    except KeyError:
        known = ", ".join(sorted(PROVIDER_KINDS))
        raise ValueError(
            f"unknown provider kind {kind!r} for account {settings.name!r} (known: {known})"
        ) from None
    return cls(settings, transport=transport)
