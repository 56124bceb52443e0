"""What each reseller kind offers, without importing its adapter.

The config validates ``providers.<name>.kind``, ``models`` and ``text_to_video`` against these
at start-up, in every process that reads the config, including the parent of ``serve
--workers N``, which never talks to a reseller. Keeping the facts here spares that process the
adapters' HTTP stack (httpx, aiohttp: about 35 MB). Each adapter class takes its class
attributes from its entry; ``tests/unit/test_registry.py`` holds the two together.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Capabilities:
    kind: str
    models: tuple[str, ...]
    text_to_video: bool
    data_uri_images: bool
    """Whether its image field takes ``data:`` URIs (else URLs only)."""
    balance_api: bool = False
    """Whether the account balance can be read (the adapter then implements ``balance()``)."""


RUNAPI = Capabilities(
    "runapi", ("hailuo-2.3",), text_to_video=False, data_uri_images=False, balance_api=True
)
APIINONE = Capabilities("apiinone", ("hailuo-2.3",), text_to_video=False, data_uri_images=False)
FAL = Capabilities(
    "fal", ("hailuo-2.3", "hailuo-2.3-fast"), text_to_video=True, data_uri_images=True
)  # Fast is image-to-video only: the canonical request refuses Fast without an image

KINDS: dict[str, Capabilities] = {c.kind: c for c in (RUNAPI, APIINONE, FAL)}
