"""``GET /v1/usage``: a client's own spend, reservations and budget in the current UTC period,
read from the counters :mod:`gateway.budgets` keeps (integer micro-dollars, so exact)."""

from __future__ import annotations

from gateway.budgets import Budgets, PeriodKind, period_of, to_usd
from gateway.schemas import ProviderUsage, Usage


async def usage(budgets: Budgets, client: str, kind: PeriodKind) -> Usage:
    period = period_of(kind, budgets.now())
    counters = await budgets.counters(client, period)
    return Usage(
        client=client,
        period=kind,
        start=period.start,
        end=period.end,
        spent_usd=to_usd(counters.spent),
        reserved_usd=to_usd(max(counters.reserved, 0)),
        budget_usd=budgets.budget_usd(client, kind),
        tasks=counters.tasks,
        by_provider={
            name: ProviderUsage(spent_usd=to_usd(spent), tasks=tasks)
            for name, (spent, tasks) in sorted(counters.by_provider.items())
        },
        saving_usd=to_usd(max(counters.spent_max - counters.spent, 0)),
    )
