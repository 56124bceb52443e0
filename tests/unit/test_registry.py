"""providers.registry: kinds onto adapter classes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import SecretStr

from providers.apiinone import APIInOneProvider
from providers.base import Provider, ProviderSettings
from providers.capabilities import KINDS
from providers.fal import FalProvider
from providers.minimax import MiniMaxProvider
from providers.registry import PROVIDER_KINDS, build_provider
from providers.runapi import RunAPIProvider


def settings() -> ProviderSettings:
    return ProviderSettings(name="acct", base_url="https://up.test", api_key=SecretStr("k"))


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("runapi", RunAPIProvider),
        ("apiinone", APIInOneProvider),
        ("minimax", MiniMaxProvider),
        ("fal", FalProvider),
    ],
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
        "minimax": "minimax",
        "fal": "fal",
    }


def test_every_adapter_class_offers_what_its_kind_declares() -> None:
    assert set(PROVIDER_KINDS) == set(KINDS)
    for kind, cls in PROVIDER_KINDS.items():
        declared = KINDS[kind]
        assert (cls.kind, cls.models, cls.text_to_video, cls.data_uri_images) == (
            declared.kind, declared.models, declared.text_to_video, declared.data_uri_images,
        )  # fmt: skip
        # A kind declares a balance API exactly when its adapter can read the balance.
        assert callable(getattr(cls, "balance", None)) == declared.balance_api, kind


def test_reading_the_config_does_not_import_the_adapters_http_stack() -> None:
    code = (
        "import sys, gateway.config, gateway.workers; "
        "print(sorted(m for m in ('aiohttp', 'httpx', 'providers.http', 'litestar') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_build_provider_rejects_an_unknown_kind_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"'replicate'.*apiinone, fal, minimax, runapi"):
        build_provider("replicate", settings())
