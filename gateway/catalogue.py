"""``GET /v1/providers``: the configured providers with their health and prices."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.balance import Balances
from gateway.health import Circuit, Health
from gateway.live import LiveSettings
from gateway.schemas import LatencyMs, ProviderInfo, ProviderList
from providers.base import Tier
from providers.capabilities import HAILUO


class ProviderCatalogue:
    def __init__(self, live: LiveSettings, health: Health, balances: Balances) -> None:
        self._live = live
        self._health = health
        self._balances = balances

    async def list(self) -> ProviderList:
        snapshot = await self._health.snapshot(fresh=True)
        now = self._health.now()
        data = []
        for name, cfg in self._live.settings.providers.items():
            health = snapshot.get(name)
            data.append(
                ProviderInfo(
                    name=name,
                    kind=cfg.kind,
                    enabled=cfg.enabled,
                    circuit=health.circuit(now) if health else Circuit.CLOSED,
                    success_rate=health.success_rate if health else None,
                    latency_ms=LatencyMs(
                        p50=health.latency_p50_ms if health else None,
                        p99=health.latency_p99_ms if health else None,
                    ),
                    models=list(cfg.served_models),
                    modes={m: list(cfg.modes(m)) for m in cfg.served_models},
                    image_forms=["url", "data_uri"] if cfg.takes_data_uri_images else ["url"],
                    prices_usd=_tables(cfg.prices_usd.get(HAILUO, {})),
                    prices_by_model_usd={
                        model: _tables(tiers) for model, tiers in cfg.prices_usd.items()
                    },
                    balance_usd=self._balances.balance_usd(name),
                )
            )
        return ProviderList(data=data)


def _tables(tiers: Mapping[Tier, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    return {tier: dict(prices) for tier, prices in tiers.items()}
