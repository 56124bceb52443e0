"""``GET /v1/providers``: the configured providers with their health and prices."""

from __future__ import annotations

from gateway.balance import Balances
from gateway.config import Settings
from gateway.health import Circuit, Health
from gateway.schemas import LatencyMs, ProviderInfo, ProviderList


class ProviderCatalogue:
    def __init__(self, settings: Settings, health: Health, balances: Balances) -> None:
        self._settings = settings
        self._health = health
        self._balances = balances

    async def list(self) -> ProviderList:
        snapshot = await self._health.snapshot(fresh=True)
        now = self._health.now()
        data = []
        for name, cfg in self._settings.providers.items():
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
                    prices_usd={tier: dict(prices) for tier, prices in cfg.prices_usd.items()},
                    balance_usd=self._balances.balance_usd(name),
                )
            )
        return ProviderList(data=data)
