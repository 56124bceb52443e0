"""providers.registry: kinds onto adapter classes."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from providers.apiinone import APIInOneProvider
from providers.base import Provider, ProviderSettings
from providers.registry import PROVIDER_KINDS, build_provider
from providers.runapi import RunAPIProvider


def settings() -> ProviderSettings:
    return ProviderSettings(name="acct", base_url="https://up.test", api_key=SecretStr("k"))


@pytest.mark.parametrize(
    ("kind", "cls"), [("runapi", RunAPIProvider), ("apiinone", APIInOneProvider)]
)
async def test_build_provider_returns_the_adapter_registered_for_its_kind(
    kind: str, cls: type[Provider]
) -> None:
    provider = build_provider(kind, settings())

    assert type(provider) is cls
    assert isinstance(provider, Provider)
    assert provider.name == "acct"
    await provider.aclose()


def test_every_registered_class_declares_its_own_kind() -> None:
    assert {kind: cls.kind for kind, cls in PROVIDER_KINDS.items()} == {
        "runapi": "runapi",
        "apiinone": "apiinone",
    }


def test_build_provider_rejects_an_unknown_kind_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"'fal'.*apiinone, runapi"):
        build_provider("fal", settings())
