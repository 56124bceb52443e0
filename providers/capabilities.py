"""What each reseller kind offers, without importing its adapter.

The config validates ``providers.<name>.kind``, ``models``, ``text_to_video`` and the price
tables against these at start-up, in every process that reads the config, including the parent
of ``serve --workers N``, which never talks to a reseller. Keeping the facts here spares that
process the adapters' HTTP stack (httpx, aiohttp: about 35 MB). Each adapter class takes its
class attributes from its entry; ``tests/unit/test_registry.py`` holds the two together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["image_to_video", "text_to_video"]

HAILUO = "hailuo-2.3"
HAILUO_FAST = "hailuo-2.3-fast"
MODELS: tuple[str, ...] = (HAILUO, HAILUO_FAST)
"""Every canonical model name a request may ask for (api.md §2 ``model``)."""
IMAGE_ONLY_MODELS: frozenset[str] = frozenset({HAILUO_FAST})
"""Models that only animate a first frame: a request without ``image`` is invalid for them."""


@dataclass(frozen=True)
class Capabilities:
    kind: str
    models: tuple[str, ...]
    text_to_video: bool
    """Whether it renders from a prompt alone (for the models not in IMAGE_ONLY_MODELS)."""
    data_uri_images: bool
    """Whether its image field takes ``data:`` URIs (else URLs only)."""
    balance_api: bool = False
    """Whether the account balance can be read (the adapter then implements ``balance()``)."""

    def modes(self, model: str, *, text_to_video: bool | None = None) -> tuple[Mode, ...]:
        """The modes it renders ``model`` in; ``text_to_video`` overrides the kind's default."""
        text = self.text_to_video if text_to_video is None else text_to_video
        if text and model not in IMAGE_ONLY_MODELS:
            return ("image_to_video", "text_to_video")
        return ("image_to_video",)


RUNAPI = Capabilities(
    "runapi", (HAILUO,), text_to_video=False, data_uri_images=False, balance_api=True
)
APIINONE = Capabilities("apiinone", (HAILUO,), text_to_video=False, data_uri_images=False)
MINIMAX = Capabilities("minimax", MODELS, text_to_video=True, data_uri_images=True)
FAL = Capabilities("fal", MODELS, text_to_video=True, data_uri_images=True)

KINDS: dict[str, Capabilities] = {c.kind: c for c in (RUNAPI, APIINONE, MINIMAX, FAL)}
